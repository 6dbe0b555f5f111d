"""The ``cutlass-resnet`` command (also ``python -m cutlass_resnet``): predict, bench, selftest, plan, info, export,
build.

Errors print one line (``--verbose`` adds the traceback). Exit codes: 0 success; 1 a check
failed, or an unexpected error; 2 bad arguments or an unreadable input file; 3 weights that
cannot be had (offline, not found) or are corrupt; 4 the command needs a GPU and none is visible.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback

from .._version import __version__
from ..pretrained import CorruptWeightsError, WeightsUnavailableError
from . import bench, build, export, info, plan, predict, selftest
from .common import EXIT_FAILED, EXIT_NO_GPU, EXIT_USAGE, EXIT_WEIGHTS, NoGPUError, UsageError

__all__ = ["build_parser", "main"]

COMMANDS = {
    "predict": (predict, "top-k ImageNet classes of images (default: a cat photo)"),
    "bench": (bench, "images/s against torchvision eager and torch.compile"),
    "selftest": (selftest, "parity with torchvision; on a GPU, every kernel too"),
    "plan": (plan, "the kernel each conv of a model would run on a GPU, from no weights"),
    "info": (info, "versions, GPU, kernel and weight caches"),
    "export": (export, "torchvision weights to safetensors with model cards"),
    "build": (build, "compile the CUTLASS kernels ahead of time (needs nvcc, no GPU)"),
}


def build_parser() -> argparse.ArgumentParser:
    # -v before the command and after it: the subcommand's default must not overwrite the top level's.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="print the traceback of an error"
    )
    parser = argparse.ArgumentParser(
        prog="cutlass-resnet",
        description="torchvision's ResNet zoo on CUTLASS convolutions.",
        epilog="Exit codes: 0 ok, 1 failed, 2 bad arguments or input, 3 weights unavailable or corrupt, 4 no GPU.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"cutlass-resnet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help) in COMMANDS.items():
        p = sub.add_parser(name, parents=[common], help=help)
        module.add_arguments(p)
        p.set_defaults(func=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.verbose = getattr(args, "verbose", False)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    # The hub client prints each retry and error over several lines; the one-line error below says what failed.
    for handler in logging.getLogger("huggingface_hub").handlers:
        handler.setLevel(logging.ERROR)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        raise  # the reader went away: the entry point ends quietly
    except Exception as exc:  # noqa: BLE001 - every error becomes one line and an exit code
        code = {  # the first match counts: CorruptWeightsError is a ValueError
            WeightsUnavailableError: EXIT_WEIGHTS,
            CorruptWeightsError: EXIT_WEIGHTS,
            NoGPUError: EXIT_NO_GPU,
            UsageError: EXIT_USAGE,
            ValueError: EXIT_USAGE,
            IsADirectoryError: EXIT_USAGE,  # a folder where an output file goes, or the reverse: the user's paths
            NotADirectoryError: EXIT_USAGE,
        }
        status = next((c for kind, c in code.items() if isinstance(exc, kind)), EXIT_FAILED)
        if args.verbose:
            traceback.print_exc()
        text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())  # one line, always
        what = text if status != EXIT_FAILED else f"unexpected error: {type(exc).__name__}: {text}"
        hint = "" if args.verbose else " (--verbose shows the traceback)"
        print(f"cutlass-resnet {args.command}: {what}{hint if status == EXIT_FAILED else ''}", file=sys.stderr)
        return status
