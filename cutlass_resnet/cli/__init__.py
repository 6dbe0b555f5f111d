"""The command line: a module per command (``add_arguments``, ``run``) and ``main``; the library never imports it."""

from __future__ import annotations

import os
import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """``cutlass-resnet``: Ctrl-C exits 130 quietly from the first instant (torch takes seconds to import), and
    a closed pipe (``cutlass-resnet info --json | head``) ends the output quietly."""
    try:
        from .main import main as run

        return run(argv)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)  # the interpreter flushes stdout once more at exit
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # as a shell reports a command ended by SIGPIPE
