"""Classification on Ray Data, past one machine: :class:`Predictor` is a callable class for
``ray.data.Dataset.map_batches`` (the model loaded once per actor), and :func:`classify_on_ray` runs
:func:`cutlass_resnet.predict.classify`'s job on a Ray cluster, yielding the same :class:`~.predict.Result` s in
input order. ``cutlass-resnet predict --ray`` is that function behind the command line.

    import ray
    from cutlass_resnet.ray_data import Predictor

    ds = ray.data.read_binary_files("s3://bucket/photos/", include_paths=True)
    ds = ds.map_batches(Predictor, fn_constructor_kwargs={"arch": "resnet50", "weights": "DEFAULT"},
                        batch_size=64, concurrency=4, num_gpus=1)
    ds.write_parquet("s3://bucket/predictions/")
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .images import BatchDecoder, Loader, normalize
from .predict import Result, _Head
from .pretrained.preprocess import eval_transform, labels_of
from .pretrained.zoo import create_model

__all__ = ["Predictor", "classify_on_ray"]


class Predictor:
    """For ``Dataset.map_batches``: a batch with a ``path`` column (image files every node can read) or a
    ``bytes`` column (the images' bytes, as ``ray.data.read_binary_files`` gives them) in; ``path`` (where given),
    ``error`` (None, or why the image could not be read), ``index``, ``label`` and ``probability`` (the top-k,
    most likely first) and, with ``features=True``, ``features`` (the pooled features) out.

    Args:
        arch: the model, as :func:`cutlass_resnet.create_model` names it (ours, torchvision's, ``timm:NAME``).
        weights: as :func:`~cutlass_resnet.create_model` takes them (``DEFAULT``, a file, a hub repo).
        topk: classes per image.
        features: add each image's pooled features.
        device: ``auto`` (the actor's GPU when Ray gave it one, else the CPU), ``cuda`` or ``cpu``.
        dtype: the model's dtype (default: fp16 on a GPU, fp32 on the CPU).
        fuse_bn: fold BatchNorm into the convs.
        decoder: ``torchvision``, ``nvjpeg`` or ``pil`` (:mod:`cutlass_resnet.images`).
    """

    def __init__(
        self,
        arch: str = "resnet50",
        weights: str | os.PathLike[str] | None = "DEFAULT",
        *,
        topk: int = 5,
        features: bool = False,
        device: str = "auto",
        dtype: torch.dtype | None = None,
        fuse_bn: bool = True,
        decoder: str = "torchvision",
    ) -> None:
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        dtype = dtype or (torch.float16 if self.device.type == "cuda" else torch.float32)
        model = create_model(arch, weights, fuse_bn=fuse_bn, dtype=dtype).eval()
        self.model = model.to(device=self.device, memory_format=torch.channels_last)
        self.dtype, self.topk, self.features = dtype, topk, features
        transform = eval_transform(model)
        self.load = Loader(decoder, transform)
        self.batch_decoder = BatchDecoder(transform, self.device) if decoder == "nvjpeg" else None
        self.scale = [torch.tensor(v, device=self.device) for v in (transform.mean, transform.std)]
        self.labels = labels_of(model)
        self.head = _Head(self.model).eval()

    def _inputs(self, sources: Sequence[Any]) -> tuple[list[int], Tensor | None, dict[int, str]]:
        good, tensors, errors = [], [], {}
        for i, source in enumerate(sources):
            try:
                tensors.append(self.load(bytes(source) if isinstance(source, (bytes, np.ndarray)) else str(source)))
                good.append(i)
            except Exception as exc:  # noqa: BLE001 - an unreadable image is a row with its error
                errors[i] = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if not tensors:
            return good, None, errors
        if self.batch_decoder is not None:  # files' bytes: decoded on the model's device
            decoded, batch, failed = self.batch_decoder(tensors)
            errors.update({good[i]: why for i, why in failed.items()})
            good = [good[i] for i in decoded]
            if batch is None:
                return good, None, errors
        else:
            batch = torch.stack(tensors)
        batch = batch.to(self.device)
        x = normalize(batch, *self.scale, self.dtype) if self.load.normalizes else batch.to(self.dtype)
        return good, x, errors

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        key = "bytes" if "bytes" in batch else "path"
        if key not in batch:
            raise ValueError(f"Predictor takes a batch with a 'path' or a 'bytes' column, not {sorted(batch)}")
        sources = list(batch[key])
        good, x, errors = self._inputs(sources)
        n = len(sources)
        out: dict[str, Any] = {
            "error": [errors.get(i) for i in range(n)],
            "index": [[] for _ in range(n)],
            "label": [[] for _ in range(n)],
            "probability": [[] for _ in range(n)],
        }
        if "path" in batch:
            out["path"] = [str(p) for p in batch["path"]]
        if self.features:
            out["features"] = [np.zeros(0, np.float32) for _ in range(n)]
        if x is not None:
            with torch.inference_mode():
                pooled, logits = self.head(x)
                top = torch.softmax(logits.float(), dim=1).topk(self.topk, dim=1)
            values, indices = top.values.cpu().tolist(), top.indices.cpu().tolist()
            for row, i in enumerate(good):
                out["index"][i] = indices[row]
                out["label"][i] = [self.labels[c] if self.labels else f"class {c}" for c in indices[row]]
                out["probability"][i] = values[row]
            if self.features:
                rows = pooled.float().cpu().numpy()
                for row, i in enumerate(good):
                    out["features"][i] = rows[row]
        return out


def classify_on_ray(
    paths: Sequence[str | os.PathLike[str]],
    arch: str,
    weights: str | os.PathLike[str] | None,
    *,
    topk: int = 5,
    batch_size: int = 32,
    features: bool = False,
    device: str = "auto",
    dtype: torch.dtype | None = None,
    fuse_bn: bool = True,
    decoder: str = "torchvision",
    concurrency: int | None = None,
) -> Iterator[Result]:
    """:func:`cutlass_resnet.predict.classify`'s results for ``paths``, computed by :class:`Predictor` actors on
    the Ray cluster this process is connected to (``ray.init(...)`` first), one :class:`~.predict.Result` per
    path in input order. ``concurrency``: actors (default: one per GPU of the cluster, else one per two CPUs)."""
    import ray

    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0)) if device != "cpu" else 0
    concurrency = concurrency or max(1, gpus or int(resources.get("CPU", 2)) // 2)
    kwargs = dict(arch=arch, weights=None if weights is None else str(weights), topk=topk, features=features,
                  device=device, dtype=dtype, fuse_bn=fuse_bn, decoder=decoder)  # fmt: skip
    dataset = ray.data.from_items([{"path": os.fspath(p)} for p in paths])
    dataset = dataset.map_batches(
        Predictor,
        fn_constructor_kwargs=kwargs,
        batch_size=batch_size,
        concurrency=concurrency,
        num_gpus=1 if gpus else 0,
        batch_format="numpy",
    )
    for row in dataset.iter_rows():
        if row["error"] is not None:
            yield Result(row["path"], error=row["error"])
            continue
        top = [
            {"index": int(i), "label": str(label), "probability": float(p)}
            for i, label, p in zip(row["index"], row["label"], row["probability"], strict=True)
        ]
        pooled = torch.from_numpy(np.asarray(row["features"], dtype=np.float32)) if features else None
        yield Result(row["path"], top, features=pooled)
