"""The docs build (mkdocs, warnings as errors), with the API reference from the docstrings and the weights table
from torchvision's enums."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_docs_build_strict(tmp_path):
    if os.environ.get("CI") != "true":
        pytest.importorskip("mkdocs")
        pytest.importorskip("mkdocstrings")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    weights = (tmp_path / "site" / "weights" / "index.html").read_text()
    assert "resnet50-11ad3fa6.pth" in weights and "80.858" in weights and "timm/resnet50.tv2_in1k" in weights
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "fuse_bn" in api and "export_onnx" in api and "dtype" in api


def test_the_weights_table_fits_a_screen():
    """Every row of the weights table, as a reader sees it (link targets hidden), fits in 100 characters, so no
    column (the links last) is pushed off the page at 1920 px."""
    import importlib.util
    import re

    spec = importlib.util.spec_from_file_location("hooks", ROOT / "docs" / "hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    table = hooks.weights_table()
    assert "resnet50-11ad3fa6.pth" in table and "https://huggingface.co/timm/resnet50.tv2_in1k" in table
    for row in table.splitlines():
        seen = re.sub(r"\[([^]]*)\]\([^)]*\)", r"\1", row).replace("**", "")
        assert len(seen) <= 100, seen
