"""Image files to model inputs: decoded with ``torchvision.io`` (PIL for the formats it does not read), resized and
cropped on uint8 tensors by ``transforms.v2``, and normalised where the model runs, so that a batch crosses to the
GPU as uint8 (a quarter of fp32's bytes). ``read_image`` with the model's PIL transform is the decoder of 0.1.0,
kept as ``decoder="pil"``."""

from __future__ import annotations

import contextlib
import io
import os
import stat
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image, decode_jpeg, read_file
from torchvision.transforms import v2
from torchvision.transforms._presets import ImageClassification
from torchvision.transforms.v2 import functional as F

__all__ = ["DECODERS", "BatchDecoder", "Loader", "decode", "normalize", "read_bytes", "read_image", "uint8_transform"]

#: The decoders by name: ``torchvision`` (torchvision.io and v2 on uint8 tensors, on the CPU), ``pil`` (0.1.0's)
#: and ``nvjpeg`` (JPEGs decoded, resized and cropped on the model's GPU, batched; the rest on the CPU).
DECODERS = ("torchvision", "pil", "nvjpeg")
_JPEG = b"\xff\xd8"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torchvision.io's decoders without the warning of torchvision 0.29, which deprecates them in favour of
    TorchCodec: they are what this pipeline is measured with."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The image decoding and encoding capabilities", DeprecationWarning)
        yield


def _regular_file(path: str | os.PathLike[str]) -> None:
    """Only a regular file is read: a FIFO or a device raises instead of blocking."""
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        what = "a FIFO" if stat.S_ISFIFO(mode) else "a folder" if stat.S_ISDIR(mode) else "not a regular file"
        raise OSError(f"{os.fspath(path)} is {what}: only regular files are read as images")


def read_image(path: str | os.PathLike[str] | io.BytesIO) -> Any:
    """The image at ``path`` as an 8-bit RGB PIL image, turned upright by its EXIF orientation (as
    ``torchvision.io.decode_image(apply_exif_orientation=True)`` and PIL's ``ImageOps.exif_transpose`` do); 16-bit
    images scaled by their value range, not clipped. Only a regular file is read: a FIFO or a device raises
    instead of blocking."""
    from PIL import Image, ImageOps

    if not isinstance(path, io.BytesIO):
        _regular_file(path)
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):  # 16-bit (or 32-bit integer) grayscale
            import numpy as np

            top = 65535.0 if image.mode.startswith("I;16") or np.asarray(image).max() <= 65535 else 2.0**31 - 1
            image = Image.fromarray(np.round(np.asarray(image, dtype=np.float64) * (255.0 / top)).astype(np.uint8))
        return image.convert("RGB")


def decode(source: str | os.PathLike[str] | bytes) -> Tensor:
    """The image at a path (or in ``bytes``) as a uint8 ``(3, H, W)`` RGB tensor, upright by its EXIF orientation:
    torchvision.io for JPEG (CMYK and grayscale too), PNG (16-bit scaled by its range, as :func:`read_image`
    does), WebP and GIF (the first frame); PIL, as :func:`read_image`, for the rest (BMP, TIFF, PPM). Only a
    regular file is read."""
    if not isinstance(source, bytes):
        _regular_file(source)
    with _quiet():
        if isinstance(source, bytes):
            data = torch.frombuffer(bytearray(source), dtype=torch.uint8)
        else:
            data = read_file(os.fspath(source))
        if not bytes(data[:8].tolist()).startswith((_JPEG, b"\x89PNG", b"RIFF", b"GIF8")):
            return F.pil_to_tensor(read_image(io.BytesIO(source) if isinstance(source, bytes) else source))
        image = decode_image(data, mode=ImageReadMode.RGB, apply_exif_orientation=True)
    if image.dtype == torch.uint16:
        image = image.to(torch.float64).mul_(255.0 / 65535.0).round_().to(torch.uint8)
    return image[0] if image.dim() == 4 else image


def uint8_transform(transform: ImageClassification) -> Callable[[Tensor], Tensor]:
    """``transform``'s resize and center crop on a uint8 tensor (its normalisation is left to :func:`normalize`,
    where the model runs)."""
    return v2.Compose(
        [
            v2.Resize(transform.resize_size, interpolation=transform.interpolation, antialias=transform.antialias),
            v2.CenterCrop(transform.crop_size),
        ]
    )


