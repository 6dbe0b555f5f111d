"""from_pretrained: timm's and torchvision's checkpoints and our own saves, from folders, files and a local server
playing the Hugging Face hub; every loaded model is compared with the torchvision model holding the weights."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import pytest
import torch
from servers import Repo
from torch.nn.utils.fusion import fuse_conv_bn_weights

import cutlass_resnet
from cutlass_resnet import CorruptWeightsError, WeightsUnavailableError, from_pretrained, save_pretrained

from .hubrepo import REPO, check_parity, safetensors_bytes


@pytest.mark.parametrize("fuse_bn", [None, True])
def test_timm_repo_loads_as_torchvision(timm_repo, tv18, x, fuse_bn):
    model = from_pretrained(REPO, fuse_bn=fuse_bn)
    assert model.fused is bool(fuse_bn) and not model.training and model.fc.out_features == 10
    check_parity(model, tv18, x)
    assert model.pretrained_source == f"hf:{REPO}@main"


def test_arch_from_the_repo_name_when_there_is_no_config(hub, tv18, x):
    hub.state.repos["timm/resnet18.a1_in1k"] = Repo({"model.safetensors": safetensors_bytes(tv18)})
    check_parity(from_pretrained("timm/resnet18.a1_in1k"), tv18, x)


def test_local_file_that_is_not_safetensors_is_refused(tmp_path, tv18):
    folder = save_pretrained(cutlass_resnet.resnet18(num_classes=10), tmp_path / "saved")
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CorruptWeightsError, match=f"refusing to load {path}: its sha256"):
        from_pretrained(folder)
    (folder / "config.json").unlink()  # no hash to check: the header check still refuses it
    with pytest.raises(CorruptWeightsError, match="not a readable safetensors file"):
        from_pretrained(path, arch="resnet18")


def test_file_without_num_batches_tracked_loads(tmp_path, tv18, x):
    """torchvision's older checkpoints, and conversions of them, leave the BatchNorm counters out."""
    from safetensors.torch import save_file

    state_dict = {k: v.contiguous() for k, v in tv18.state_dict().items() if not k.endswith("num_batches_tracked")}
    save_file(state_dict, tmp_path / "model.safetensors")
    for fuse in (None, True):
        check_parity(from_pretrained(tmp_path, arch="resnet18", fuse_bn=fuse), tv18, x)


def test_folding_on_load_rounds_once(timm_repo, tv18):
    model = from_pretrained(REPO, fuse_bn=True, dtype=torch.float16)
    conv, bn = tv18.conv1, tv18.bn1
    w, b = fuse_conv_bn_weights(
        conv.weight.double(), None, bn.running_mean.double(), bn.running_var.double(), bn.eps,
        bn.weight.double(), bn.bias.double(),
    )  # fmt: skip
    assert torch.equal(model.conv1.weight, w.half()) and torch.equal(model.conv1.bias, b.half())


@pytest.mark.parametrize("name", ["weights.pth", "resnet18-ffffffff.pt"])
def test_torchvision_checkpoint_loads_with_its_architecture_read_from_its_shapes(tmp_path, tv18, x, name):
    """A local .pth/.pt state dict loads through from_pretrained like any weights (no arch in its name); a file
    the user names is never judged by its name (only sha256= checks it)."""
    data = io.BytesIO()
    torch.save(tv18.state_dict(), data)
    if name.startswith("resnet18-"):
        name = f"resnet18-{hashlib.sha256(data.getvalue()).hexdigest()[:8]}.pt"
    path = tmp_path / name
    path.write_bytes(data.getvalue())
    model = from_pretrained(path)
    assert not model.fused and model.fc.out_features == 10 and model.pretrained_source == str(path)
    check_parity(model, tv18, x)
    fused = from_pretrained(path, fuse_bn=True, dtype=torch.float64)
    assert fused.fused and fused.fc.weight.dtype == torch.float64
    check_parity(fused.float(), tv18, x)
    (tmp_path / "resnet18-00000000.pth").write_bytes(data.getvalue())  # a name that looks like torchvision's
    assert from_pretrained(tmp_path / "resnet18-00000000.pth").fc.out_features == 10
    (tmp_path / "run-12345678.best.pth").write_bytes(data.getvalue())
    assert from_pretrained(tmp_path / "run-12345678.best.pth").fc.out_features == 10
    with pytest.raises(CorruptWeightsError, match="sha256"):
        from_pretrained(path, sha256="0" * 64)
    assert from_pretrained(path, sha256=hashlib.sha256(data.getvalue()).hexdigest()).fc.out_features == 10
    with pytest.raises(ValueError, match="unknown architecture 'resnet7'"):
        from_pretrained(path, arch="resnet7")


