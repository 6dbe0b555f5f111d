"""``cutlass-resnet predict``: top-k ImageNet classes of images with torchvision's, the hub's or local weights."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import torch.distributed
from torch import Tensor

from .._io import output_path, write_text
from ..models import ResNet, is_quantized, list_models, quantize
from ..nn.quantized import CALIBRATION_METHODS
from ..ops import library
from ..predict import (
    IMAGE_EXTENSIONS,
    OUTPUT_VERSION,
    FeatureLog,
    Result,
    Writer,
    classify,
    done_paths,
    expand_paths,
    load_features,
    read_image,
    read_results,
    save_features,
)
from ..pretrained.preprocess import eval_transform, num_classes_of
from .common import DTYPES, EXIT_OK, NoGPUError, UsageError, check_output_file, load_model

__all__ = ["add_arguments", "run", "sample_image"]


def sample_image() -> Path:
    """The photo shipped with the package: scikit-image's "Chelsea the cat" (CC0), see data/README.md."""
    return Path(str(resources.files("cutlass_resnet") / "data" / "chelsea.jpg"))


def _open_images(paths: list[Path]) -> list[Any]:
    """Every image decoded to RGB, before any weights are fetched: a bad path fails fast."""
    from PIL import Image, UnidentifiedImageError

    images = []
    for path in paths:
        if not path.exists():
            raise UsageError(f"no such image: {path}")
        try:
            images.append(read_image(path))
        except Image.DecompressionBombError as exc:
            raise UsageError(f"{path} is too large to decode safely ({exc}); resize it first") from None
        except (UnidentifiedImageError, OSError) as exc:
            raise UsageError(f"cannot read {path} as an image: {exc}") from None
    return images


#: --decode's choices: the decoders of :mod:`cutlass_resnet.images` by their command-line names (auto: gpu where
#: the model runs on a GPU, else cpu).
DECODE = {"auto": None, "cpu": "torchvision", "gpu": "nvjpeg", "pil": "pil"}


def default_workers(images: int, batch_size: int) -> int:
    """Decoding processes for a run: none for a single batch (a process costs more to start than it saves),
    else one per CPU core this process may use but one (the one that feeds the model), up to 8."""
    if images <= batch_size:
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores - 1, 8))


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise NoGPUError("--device cuda: no CUDA GPU is visible (use --device cpu or auto)")
    return torch.device(name)


def run(args: argparse.Namespace) -> int:
    """Classify the images: a table or JSON on stdout, or with --output, JSON Lines or CSV streamed into a file."""
    if args.batch_size < 1 or (args.workers is not None and args.workers < 0):
        raise UsageError("--batch-size must be >= 1 and --workers >= 0")
    if args.output is None and (args.features or args.resume or args.ray is not None):
        raise UsageError("--features, --resume and --ray go with --output")
    if (args.dtype == "int8") != (args.calibrate is not None):
        raise UsageError(
            "--dtype int8 goes with --calibrate FOLDER (a few hundred images of the task's data set the int8 scales)"
        )
    if args.dtype == "int8" and args.ray is not None:
        raise UsageError("--ray runs fp32, fp16 or bf16 models: its workers load the weights, not a calibration")
    if args.ray is not None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError("--ray runs the job on a Ray cluster: start it once, not under torchrun")
    for option, path in (("--output", args.output), ("--features", args.features)):
        if path is not None:
            check_output_file(path, option)
    if args.features is not None and Path(args.features).suffix.lower() not in (".safetensors", ".npy"):
        raise UsageError(f"--features {args.features}: the file is a .safetensors or a .npy")
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        torch.distributed.init_process_group("nccl" if args.device != "cpu" and torch.cuda.is_available() else "gloo")
        if torch.cuda.is_available() and args.device != "cpu":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    try:
        device = _device(args.device)
        if args.decode == "gpu" and device.type != "cuda":
            raise NoGPUError("--decode gpu decodes on the GPU the model runs on, and none is used (--decode cpu)")
        args.decoder = DECODE[args.decode] or ("nvjpeg" if device.type == "cuda" else "torchvision")
        int8 = args.dtype == "int8"
        dtype = (
            torch.float32
            if int8
            else DTYPES.get(args.dtype) or (torch.float16 if device.type == "cuda" else torch.float32)
        )
        try:
            paths = expand_paths(args.images) if args.images else [str(sample_image())]
        except FileNotFoundError as exc:  # an @list file that is not there
            raise UsageError(f"no such list of images: {exc.filename}") from None
        if not paths:
            raise UsageError(
                f"no images found in {' '.join(args.images)} (folders are searched for {', '.join(IMAGE_EXTENSIONS)})"
            )
        if args.workers is None:
            args.workers = default_workers(len(paths), args.batch_size)
        if args.output is None:
            _open_images([Path(p) for p in paths])  # a bad path fails fast, before any weights are fetched
        model, arch = load_model(args.weights, args.arch, args.fuse, dtype)
        if int8:
            model, dtype = _quantized(model, args, device), torch.int8
        record = run_record(args, model, arch) if args.output is not None else None
        model = model.to(device=device, memory_format=torch.channels_last)  # filters as the kernels read them
        classes = num_classes_of(model)
        if not 1 <= args.topk <= classes:
            raise UsageError(f"--topk must be between 1 and {classes} (the model's class count), got {args.topk}")
        if args.output is not None:
            return _to_file(args, model, paths, distributed, record)
        results = list(classify(paths, model, topk=args.topk, batch_size=args.batch_size, workers=args.workers,
                                decoder=args.decoder))  # fmt: skip
        _print(args, model, arch, device, dtype, results)
        return EXIT_OK
    finally:
        if distributed:
            torch.distributed.destroy_process_group()


