"""The kernels' C++ is generated from one list (cutlass_resnet/ops/kernels.py): the files in the tree are what the
generator makes, and a stale one is named."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

from cutlass_resnet.ops.kernels import INSTANTIATIONS, KINDS

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "generate_kernels.py"


def generator():
    spec = importlib.util.spec_from_file_location("generate_kernels", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generated_files_are_up_to_date():
    out = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_stale_or_orphaned_file_is_named(tmp_path, monkeypatch):
    module = generator()
    csrc = tmp_path / "csrc"
    shutil.copytree(module.CSRC, csrc)
    monkeypatch.setattr(module, "CSRC", csrc)
    assert module.stale() == []
    first = csrc / INSTANTIATIONS[0].file
    first.write_text(first.read_text().replace("3)", "4)"))
    (csrc / "k80_f16_t256x128_64x3.cu").write_text("// a kernel no longer in the list\n")
    (csrc / "kinds.h").unlink()
    assert sorted(module.stale()) == sorted([first.name, "kinds.h", "k80_f16_t256x128_64x3.cu"])
    assert module.main([]) == 0 and module.stale() == []
    assert not (csrc / "k80_f16_t256x128_64x3.cu").exists()


def test_every_kernel_is_named_for_its_tile_and_says_what_it_mirrors():
    names = [i.name for i in INSTANTIATIONS]
    assert len(set(names)) == len(names) == 23
    for i in INSTANTIATIONS:
        assert f"t{i.tile[0]}x{i.tile[1]}" in i.name and i.kind in {k.name for k in KINDS}
        assert "upstream" in i.mirrors or "generator.py" in i.mirrors
