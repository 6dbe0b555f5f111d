"""Shared test helpers: the brief's precision rule, measured against independent references."""

from __future__ import annotations

import copy
import hashlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import Tensor, nn
from torchvision.models import ResNet18_Weights, Weights

from cutlass_resnet.testing import ARCHS, torchvision_model_with_statistics

CL = torch.channels_last


def pad_channels(t: Tensor, channels: int) -> Tensor:
    """``t`` with zero channels up to ``channels``, NHWC: the tests' own padding, beside the package's."""
    shape = (t.shape[0], channels - t.shape[1], *t.shape[2:])
    return torch.cat([t, t.new_zeros(shape)], dim=1).contiguous(memory_format=CL)


def max_error(actual: Tensor, expected: Tensor) -> float:
    """max|actual - expected| in float64 (0 for empty tensors)."""
    if expected.numel() == 0:
        return 0.0
    return (actual.double() - expected.double()).abs().max().item()


def assert_within_twice_aten(ours: Tensor, aten: Tensor, reference: Tensor) -> None:
    """Our low-precision result is right when its error against a float64 reference is at most
    twice that of aten's own computation at the same precision. Half a unit in the last place
    of the largest output is allowed on top, so that a case where aten happens to be exact
    does not demand exactness of a single, differently ordered rounding."""
    assert ours.dtype == aten.dtype
    floor = 0.5 * torch.finfo(ours.dtype).eps * (reference.abs().max().item() if reference.numel() else 0.0)
    ours_err, aten_err = max_error(ours, reference), max_error(aten, reference)
    assert ours_err <= 2 * aten_err + floor, (
        f"{ours.dtype}: error {ours_err:.3e} against float64 exceeds twice aten's {aten_err:.3e} (+{floor:.1e})"
    )


@dataclass
class TorchvisionReference:
    """A torchvision model with random weights and BatchNorm statistics, and its outputs."""

    arch: str
    model: nn.Module  #: torchvision, fp32, eval mode
    x: Tensor  #: fp32 input batch
    expected: Tensor  #: torchvision's logits computed in float64: the reference
    fp32_error: float  #: max error of torchvision's own fp32 logits against ``expected``


@pytest.fixture(scope="session", params=ARCHS)
def tv_reference(request) -> TorchvisionReference:
    """One torchvision model per architecture, shared by every test of that architecture."""
    arch = request.param
    model = torchvision_model_with_statistics(arch, seed=1)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = copy.deepcopy(model).double()(x.double())
        fp32_error = max_error(model(x), expected)
    return TorchvisionReference(arch, model, x, expected, fp32_error)


@pytest.fixture(scope="session")
def extension(tmp_path_factory):
    """The CUTLASS extension built for sm_80 and sm_90a (compiled, linked and loaded; no GPU needed).

    Built into a fresh folder, so every run compiles it (a few minutes on 2 cores), unless
    CUTLASS_RESNET_TEST_CACHE names a folder to reuse.
    """
    from cutlass_resnet.ops import build, library

    if build.cuda_home() is None and os.environ.get("CI") != "true":
        pytest.skip("nvcc is not installed")
    previous = os.environ.get("CUTLASS_RESNET_CACHE")
    os.environ["CUTLASS_RESNET_CACHE"] = os.environ.get("CUTLASS_RESNET_TEST_CACHE") or str(
        tmp_path_factory.mktemp("kernel-cache")
    )
    try:
        assert library.load(["8.0", "9.0a"]), library.load_error()
        yield library
    finally:
        if previous is None:
            os.environ.pop("CUTLASS_RESNET_CACHE", None)
        else:
            os.environ["CUTLASS_RESNET_CACHE"] = previous


def emulated_launch(kernel, x, weight, bias, residual, stride, padding, dilation, groups, relu, split_k=1):
    """What a kernel computes on the operands it is given: the binding's checks and CUTLASS's host reference
    convolution on the very arguments its launch would get."""
    return kernel.host_reference(x, weight, bias, residual, stride, padding, dilation, groups, relu, split_k=split_k)