@pytest.mark.parametrize("prefix", ["hf:", "hf-hub:"])
def test_hub_prefixes_and_revisions(timm_repo, tv18, x, prefix, tmp_path, monkeypatch):
    commit = timm_repo.state.repos[REPO].commit
    check_parity(from_pretrained(f"{prefix}{REPO}@{commit}"), tv18, x)
    with pytest.raises(ValueError, match="names revision 'abc' but revision='main'"):
        from_pretrained(f"{prefix}{REPO}@abc", revision="main")
    (tmp_path / "etc").mkdir()  # a hub prefix is never read as a path, even one that exists
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"'\.\./\.\./etc' is not a hub repo id"):
        from_pretrained(f"{prefix}../../etc")


def test_a_timm_repo_s_own_preprocessing_is_kept(timm_repo, tv18):
    timm = pytest.importorskip("timm") if os.environ.get("CI") != "true" else __import__("timm")
    from PIL import Image

    from cutlass_resnet.cli.predict import sample_image
    from cutlass_resnet.pretrained.preprocess import eval_transform

    cfg = {
        "input_size": [3, 160, 160],
        "interpolation": "bicubic",
        "crop_pct": 0.95,
        "mean": [0.5] * 3,
        "std": [0.5] * 3,
    }
    timm_repo.state.repos[REPO].files["config.json"] = json.dumps(
        {"architecture": "resnet18", "num_classes": 10, "pretrained_cfg": cfg}
    ).encode()
    model = from_pretrained(REPO)
    assert model.pretrained_cfg == cfg
    data_config = timm.data.resolve_data_config({}, pretrained_cfg=cfg, use_test_size=True)
    expected_transform = timm.data.create_transform(**data_config)
    with Image.open(sample_image()) as image:
        image = image.convert("RGB")
        ours, theirs = eval_transform(model)(image), expected_transform(image)
    assert ours.shape == theirs.shape == (3, 160, 160)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    again = from_pretrained(save_pretrained(model, Path(os.environ["HF_HUB_CACHE"]).parent / "again"))
    assert again.pretrained_cfg["interpolation"] == "bicubic" and again.pretrained_cfg["crop_pct"] == 0.95


def test_a_local_file_is_never_judged_by_its_name(tmp_path):
    """A folder's model.safetensors that resolves to a file named like a sha256 (a store of blobs of one's own) is
    not the hub cache: its name is no hash check."""
    folder = save_pretrained(cutlass_resnet.resnet18(num_classes=10), tmp_path / "saved")
    blob = tmp_path / ("ab" * 32)
    (folder / "model.safetensors").rename(blob)
    (folder / "model.safetensors").symlink_to(blob)
    config = json.loads((folder / "config.json").read_text())
    del config["sha256"]  # no recorded digest: only the name could mislead
    (folder / "config.json").write_text(json.dumps(config))
    assert from_pretrained(folder).fc.out_features == 10


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"filename": "weights.safetensors"}, WeightsUnavailableError, "the hub has no file 'weights.safetensors'"),
        ({"revision": "v2"}, WeightsUnavailableError, "RevisionNotFoundError"),
        ({"arch": "resnet34"}, RuntimeError, "missing key 'layer1.2.conv1.weight'"),
        ({"arch": "resnet50"}, ValueError, "'layer1.0.conv1.weight' has shape"),
        ({"arch": "vgg16"}, ValueError, "unknown architecture 'vgg16'"),
        ({"num_classes": 1000}, ValueError, "the weights have 10 classes but num_classes=1000"),
    ],
)
def test_bad_requests_get_clear_errors(timm_repo, kwargs, error, match):
    with pytest.raises(error, match=match):
        from_pretrained(REPO, **kwargs)


@pytest.mark.parametrize("safe_serialization", [False, True])
def test_timm_save_for_hf_folders_load(tmp_path, x, safe_serialization):
    """timm's own saves: ``pytorch_model.bin`` (its default, read as tensors only) or ``model.safetensors``, with
    timm's config.json; the folder or the file given, and the result computes as timm's model does."""
    import timm
    from timm.models._hub import save_for_hf

    theirs = timm.create_model("resnet18", num_classes=10).eval()
    save_for_hf(theirs, tmp_path, safe_serialization=safe_serialization)
    weights = tmp_path / ("model.safetensors" if safe_serialization else "pytorch_model.bin")
    with torch.no_grad():
        expected = theirs(x)
        for source in (tmp_path, weights):
            ours = from_pretrained(source)
            assert ours.pretrained_cfg["mean"] == list(theirs.pretrained_cfg["mean"]), source
            torch.testing.assert_close(ours(x), expected, rtol=0, atol=1e-5)
