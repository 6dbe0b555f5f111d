"""Classify many images: :func:`classify` yields one :class:`Result` per path, in input order.

Images are decoded and preprocessed (the model's own transform) in ``DataLoader`` worker processes, batched,
copied to the GPU from pinned memory, and run through the model (replayed from CUDA graphs on a GPU); an
image that cannot be read is a result with an ``error``, never the end of the run. :func:`expand_paths` turns
files, folders, ``@list.txt`` files and globs into the paths, and :class:`Writer` writes JSON Lines or CSV
line by line (so a killed run keeps its finished lines, and ``resume`` skips them).
"""

from __future__ import annotations

import base64
import contextlib
import csv
import glob
import io
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.transforms._presets import ImageClassification

from ._io import open_output, output_path, write_text
from .images import BatchDecoder, Loader, normalize, read_image
from .nn import cuda_graph
from .pretrained.preprocess import eval_transform, labels_of, num_classes_of

__all__ = [
    "IMAGE_EXTENSIONS",
    "OUTPUT_VERSION",
    "FeatureLog",
    "Result",
    "Writer",
    "classify",
    "done_paths",
    "expand_paths",
    "load_features",
    "read_image",
    "read_results",
    "save_features",
]

#: The version of the result records (``predict --json``, JSON Lines, CSV columns): 2 since ``prob`` became
#: ``probability`` and ``predict --json``'s ``image`` became ``path``.
OUTPUT_VERSION = 2
_TOP_KEYS = ("index", "label", "probability")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")


def expand_paths(sources: Iterable[str | os.PathLike[str]]) -> list[str]:
    """The image paths ``sources`` name, in order, each once: a file as it is; a folder's images (recursive, by
    extension, sorted); ``@list.txt``, one path per line (blank lines and ``#`` comments skipped); a glob
    (``**`` recursive), sorted. A path that does not exist is kept: its result says so."""
    paths: list[str] = []
    for source in map(os.fspath, sources):
        if source.startswith("@"):
            lines = Path(source[1:]).read_text().splitlines()
            paths += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        elif Path(source).is_dir():
            found = (p for p in Path(source).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
            paths += sorted(str(p) for p in found)
        elif glob.has_magic(source) and not Path(source).exists():
            paths += sorted(p for p in glob.glob(source, recursive=True) if Path(p).is_file())
        else:
            paths.append(source)
    return list(dict.fromkeys(paths))


@dataclass
class Result:
    """One image's classes (``top``: label, index, probability, most likely first) or why it has none (``error``);
    ``features``: its pooled features, when asked for."""

    path: str
    top: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    features: Tensor | None = None

    def to_json(self) -> dict[str, Any]:
        """The record both output forms hold (:data:`OUTPUT_VERSION`)."""
        if self.error is not None:
            return {"version": OUTPUT_VERSION, "path": self.path, "error": self.error}
        return {"version": OUTPUT_VERSION, "path": self.path, "top": self.top}

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Result:
        if record.get("version", 1) not in (1, OUTPUT_VERSION):
            raise ValueError(f"a result of output version {record['version']}; this reader knows {OUTPUT_VERSION}")
        return cls(record["path"], [_entry(t) for t in record.get("top", [])], record.get("error"))


def _entry(top: dict[str, Any]) -> dict[str, Any]:
    """One class of a result, as the current schema names it (version 1 said ``prob``)."""
    probability = top.get("probability") if top.get("probability") is not None else top["prob"]
    return {"index": int(top["index"]), "label": top["label"], "probability": float(probability)}


class _Images(torch.utils.data.Dataset):
    """The images of ``paths`` decoded and transformed by ``load``, in a worker; a failure is returned, not
    raised."""

    def __init__(self, paths: list[str], load: Callable[[str], Tensor]) -> None:
        self.paths, self.load = paths, load

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, Tensor | None, str | None, float]:
        start = time.perf_counter()
        try:
            return index, self.load(self.paths[index]), None, time.perf_counter() - start
        except Exception as exc:  # noqa: BLE001 - any unreadable image is a result, not the end of the run
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return index, None, error, time.perf_counter() - start