@dataclass
class EmulatedGPU:
    """An sm_80 GPU with 108 SMs whose launches run on the CPU through the binding's emulated path (CUTLASS's host
    reference). ``calls`` records each launch as (kernel, x shape, groups) as the kernel gets them (the stem's
    input packed to 4 channels, merged groups): the self-check's through ``launch``, the convs' through the
    binding's one path."""

    monkeypatch: pytest.MonkeyPatch
    calls: list[tuple[str, tuple[int, ...], int]] = field(default_factory=list)
    choices: list = field(default_factory=list)  #: the choice of each conv run through the binding's path

    def use(self, launch: Callable[..., Tensor]) -> None:
        """Run the self-check's launches through ``launch`` (a kernel that computes something else)."""
        from cutlass_resnet.ops.select import KernelInfo

        def recorded(kernel, x, weight, bias, residual, stride, padding, dilation, groups, relu, split_k=1):
            self.calls.append((kernel.name, tuple(x.shape), groups))
            return launch(kernel, x, weight, bias, residual, stride, padding, dilation, groups, relu, split_k)

        self.monkeypatch.setattr(KernelInfo, "launch", recorded)

    def run_convs(self) -> None:
        from cutlass_resnet.ops import dispatch

        def launch(x, weight, bias, residual, conv, choice):
            n, c, h, w = x.shape
            groups = conv[6] // choice.merge_groups if choice.merge_groups > 1 else conv[6]
            self.calls.append((choice.kernel, (n, choice.pad_channels or c, h, w), groups))
            self.choices.append(choice)
            conv = [*conv[:-1], dispatch.EMULATE]
            return torch.ops.cutlass_resnet_C.run(x, weight, bias, residual, conv, dispatch._decided(choice))

        self.monkeypatch.setattr(dispatch, "_launch", launch)


@pytest.fixture
def launches(extension, monkeypatch):
    """The kernels of every conv that goes through the binding's path from Python (its first call)."""
    names: list[str] = []
    from cutlass_resnet.ops import dispatch

    launch = dispatch._launch

    def recorded(x, weight, bias, residual, conv, choice):
        names.append(choice.kernel)
        return launch(x, weight, bias, residual, conv, choice)

    monkeypatch.setattr(dispatch, "_launch", recorded)
    monkeypatch.setattr(dispatch, "STRICT", True)  # a conv that falls back to aten's convolution raises
    dispatch.forget_choices()
    yield names
    dispatch.forget_choices()


@pytest.fixture
def emulated_gpu(monkeypatch, extension, tmp_path):
    """Kernel launches emulated on the CPU, on an sm_80 GPU that is not there; verdicts kept under tmp_path."""
    from cutlass_resnet.ops import dispatch, select, selfcheck

    def forget() -> None:
        dispatch._warned.clear()
        dispatch.forget_choices()
        selfcheck._checked_verdict.cache_clear()
        selfcheck._unrecorded.clear()
        select.device_info.cache_clear()

    forget()
    monkeypatch.setenv("CUTLASS_RESNET_CACHE", str(tmp_path))
    properties = SimpleNamespace(major=8, minor=0, multi_processor_count=108)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index=None: properties)
    monkeypatch.setattr(selfcheck, "_device", lambda index: torch.device("cpu"))
    # The first cases of each kernel's matrix (every epilogue first): the host reference is slow, and the whole
    # matrix is what a GPU checks (its coverage is tested in tests/ops/test_selfcheck.py).
    check_cases = selfcheck.check_cases
    monkeypatch.setattr(selfcheck, "check_cases", lambda info: check_cases(info)[:12])
    gpu = EmulatedGPU(monkeypatch)
    gpu.use(emulated_launch)
    gpu.run_convs()
    yield gpu
    forget()


@pytest.fixture
def server():
    """A local HTTP server playing the Hugging Face hub and torchvision's download host."""
    from servers import Server

    running = Server()
    yield running
    running.close()


@pytest.fixture
def hub(server, monkeypatch, tmp_path):
    """Point huggingface_hub at ``server`` (as HF_ENDPOINT would at import) and every cache into tmp_path."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    return server


def checkpoint(model: torch.nn.Module) -> tuple[bytes, str]:
    """A torch.save'd state dict and the name torchvision would give it: ``resnet18-<sha256[:8]>.pth``."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    data = buffer.getvalue()
    return data, f"resnet18-{hashlib.sha256(data).hexdigest()[:8]}.pth"


@pytest.fixture
def tv_resnet18():
    """torchvision resnet18 with random weights and BatchNorm statistics, ImageNet's 1000 classes."""
    return torchvision_model_with_statistics("resnet18", seed=2)


@pytest.fixture
def served(hub, tv_resnet18):
    """(url, cache path) of tv_resnet18's checkpoint on the local torchvision host."""
    data, name = checkpoint(tv_resnet18)
    hub.state.tv_files[name] = data
    return f"{hub.url}/models/{name}", Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints" / name


@pytest.fixture
def pointed(monkeypatch, served):
    """torchvision's ResNet18_Weights.IMAGENET1K_V1 (also DEFAULT), its url pointed at the local server."""
    url, _ = served
    member = ResNet18_Weights.IMAGENET1K_V1
    monkeypatch.setattr(member, "_value_", Weights(url=url, transforms=member.transforms, meta=member.meta))
    return member


