"""save_pretrained and push_to_hub: what is written loads again (in this package and in timm), whole or not at all."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import torch
import torchvision
from safetensors.torch import load_file
from servers import Repo

import cutlass_resnet
from cutlass_resnet import from_pretrained, save_pretrained

from .hubrepo import check_parity


@pytest.mark.parametrize(("fuse", "dtype"), [(False, torch.float32), (True, torch.float16), (True, torch.bfloat16)])
def test_save_pretrained_round_trip(tmp_path, tv18, x, fuse, dtype):
    model = cutlass_resnet.resnet18(num_classes=10).eval()
    cutlass_resnet.load_torchvision_state_dict(model, tv18.state_dict())
    if fuse:
        cutlass_resnet.fuse_bn(model)
    model = model.to(dtype)
    folder = save_pretrained(model, tmp_path / "saved", source="test")
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "resnet18" and config["fused"] is fuse and config["dtype"] == str(dtype)[6:]
    assert (
        config["sha256"]["model.safetensors"] == hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    )
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]  # no temporary files
    loaded = from_pretrained(folder)
    assert loaded.fused is fuse and loaded.fc.weight.dtype == dtype and loaded.pretrained_source == "test"
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    if not fuse:  # an unfused save is torchvision's format: torchvision loads it as it is
        reference = torchvision.models.resnet18(num_classes=10)
        reference.load_state_dict(load_file(folder / "model.safetensors"))
        check_parity(loaded, reference.eval(), x)
    if fuse:
        with pytest.raises(ValueError, match="cannot be unfused"):
            from_pretrained(folder, fuse_bn=False)


def test_push_to_hub_then_from_pretrained(hub, tv18, x):
    model = cutlass_resnet.resnet18(num_classes=10).eval()
    cutlass_resnet.load_torchvision_state_dict(model, tv18.state_dict())
    model = cutlass_resnet.fuse_bn(model).half()
    url = cutlass_resnet.push_to_hub(model, "me/resnet18-fused", source="test")
    repo = hub.state.repos["me/resnet18-fused"]
    assert url.startswith(f"{hub.url}/me/resnet18-fused/commit/") and url.endswith(repo.commit)
    assert sorted(repo.files) == ["README.md", "config.json", "model.safetensors"]
    from huggingface_hub import ModelCard

    assert ModelCard(repo.files["README.md"].decode()).data.library_name == "cutlass_resnet"
    loaded = from_pretrained("me/resnet18-fused", dtype=torch.float32)
    assert loaded.fused
    check_parity(loaded, tv18, x, atol=2e-2)  # fp16 weights, fp32 compute


def test_save_pretrained_replaces_the_pair_together(tmp_path, tv18, x, monkeypatch):
    """Interrupted between the weights and the config, a save leaves the previous model as it was (and whatever
    else the folder holds); a killed save's temporary folder is removed by the next."""
    from cutlass_resnet.pretrained import save

    folder = tmp_path / "export"
    model = cutlass_resnet.resnet18(num_classes=10).eval()
    cutlass_resnet.load_torchvision_state_dict(model, tv18.state_dict())
    save_pretrained(model, folder)
    (folder / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    other = cutlass_resnet.fuse_bn(cutlass_resnet.resnet18(num_classes=10).eval()).half()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(save, "sha256_of", crash)  # after the weights are written, before the config is
    with pytest.raises(OSError, match="disk full"):
        save_pretrained(other, folder)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".export.lock", "export"]
    check_parity(from_pretrained(folder), tv18, x)
    (tmp_path / ".export.dead.tmp").mkdir()  # what a killed save leaves
    save_pretrained(other, folder)
    assert from_pretrained(folder).fused and (folder / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".export.lock", "export"]


def test_saved_files_get_the_mode_the_umask_gives(tmp_path):
    previous = os.umask(0o002)
    try:
        folder = save_pretrained(cutlass_resnet.resnet18(num_classes=3).eval(), tmp_path / "m")
    finally:
        os.umask(previous)
    assert {p.stat().st_mode & 0o777 for p in folder.iterdir()} == {0o664}
    assert folder.stat().st_mode & 0o777 == 0o775


def test_timm_loads_our_unfused_saves_from_a_folder_and_the_hub(hub, tv18, x, tmp_path):
    timm = pytest.importorskip("timm") if os.environ.get("CI") != "true" else __import__("timm")
    ours = cutlass_resnet.resnet18(num_classes=10).eval()
    cutlass_resnet.load_torchvision_state_dict(ours, tv18.state_dict())
    folder = save_pretrained(ours, tmp_path / "export")
    config = json.loads((folder / "config.json").read_text())
    assert config["num_features"] == 512 and config["pretrained_cfg"]["classifier"] == "fc"
    local = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    hub.state.repos["me/resnet18"] = Repo({p.name: p.read_bytes() for p in folder.iterdir()})
    remote = timm.create_model("hf-hub:me/resnet18", pretrained=True).eval()
    with torch.no_grad():
        expected = tv18(x)
        for model in (local, remote):
            torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