def _collate(items: list[tuple[int, Tensor | None, str | None, float]]) -> tuple:
    """(indices, the batch of the readable images, errors by index, decode seconds): uint8 batches NHWC in
    memory (channels_last), as the model reads them."""
    good = [(i, t) for i, t, _, _ in items if t is not None]
    errors = {i: e for i, t, e, _ in items if t is None}
    if good and good[0][1].dim() == 1:  # files' bytes, for a BatchDecoder
        return [i for i, _ in good], [t for _, t in good], errors, sum(s for *_, s in items)
    batch = torch.stack([t for _, t in good]) if good else None
    if batch is not None and batch.dtype == torch.uint8:
        batch = batch.contiguous(memory_format=torch.channels_last)
    return [i for i, _ in good], batch, errors, sum(s for *_, s in items)


class _Head(nn.Module):
    """(pooled features, logits) of a model in one forward, for one CUDA graph: the classifier's input where the
    model has timm's ``forward_features``/``forward_head`` (this package's and timm's), else the logits twice."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.pools = callable(getattr(model, "forward_features", None)) and callable(
            getattr(model, "forward_head", None)
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if not self.pools:
            logits = self.model(x)
            return logits, logits
        pooled = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
        classifier = self.model.get_classifier() if hasattr(self.model, "get_classifier") else self.model.fc
        return pooled, classifier(pooled)


class _Graphs:
    """``head`` replayed from a CUDA graph per batch shape, a short batch (the last, or one with unreadable images
    dropped) padded to the full batch first: one graph and one memory pool for the whole run."""

    def __init__(self, head: nn.Module, batch_size: int) -> None:
        self.head, self.batch_size = head, batch_size
        self.graphs: dict[tuple[int, ...], Callable[[Tensor], tuple[Tensor, Tensor]]] = {}

    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor]:
        n = x.shape[0]
        if n < self.batch_size:
            pad = x.new_zeros((self.batch_size - n, *x.shape[1:]))
            x = torch.cat([x, pad]).contiguous(memory_format=torch.channels_last)
        key = tuple(x.shape)
        if key not in self.graphs:
            self.graphs[key] = cuda_graph(self.head, x)
        pooled, logits = self.graphs[key](x)
        return pooled[:n], logits[:n]


@dataclass
class _Launched:
    """A batch whose model run (and the copy of its results back) is queued on the GPU."""

    indices: list[int]
    errors: dict[int, str]
    probabilities: Tensor | None = None
    pooled: Tensor | None = None
    done: Any = None  #: the CUDA event recorded after the copy back, or None on the CPU


def classify(
    paths: Iterable[str | os.PathLike[str]],
    model: nn.Module,
    *,
    topk: int = 5,
    batch_size: int = 32,
    workers: int = 0,
    features: bool = False,
    transform: Callable[[Any], Tensor] | None = None,
    labels: list[str] | None = None,
    graphs: bool = True,
    decoder: str | None = None,
    on_batch: Callable[[int], None] | None = None,
    stats: dict[str, float] | None = None,
) -> Iterator[Result]:
    """Classify the images at ``paths`` with ``model`` (on its device, in its dtype), yielding one :class:`Result`
    per path in input order: the ``topk`` classes, or the error that kept the image from being read.

    ``transform`` and ``labels`` default to the model's own (:func:`cutlass_resnet.pretrained.preprocess.
    eval_transform`, ``labels_of``); ``decoder`` is ``"torchvision"`` (torchvision.io and v2 on uint8 tensors,
    normalised on the model's device; the default for the model's own transform), ``"nvjpeg"`` (the workers
    read the files, JPEGs are decoded in batches, resized and cropped on the model's device:
    :class:`~cutlass_resnet.images.BatchDecoder`) or ``"pil"`` (PIL and the transform on the CPU; the only one
    for a transform of your own); ``workers`` decode (or read) in that many processes.
    On a GPU each batch is copied from pinned memory on a side stream while the one before runs, and its results
    come back while the next is decoded; the model is replayed from one CUDA graph (``graphs=False`` for eager),
    short batches padded to its shape. ``features`` adds each image's pooled features (the classifier's input).
    ``on_batch(n)`` is called after each batch of ``n`` paths; ``stats`` accumulates ``images``, ``errors``,
    ``decode_s`` (seconds decoding and transforming, summed over workers), ``wait_s`` (seconds this process
    waited for decoded batches), ``transfer_s`` (copying batches to the device and normalising them) and
    ``model_s`` (running the model and waiting for its results)."""
    paths = [os.fspath(p) for p in paths]
    parameter = next(model.parameters())
    device, dtype = parameter.device, parameter.dtype
    transform = transform or eval_transform(model)
    if decoder is None:
        decoder = "torchvision" if isinstance(transform, ImageClassification) else "pil"
    load = Loader(decoder, transform)
    labels = labels or labels_of(model)
    classes = num_classes_of(model)
    if not 1 <= topk <= classes:
        raise ValueError(f"topk must be between 1 and {classes} (the model's classes), got {topk}")
    cuda = device.type == "cuda"
    loader = torch.utils.data.DataLoader(
        _Images(paths, load), batch_size=batch_size, num_workers=workers, collate_fn=_collate, pin_memory=cuda
    )
    head = _Head(model).eval()
    if features and not head.pools:
        raise ValueError(
            f"features: {type(model).__name__} has no forward_features/forward_head (cutlass_resnet's and timm's "
            "models have them) to take the pooled features from"
        )
    run = _Graphs(head, batch_size) if graphs and cuda else head
    copy_stream = torch.cuda.Stream(device) if cuda else None
    scale = [torch.tensor(v, device=device) for v in (transform.mean, transform.std)] if load.normalizes else []
    batch_decoder = BatchDecoder(transform, device) if decoder == "nvjpeg" else None
    stats = stats if stats is not None else {}
    for key in ("images", "errors", "decode_s", "wait_s", "transfer_s", "model_s"):
        stats.setdefault(key, 0)

    def stage(item: tuple) -> tuple[tuple, Tensor | None, Any]:
        """The batch on the device, ready for the model: copied (and normalised) on the side stream on a GPU."""
        indices, batch, errors, decode_s = item
        stats["decode_s"] += decode_s
        if batch is None:
            stats["errors"] += len(errors)
            return item, None, None
        start = time.perf_counter()
        with torch.cuda.stream(copy_stream) if cuda else contextlib.nullcontext():
            if isinstance(batch, list):  # files' bytes: decoded where the model runs
                good, x, failed = batch_decoder(batch)  # decode_jpeg reads bytes from host memory
                errors = {**errors, **{indices[i]: why for i, why in failed.items()}}
                indices = [indices[i] for i in good]
                item = (indices, batch, errors, decode_s)
            else:
                x = batch.to(device=device, non_blocking=True)
            if x is not None:
                x = normalize(x, *scale, dtype) if load.normalizes else x.to(dtype)
            ready = torch.cuda.Event() if cuda else None
            if ready is not None:
                ready.record(copy_stream)
        stats["images"] += len(indices)
        stats["errors"] += len(errors)
        stats["transfer_s"] += time.perf_counter() - start
        return item, x, ready

    def launch(item: tuple, x: Tensor | None, ready: Any) -> _Launched:
        """The model queued on the batch, its results' copy back queued after it."""
        indices, _, errors, _ = item
        launched = _Launched(indices, errors)
        if x is None:
            return launched
        start = time.perf_counter()
        if ready is not None:
            torch.cuda.current_stream(device).wait_event(ready)
            x.record_stream(torch.cuda.current_stream(device))
        with torch.inference_mode():
            pooled, logits = run(x)
            probabilities = torch.softmax(logits.float(), dim=1)
            pooled = pooled.float() if features else None
        if cuda:
            launched.probabilities = torch.empty(probabilities.shape, pin_memory=True)
            launched.probabilities.copy_(probabilities, non_blocking=True)
            if pooled is not None:
                launched.pooled = torch.empty(pooled.shape, pin_memory=True)
                launched.pooled.copy_(pooled, non_blocking=True)
            launched.done = torch.cuda.Event()
            launched.done.record()
        else:
            launched.probabilities, launched.pooled = probabilities, pooled
        stats["model_s"] += time.perf_counter() - start
        return launched

    def finish(launched: _Launched) -> dict[int, Result]:
        results = {index: Result(paths[index], error=error) for index, error in launched.errors.items()}
        if launched.probabilities is None:
            return results
        start = time.perf_counter()
        if launched.done is not None:
            launched.done.synchronize()
        stats["model_s"] += time.perf_counter() - start
        top = launched.probabilities.topk(topk, dim=1)
        for row, index in enumerate(launched.indices):
            classes = [
                {"index": i, "label": labels[i] if labels else f"class {i}", "probability": p}
                for p, i in zip(top.values[row].tolist(), top.indices[row].tolist(), strict=True)
            ]
            pooled = launched.pooled[row] if launched.pooled is not None else None
            results[index] = Result(paths[index], classes, features=pooled)
        return results

    def fetch(batches: Iterator[tuple]) -> tuple | None:
        start = time.perf_counter()
        item = next(batches, None)
        stats["wait_s"] += time.perf_counter() - start
        return item

    batches = iter(loader)
    item = fetch(batches)
    staged = stage(item) if item is not None else None
    while staged is not None:
        launched = launch(*staged)  # the GPU runs this batch while the next is decoded and copied
        item = fetch(batches)
        staged = stage(item) if item is not None else None
        results = finish(launched)
        for index in sorted(results):
            yield results[index]
        if on_batch is not None:
            on_batch(len(results))


def _whole_lines(path: Path) -> bytes:
    """A file's bytes up to its last newline: a line a killed run left half-written is not part of it."""
    if not path.exists():
        return b""
    data = path.read_bytes()
    return data[: data.rfind(b"\n") + 1]


def done_paths(path: str | os.PathLike[str]) -> list[str]:
    """The paths a (possibly interrupted) output file already holds, in order; a partly written last line is
    cut off the file, so appending continues it cleanly."""
    path = Path(path)
    whole = _whole_lines(path)
    if path.exists() and path.stat().st_size != len(whole):
        with open(path, "r+b") as f:
            f.truncate(len(whole))
    return [result.path for result in _parse_results(whole.decode("utf-8", "surrogateescape"), path)]


def read_results(path: str | os.PathLike[str]) -> list[Result]:
    """The results a JSON Lines or CSV output file holds, in its order (features are not in it); a partly written
    last line is not one."""
    path = Path(path)
    return _parse_results(_whole_lines(path).decode("utf-8", "surrogateescape"), path)


def _parse_results(text: str, path: Path) -> list[Result]:
    """The results of an output file's whole lines: JSON Lines or CSV as ``path``'s extension says, or the
    document ``predict --json`` prints (``{"version", "model", "predictions": [...]}``)."""
    if path.suffix.lower() != ".csv":
        try:
            document = json.loads(text)  # JSON Lines of more than one line stop at the first line's end
        except ValueError:
            document = None
        if isinstance(document, dict) and "predictions" in document:
            version = document.get("version", OUTPUT_VERSION)
            return [Result.from_json({"version": version, **r}) for r in document["predictions"]]
        return [Result.from_json(json.loads(line)) for line in text.splitlines() if line.strip()]
    results = []
    for row in csv.DictReader(io.StringIO(text, newline="")):
        top, n = [], 1
        while row.get(f"label_{n}"):
            top.append(_entry({k: row.get(f"{k}_{n}") for k in ("index", "label", "probability", "prob")}))
            n += 1
        results.append(Result(row["path"], top, row["error"] or None))
    return results


class Writer:
    """Results to ``path`` as JSON Lines (``{"version", "path", "top": [{"index", "label", "probability"}]}`` or
    ``{"version", "path", "error"}``), or CSV by the extension (``path, error, index_1, label_1, probability_1,
    ...``), one flushed line at a time. ``append`` continues a file (``resume``); ``csv_format`` overrides the
    extension."""

    def __init__(
        self, path: str | os.PathLike[str], topk: int, append: bool = False, csv_format: bool | None = None
    ) -> None:
        self.path, self.topk = Path(path), topk
        self.csv = self.path.suffix.lower() == ".csv" if csv_format is None else csv_format
        fresh = not (append and self.path.is_file() and self.path.stat().st_size)
        # A file name that is not UTF-8 (os.fsdecode's surrogates) goes out as the bytes it was, and comes back so.
        newline = "" if self.csv else None
        self.file = open_output(self.path, append, newline=newline, encoding="utf-8", errors="surrogateescape")
        self.rows = None
        if self.csv:
            columns = ["path", "error"] + [f"{k}_{n}" for n in range(1, topk + 1) for k in _TOP_KEYS]
            self.rows = csv.DictWriter(self.file, columns)
            if fresh:
                self.rows.writeheader()

    def write(self, result: Result) -> None:
        if self.rows is not None:
            row: dict[str, Any] = {"path": result.path, "error": result.error or ""}
            for n, entry in enumerate(result.top, 1):
                row.update({f"{k}_{n}": entry[k] for k in _TOP_KEYS})
            self.rows.writerow(row)
        else:
            self.file.write(json.dumps(result.to_json()) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FeatureLog:
    """Pooled features appended to ``path`` as they come, a flushed JSON line per image (``{"path", "features"}``,
    float32 in base64), so a killed run keeps them; :func:`save_features` makes the final file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.file = open(self.path, "a")  # noqa: SIM115

    def write(self, path: str, row: Tensor) -> None:
        data = base64.b64encode(row.detach().float().cpu().contiguous().numpy().tobytes()).decode()
        self.file.write(json.dumps({"path": path, "features": data}) + "\n")
        self.file.flush()

    @staticmethod
    def read(path: str | os.PathLike[str]) -> dict[str, Tensor]:
        """path -> features of a log's whole lines ({} if there is none)."""
        records = (json.loads(line) for line in _whole_lines(Path(path)).decode().splitlines() if line.strip())
        return {r["path"]: torch.frombuffer(bytearray(base64.b64decode(r["features"])), dtype=torch.float32)
                for r in records}  # fmt: skip

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> FeatureLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def save_features(path: str | os.PathLike[str], rows: dict[str, Tensor]) -> None:
    """Pooled features, one row per image in the order of ``rows``, written whole: ``.safetensors`` (tensor
    ``features``, the paths in its metadata ``paths``) or ``.npy`` (the paths in ``<file>.paths.json``)."""
    path = Path(path)
    order = list(rows)
    matrix = torch.stack([rows[p] for p in order]).contiguous() if order else torch.zeros(0, 0)
    with output_path(path) as tmp:
        if path.suffix.lower() == ".npy":
            import numpy as np

            with open(tmp, "wb") as f:
                np.save(f, matrix.numpy())
        else:
            from safetensors.torch import save_file

            save_file({"features": matrix}, str(tmp), metadata={"paths": json.dumps(order)})
    if path.suffix.lower() == ".npy":
        write_text(path.with_name(path.name + ".paths.json"), json.dumps(order) + "\n")


def load_features(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """path -> pooled features of a :func:`save_features` file ({} if there is none)."""
    path = Path(path)
    if not path.exists():
        return {}
    if path.suffix.lower() == ".npy":
        import numpy as np

        order = json.loads(path.with_name(path.name + ".paths.json").read_text())
        matrix = torch.from_numpy(np.load(path))
    else:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            order, matrix = json.loads(f.metadata()["paths"]), f.get_tensor("features")
    return dict(zip(order, matrix, strict=True))