def torchvision_alone(reference: torch.nn.Module, path) -> tuple[torch.Tensor, torch.Tensor]:
    """(class probabilities, pooled features) of one image on torchvision's model, with torchvision's transform."""
    from PIL import Image

    with Image.open(path) as image, torch.no_grad():
        x = ResNet18_Weights.IMAGENET1K_V1.transforms()(image.convert("RGB"))[None]
        m = reference
        x = m.layer4(m.layer3(m.layer2(m.layer1(m.maxpool(m.relu(m.bn1(m.conv1(x))))))))
        pooled = torch.flatten(m.avgpool(x), 1)
        return torch.softmax(m.fc(pooled), dim=1)[0], pooled[0]


def make_image_folder(folder: Path, count: int = 40) -> list[Path]:
    """``count`` images made from the shipped photo (crops, flips, sizes; JPEG, PNG and WebP, some in a subfolder),
    plus a corrupt ``broken.jpg`` and a ``notes.txt``; returns the images, sorted as a folder listing is."""
    from PIL import Image, ImageOps

    from cutlass_resnet.cli.predict import sample_image

    with Image.open(sample_image()) as photo:
        base = photo.convert("RGB")
    images = []
    for i in range(count):
        image = base.crop((i * 3, i * 2, base.width - i * 2, base.height - i)) if i % 4 else base
        if i % 3 == 1:
            image = ImageOps.mirror(image)
        if i % 5 == 2:
            image = image.resize((image.width // 2 + i, image.height // 2 + i))
        kind = ["jpg", "png", "webp"][i % 3]
        path = folder / ("sub" if i % 7 == 0 else ".") / f"img{i:02d}.{kind}"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}[kind])
        images.append(path)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    (folder / "notes.txt").write_text("not an image\n")
    return sorted([*images, folder / "broken.jpg"], key=str)


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """A folder of 40 images, one corrupt file and one non-image (see :func:`make_image_folder`)."""
    folder = tmp_path_factory.mktemp("photos")
    make_image_folder(folder)
    return folder


@pytest.fixture(scope="session")
def ten_classes(tmp_path_factory) -> tuple[nn.Module, Path]:
    """A torchvision resnet18 with 10 classes and real BatchNorm statistics, and the same weights saved as we save
    them (unfused) in a folder: far-apart classes, so a ranking is not decided by rounding."""
    from cutlass_resnet import load_torchvision_state_dict, resnet18, save_pretrained

    reference = torchvision_model_with_statistics("resnet18", seed=3, num_classes=10)
    ours = resnet18(num_classes=10)
    load_torchvision_state_dict(ours, reference.state_dict())
    return reference, save_pretrained(ours, tmp_path_factory.mktemp("weights") / "ten")


@dataclass
class Digits:
    """scikit-learn's 1,797 real 8x8 handwritten digits, upsampled to 32x32 RGB and normalised, split into
    train / calibration / test, and a ResNet-18 of our builder trained on the train split (fp32, unfused)."""

    images: Tensor
    labels: Tensor
    train: Tensor
    calibration: Tensor
    test: Tensor
    model: nn.Module
    _quantized: dict[str, nn.Module] = field(default_factory=dict)

    def quantized(self, method: str) -> nn.Module:
        """``model`` quantized from the calibration split (in batches of 50) by ``method``, made once a session:
        do not change it."""
        if method not in self._quantized:
            from cutlass_resnet import quantize

            self._quantized[method] = quantize(self.model, self.images[self.calibration].split(50), method)
        return self._quantized[method]

    def accuracy(self, model: nn.Module, split: Tensor | None = None) -> float:
        split = self.test if split is None else split
        with torch.no_grad():
            predicted = torch.cat([model(self.images[b]).argmax(1) for b in split.split(200)])
        return (predicted == self.labels[split]).double().mean().item()


@pytest.fixture(scope="session")
def digits() -> Digits:
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    from cutlass_resnet import resnet18

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16
    images = F.interpolate(images, size=32, mode="bilinear", align_corners=False).expand(-1, 3, -1, -1)
    images = ((images - 0.5) / 0.5).contiguous()
    labels = torch.tensor(data.target)
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(labels), generator=g)
    train, calibration, test = order[:1197], order[1197:1397], order[1397:]
    torch.manual_seed(0)
    model = resnet18(num_classes=10)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    for _ in range(4):
        model.train()
        for batch in train[torch.randperm(len(train), generator=g)].split(64):
            loss = F.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return Digits(images, labels, train, calibration, test, model.eval())
