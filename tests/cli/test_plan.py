"""``cutlass-resnet plan ARCH``: every conv's kernel for a named model, built without weights, and the share of
its conv FLOPs on CUTLASS kernels (host-only: the kernels' own can_implement, no GPU)."""

from __future__ import annotations

import json

import pytest

from cutlass_resnet.cli.main import main


@pytest.mark.parametrize("gpu", ["8.0", "9.0"])
def test_a_timm_model_s_plan_as_json(extension, capsys, gpu):
    pytest.importorskip("timm")
    assert main(["plan", "timm:resnet50d", "--gpu-arch", gpu, "--batch-size", "8", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert (plan["convs"], plan["convs_on_kernels"], plan["batch_size"]) == (55, 55, 8)
    assert plan["kernel_share"] > 0.95 and plan["images_per_s"] > 0
    assert sum(e["residual"] for e in plan["entries"]) == 16
    hopper = [e["module"] for e in plan["entries"] if e["kernel"].startswith("sm90")]
    assert bool(hopper) == (gpu == "9.0")


def test_a_torchvision_model_s_plan_names_why_aten_runs_a_conv(extension, capsys):
    """RegNet (built on the CPU: its builder computes its widths with tensors): SE convs of 1x1 images with 26 or 110
    channels leave the kernels, each with its reason, and the share says how much of the work that is."""
    assert main(["plan", "--arch", "regnet_y_400mf", "--gpu-arch", "8.0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("regnet_y_400mf: batch 1 at 224x224, fp16 on 8.0")
    convs, share = out.splitlines()[-1].split(": ")
    assert convs == "85 convs, 39 on CUTLASS kernels" and share.endswith("% of the conv FLOPs")
    assert 50 < float(share.split("%")[0]) < 100
    assert "reference: " in out  # an entry aten runs says why


def test_bad_names_are_usage_errors(capsys):
    assert main(["plan", "nosuch"]) == 2
    assert "unknown model 'nosuch'" in capsys.readouterr().err
    assert main(["plan", "resnet50", "--gpu-arch", "banana"]) == 2
    assert "--gpu-arch takes a compute capability" in capsys.readouterr().err
    assert main(["plan"]) == 2 and "name one model: plan ARCH or plan --arch ARCH" in capsys.readouterr().err


def test_an_int8_plan_names_the_int8_kernels(extension, capsys):
    assert main(["plan", "resnet50", "--gpu-arch", "9.0", "--batch-size", "256", "--dtype", "int8", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert (plan["convs"], plan["convs_on_kernels"], plan["kernel_share"], plan["dtype"]) == (53, 53, 1.0, "int8")
    assert plan["images_per_s"] > 0 and all("_s8_" in e["kernel"] for e in plan["entries"])
    assert main(["plan", "resnext50_32x4d", "--gpu-arch", "8.0", "--dtype", "int8", "--json"]) == 0
    grouped = [e for e in json.loads(capsys.readouterr().out)["entries"] if e["kernel"] is None]
    assert grouped and all("grouped int8 convolution" in e["reason"] for e in grouped)