def normalize(
    batch: Tensor, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor, dtype: torch.dtype
) -> Tensor:
    """A uint8 batch as the model's input: scaled to [0, 1], normalised in fp32 (as the PIL path does on the CPU),
    then cast to ``dtype``; on the batch's device, channels_last. ``mean`` and ``std`` may be tensors there
    already (no copy per batch)."""
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=batch.device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=batch.device).view(1, -1, 1, 1)
    x = (batch.float().div_(255) - mean_t).div_(std_t)
    return x.to(dtype).contiguous(memory_format=torch.channels_last)


def read_bytes(source: str | os.PathLike[str] | bytes) -> Tensor:
    """An image file's bytes as a uint8 tensor (for decoding elsewhere). Only a regular file is read."""
    if not isinstance(source, bytes):
        _regular_file(source)
        with open(source, "rb") as f:
            source = f.read()
    return torch.frombuffer(bytearray(source), dtype=torch.uint8)


class BatchDecoder:
    """Images' bytes to one uint8 batch on ``device``: the JPEGs decoded together by ``torchvision.io.decode_jpeg``
    there (nvJPEG on a GPU), each resized and cropped there; any other file, or a batch the device's decoder
    refuses, decoded on the CPU as :func:`decode` does, with one warning per reason."""

    def __init__(self, transform: ImageClassification, device: torch.device) -> None:
        self.resize_crop, self.device = uint8_transform(transform), device
        self.warned: set[str] = set()

    def _warn(self, reason: str) -> None:
        if reason not in self.warned:
            self.warned.add(reason)
            warnings.warn(f"cutlass_resnet: decoding on the CPU instead of {self.device}: {reason}", stacklevel=3)

    def _on_cpu(self, data: Tensor) -> Tensor:
        return self.resize_crop(decode(bytes(data.cpu().numpy().tobytes()))).to(self.device, non_blocking=True)

    def __call__(self, items: list[Tensor]) -> tuple[list[int], Tensor | None, dict[int, str]]:
        """(the items decoded, their batch, why each other one could not be)."""
        images: dict[int, Tensor] = {}
        errors: dict[int, str] = {}
        jpegs = [i for i, data in enumerate(items) if bytes(data[:2].tolist()) == _JPEG]
        if jpegs:
            try:
                with _quiet():
                    decoded = decode_jpeg([items[i] for i in jpegs], mode=ImageReadMode.RGB, device=self.device,
                                          apply_exif_orientation=True)  # fmt: skip
                images.update({i: self.resize_crop(image) for i, image in zip(jpegs, decoded, strict=True)})
            except RuntimeError as exc:  # a file the device's decoder refuses fails the batch: each on the CPU
                self._warn(f"{self.device}'s JPEG decoder refused a batch ({exc})")
        for i, data in enumerate(items):
            if i in images:
                continue
            if i not in jpegs:
                self._warn("not a JPEG")
            try:
                images[i] = self._on_cpu(data)
            except Exception as exc:  # noqa: BLE001 - an unreadable image is a result, not the end of the run
                errors[i] = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        good = sorted(images)
        batch = torch.stack([images[i] for i in good]) if good else None
        return good, batch, errors


class Loader:
    """One path (or an image's bytes) to one model input, in a worker: decoded and transformed by ``decoder``
    (uint8 from ``torchvision``, normalised fp32 from ``pil``)."""

    def __init__(self, decoder: str, transform: Callable[[Any], Tensor]) -> None:
        if decoder not in DECODERS:
            raise ValueError(f"unknown decoder {decoder!r}: {', '.join(DECODERS)}")
        if decoder != "pil" and not isinstance(transform, ImageClassification):
            raise ValueError(f"decoder={decoder!r} takes the model's own transform (ImageClassification)")
        self.decoder, self.transform = decoder, transform
        self.resize_crop = uint8_transform(transform) if decoder == "torchvision" else None

    @property
    def normalizes(self) -> bool:
        """Whether its output still needs :func:`normalize` (uint8 out)."""
        return self.decoder != "pil"

    def __call__(self, source: str | bytes) -> Tensor:
        if self.decoder == "nvjpeg":
            return read_bytes(source)  # decoded by a BatchDecoder where the model runs
        if self.resize_crop is None:
            return self.transform(read_image(io.BytesIO(source) if isinstance(source, bytes) else source))
        return self.resize_crop(decode(source))
