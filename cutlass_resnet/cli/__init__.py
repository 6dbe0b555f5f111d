"""The command line: a module per command (``add_arguments``, ``run``) and ``main``; the library never imports it."""

from .main import main

__all__ = ["main"]
