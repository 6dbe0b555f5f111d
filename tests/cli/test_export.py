"""``cutlass-resnet export`` and ``scripts/export_weights.py``: what they print, and their errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

import cutlass_resnet
from cutlass_resnet.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_script_errors_are_one_line_and_exit_2(hub, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "export_weights.py"),
            "--arch",
            "resnet18",
            "--weights",
            "V3",
            "--out",
            tmp_path,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (
        proc.stderr.strip()
        == "cutlass-resnet export: unknown weights 'V3': ResNet18_Weights has IMAGENET1K_V1, DEFAULT"
    )
    assert proc.returncode == 2


def test_offline_export_names_the_missing_file(pointed, tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert main(["export", "--arch", "resnet18", "--out", str(tmp_path / "out"), "--variant", "fp32"]) == 3
    err = capsys.readouterr().err
    assert (
        err.startswith("cutlass-resnet export: resnet18-")
        and "HF_HUB_OFFLINE" in err
        and "--weights PATH on the command line" in err
        and "predict" not in err  # the advice is for the command that was run
        and not (tmp_path / "out").exists()
    )


@pytest.mark.parametrize("bad", [["--arch", "vgg16"], ["--arch", "resnet18", "--variant", "int8"]])
def test_bad_arguments(bad, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["export", *bad])
    assert exit_info.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_export_command_prints_the_folders(pointed, tmp_path, capsys):
    assert main(["export", "--arch", "resnet18", "--out", str(tmp_path), "--variant", "fused-fp16"]) == 0
    assert capsys.readouterr().out.splitlines() == [str(tmp_path / "resnet18.tv_in1k.fused-fp16")]


def test_export_never_replaces_a_folder_with_a_file(pointed, tmp_path, capsys):
    """Where the weights file would go there is a folder: exit 2 naming it, and the folder keeps what it held."""
    folder = tmp_path / "resnet18.tv_in1k.fused-fp16" / "model.safetensors"
    folder.mkdir(parents=True)
    (folder / "mine.txt").write_text("keep")
    assert main(["export", "--arch", "resnet18", "--out", str(tmp_path), "--variant", "fused-fp16"]) == 2
    assert "model.safetensors is a folder where a file is written" in capsys.readouterr().err
    assert (folder / "mine.txt").read_text() == "keep"


def test_export_from_a_local_checkpoint(tmp_path, capsys):
    """``--weights`` a torchvision checkpoint: the same three folders, their model computing as torchvision's."""
    torch.manual_seed(0)
    theirs = torchvision.models.resnet18(num_classes=10).eval()
    torch.save(theirs.state_dict(), tmp_path / "my-run.pth")
    args = ["export", "--arch", "resnet18", "--weights", str(tmp_path / "my-run.pth"), "--out", str(tmp_path / "out")]
    assert main(args) == 0
    names = ["resnet18.my-run", "resnet18.my-run.fused-fp16", "resnet18.my-run.fused-bf16"]
    assert capsys.readouterr().out.splitlines() == [str(tmp_path / "out" / n) for n in names]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours = cutlass_resnet.from_pretrained(tmp_path / "out" / names[0])
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=1e-5)


def test_the_old_positional_arch_still_works_and_warns(pointed, tmp_path, capsys):
    with pytest.warns(FutureWarning, match="`export ARCH` is deprecated: use export --arch ARCH"):
        assert main(["export", "resnet18", "--out", str(tmp_path), "--variant", "fused-fp16"]) == 0
    assert capsys.readouterr().out.splitlines() == [str(tmp_path / "resnet18.tv_in1k.fused-fp16")]