def _quantized(model: torch.nn.Module, args: argparse.Namespace, device: torch.device) -> torch.nn.Module:
    """``model`` quantized to int8 from the images under ``--calibrate`` (the model's own preprocessing)."""
    if not isinstance(model, ResNet):
        raise UsageError(f"--dtype int8 quantizes this package's ResNets ({', '.join(list_models())}), not {args.arch}")
    paths = expand_paths([args.calibrate])
    if not paths:
        raise UsageError(f"--calibrate {args.calibrate}: no images found (a folder of the task's images)")
    transform = eval_transform(model)
    try:
        images = [transform(read_image(p)) for p in paths]
    except (OSError, ValueError) as exc:
        raise UsageError(f"--calibrate {args.calibrate}: cannot read an image: {exc}") from None
    batches = [torch.stack(images[i : i + args.batch_size]) for i in range(0, len(images), args.batch_size)]
    try:
        return quantize(model.to(device), batches, args.calibration_method)
    except ImportError as exc:  # the histogram calibrators' library is an extra
        raise UsageError(str(exc)) from None


def _print(args, model, arch, device, dtype, results) -> None:
    if device.type != "cuda":
        kernel_path = "reference convolution (CPU)"
    elif library.loaded():  # a conv no kernel takes still falls back, with its own warning
        kernel_path = "CUTLASS kernels"
    else:
        kernel_path = f"aten's convolution: CUTLASS kernels unavailable ({library.load_error()})"
    info = dict(
        arch=arch,
        weights=getattr(model, "pretrained_source", None),
        device=str(device),
        dtype=str(dtype)[6:],
        fused=getattr(model, "fused", False),
    )
    predictions = [{k: v for k, v in r.to_json().items() if k != "version"} for r in results]
    if args.json:
        print(json.dumps(dict(version=OUTPUT_VERSION, model=info, predictions=predictions), indent=1))
        return
    form = f"{'fused ' if info['fused'] else ''}{info['dtype']}"
    print(f"{arch} ({info['weights']}), {form} on {device}, {kernel_path}")
    for result in predictions:
        print(result["path"])  # one that could not be read was said on stderr
        for rank, entry in enumerate(result.get("top", []), 1):
            print(f"  {rank:>2}. {entry['probability']:7.2%}  {entry['label']}")


def _part(path: Path, rank: int, world: int) -> Path:
    """Rank ``rank``'s results under torchrun, JSON Lines beside --output."""
    return path.with_name(f".{path.name}.part-{rank}-of-{world}.jsonl")


def _log(path: Path, rank: int, world: int) -> Path:
    """Where rank ``rank`` appends features as it goes, beside the --features file."""
    return path.with_name(f".{path.name}.rows-{rank}-of-{world}.jsonl")


def _held(args: argparse.Namespace, output: Path, world: int) -> tuple[dict[str, Result], dict[str, Tensor]]:
    """The results every rank's part holds (whole lines) and the features every rank's log holds, with, resuming,
    what --output and the --features file held before; the same on every rank."""
    outputs = ([output] if args.resume else []) + ([_part(output, r, world) for r in range(world)] if world > 1 else [])
    held = {r.path: r for path in outputs for r in read_results(path)}
    rows: dict[str, Tensor] = {}
    if args.features is not None:
        features = Path(args.features)
        rows.update(load_features(features) if args.resume else {})
        for rank in range(world):
            rows.update(FeatureLog.read(_log(features, rank, world)))
    return held, rows


RUN_RECORD_VERSION = 1


def run_record(args: argparse.Namespace, model, arch: str) -> dict[str, Any]:
    """What a run is, as ``--resume`` must find it again: the model, its weights (the sha256 of every tensor the
    model holds, in its dtype), the dtype, top-k, the decoder and the features file."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return {
        "version": RUN_RECORD_VERSION,
        "arch": arch,
        "weights": getattr(model, "pretrained_source", None),
        "weights_sha256": digest.hexdigest(),
        "dtype": "int8" if is_quantized(model) else str(next(model.parameters()).dtype).removeprefix("torch."),
        "fused": getattr(model, "fused", False),
        "topk": args.topk,
        "decoder": args.decoder,
        "features": Path(args.features).name if args.features is not None else None,
    }


def _record_path(output: Path) -> Path:
    """Beside --output: what the run that wrote it was (:func:`run_record`)."""
    return output.with_name(output.name + ".run.json")


def _check_resume(output: Path, record: dict[str, Any]) -> None:
    """Refuse, before anything is changed, a --resume of an output that is not a predict output or was written by
    a different run, naming the difference."""
    if not output.exists() or (output.is_file() and output.stat().st_size == 0):
        return
    if not output.is_file():
        raise UsageError(f"--resume {output}: only a regular file can be resumed (this is a device or a pipe)")
    try:
        held = json.loads(_record_path(output).read_text())
    except (OSError, ValueError):
        raise UsageError(
            f"--resume {output}: not recognised as a cutlass-resnet predict output (no readable "
            f"{_record_path(output).name} beside it); nothing was changed: name another --output, or drop --resume "
            "to overwrite it"
        ) from None
    differences = [
        f"{key} {held.get(key)!r} there, {value!r} now" for key, value in record.items() if held.get(key) != value
    ]
    if differences:
        raise UsageError(
            f"--resume {output}: it holds another run's results ({'; '.join(differences)}); nothing was changed: "
            "resume with the same options, name another --output, or drop --resume to overwrite it"
        )


def _on_ray(args: argparse.Namespace, arch: str, todo: list[str], features: bool, dtype: str, on_image) -> Iterator:
    """The results of ``todo`` from Predictor actors on the Ray cluster ``--ray`` names (``auto``, an address, or
    a local instance when none is given), in input order."""
    try:
        import ray
    except ImportError:
        raise UsageError("--ray needs Ray Data: pip install 'ray[data]'") from None
    from ..ray_data import classify_on_ray

    logging.getLogger("ray.data").setLevel(logging.WARNING)
    if not ray.is_initialized():
        ray.init(address=None if args.ray == "local" else args.ray, include_dashboard=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    for result in classify_on_ray(todo, arch, args.weights, topk=args.topk, batch_size=args.batch_size,
                                  features=features, device=args.device, dtype=getattr(torch, dtype),
                                  fuse_bn=args.fuse, decoder=args.decoder):  # fmt: skip
        on_image(1)
        yield result


def _to_file(args: argparse.Namespace, model, paths: list[str], distributed: bool, record: dict[str, Any]) -> int:
    """Stream results into --output (this rank's part file under torchrun, merged by rank 0 at the end), skipping
    with --resume what the output already holds; an unreadable image is an error line and a line on stderr. What
    the run is goes beside the output (``<output>.run.json``), so that a resume of another run is refused."""
    from tqdm.auto import tqdm

    output = Path(args.output)
    rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if distributed else (0, 1)
    target = _part(output, rank, world) if distributed else output
    features = Path(args.features) if args.features is not None else None
    if args.resume:
        _check_resume(output, record)
    if rank == 0 and (not output.exists() or output.is_file()):  # not beside a device or a pipe
        write_text(_record_path(output), json.dumps(record, indent=1) + "\n")
    if args.resume:
        done_paths(target)  # cuts a line a killed run left half-written
    else:  # the output itself is truncated when opened (a link's target, a device in place), never removed
        for path in (*([target] if distributed else []), *([_log(features, rank, world)] if features else [])):
            path.unlink(missing_ok=True)
    held, held_rows = _held(args, output, world) if args.resume else ({}, {})
    if distributed:
        torch.distributed.barrier()  # every rank has read the parts before any appends to its own
    todo = [p for p in paths if p not in held or (features and held[p].error is None and p not in held_rows)]
    batches = [todo[i : i + args.batch_size] for i in range(0, len(todo), args.batch_size)]
    todo = [p for batch in batches[rank::world] for p in batch]  # whole batches, so every rank's match one process
    stats, start = {}, time.perf_counter()
    bar = tqdm(total=len(todo), unit="img", desc=f"rank {rank}" if distributed else "classifying", disable=None)
    with contextlib.ExitStack() as stack:
        stack.enter_context(bar)
        writer = stack.enter_context(Writer(target, args.topk, append=args.resume))
        log = stack.enter_context(FeatureLog(_log(features, rank, world))) if features else None
        if args.ray is not None:
            results = _on_ray(args, record["arch"], todo, features is not None, record["dtype"], bar.update)
        else:
            results = classify(todo, model, topk=args.topk, batch_size=args.batch_size, workers=args.workers,
                               features=features is not None, decoder=args.decoder, on_batch=bar.update,
                               stats=stats)  # fmt: skip
        for result in results:
            if log is not None and result.error is None:
                log.write(result.path, result.features)  # before its line: a kept line has its features kept
            if result.path not in held:  # (else redone only for its features)
                writer.write(result)
            if result.error is not None:
                print(f"cutlass-resnet predict: skipped {result.path}: {result.error}", file=sys.stderr, flush=True)
    seconds, count = time.perf_counter() - start, stats.get("images", 0) + stats.get("errors", 0)
    where = f"{args.workers} worker{'s' if args.workers > 1 else ''}" if args.workers else "this process"
    print(
        f"cutlass-resnet predict: {count} images ({stats.get('errors', 0)} could not be read) in {seconds:.1f} s, "
        f"{count / max(seconds, 1e-9):.1f} images/s; model {stats.get('model_s', 0):.1f} s, transfer "
        f"{stats.get('transfer_s', 0):.1f} s, decode "
        f"{stats.get('decode_s', 0):.1f} s in {where}, waiting for decoded images {stats.get('wait_s', 0):.1f} s"
        + (f" [rank {rank} of {world}]" if distributed else ""),
        file=sys.stderr,
    )
    if distributed:
        torch.distributed.barrier()
    if rank == 0:
        _finish(args, output, paths, world)
    if distributed:
        torch.distributed.barrier()
    return EXIT_OK


def _finish(args: argparse.Namespace, output: Path, paths: list[str], world: int) -> None:
    """Rank 0, at the end: under torchrun, what --output held and every rank's part into --output in input order,
    written whole; the features file from what it held and every log, in input order; then parts and logs go."""
    held, rows = _held(args, output, world)
    if world > 1:
        with output_path(output) as tmp, Writer(tmp, args.topk, csv_format=output.suffix.lower() == ".csv") as writer:
            for path in paths:
                if path in held:
                    writer.write(held[path])
    if args.features is not None:
        save_features(Path(args.features), {p: rows[p] for p in paths if p in rows})
    for rank in range(world):
        if world > 1:
            _part(output, rank, world).unlink(missing_ok=True)
        if args.features is not None:
            _log(Path(args.features), rank, world).unlink(missing_ok=True)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "images",
        nargs="*",
        metavar="PATH",
        help="images, folders (recursive), @list.txt files (a path a line) or globs (default: the sample photo)",
    )
    p.add_argument(
        "--arch",
        help=f"{', '.join(list_models())} (default: resnet50, or what the weights file says); or any torchvision "
        "classification model, or timm:NAME (needs timm), converted onto the kernels",
    )
    p.add_argument(
        "--weights",
        default="DEFAULT",
        help="DEFAULT, a torchvision weights name, a file or folder, or hf:REPO[@REV] (or hf-hub:REPO[@REV])",
    )
    p.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto (default): the GPU if one is visible"
    )
    p.add_argument(
        "--dtype",
        choices=["auto", *DTYPES, "int8"],
        default="auto",
        help="auto: fp16 on a GPU, fp32 on the CPU; int8 (with --calibrate): our ResNets quantized",
    )
    p.add_argument("--calibrate", metavar="FOLDER", help="images that set the int8 scales (a few hundred)")
    p.add_argument(
        "--calibration-method",
        choices=CALIBRATION_METHODS,
        default="entropy",
        help="how --calibrate sets each activation's range: entropy (default, TensorRT's), percentile or max",
    )
    p.add_argument("--fuse", action=argparse.BooleanOptionalAction, default=True, help="fold BatchNorm (default)")
    p.add_argument("--topk", type=int, default=5, help="classes per image (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--output", help="stream results into this file: JSON Lines, or CSV for a .csv (unreadable images too)"
    )
    p.add_argument("--batch-size", type=int, default=32, help="images per forward (default 32)")
    p.add_argument(
        "--workers",
        type=int,
        help="processes that decode images (default: one per CPU core but one, up to 8, when there is more than a "
        "batch; else 0, this process)",
    )
    p.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="run on a Ray cluster (auto, or ADDRESS; a local instance when none is given), into --output",
    )
    p.add_argument(
        "--decode",
        choices=list(DECODE),
        default="auto",
        help="gpu: JPEGs batched through nvJPEG on the model's GPU; cpu: torchvision.io in the workers, normalised "
        "where the model runs; pil: 0.1.0's; auto (default): gpu on a GPU, else cpu",
    )
    p.add_argument("--features", help="also write each image's pooled features here (.safetensors or .npy)")
    p.add_argument("--resume", action="store_true", help="skip the paths --output already holds, and append")
