"""torchvision's weight files from a local server playing download.pytorch.org: verified, re-fetched, offline-safe.

The builders use torchvision's own enums; here an enum member is pointed at the local server
(its url only: transforms and categories stay torchvision's), with a file made from a
random-init torchvision model and named with its real sha256 prefix, as torchvision names them.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants
from torch.nn.utils.fusion import fuse_conv_bn_weights
from torchvision.models import ResNet18_Weights

import cutlass_resnet
from cutlass_resnet import CorruptWeightsError, WeightsUnavailableError
from cutlass_resnet.pretrained.download import load_state_dict_from_url

ROOT = Path(__file__).resolve().parents[2]


def gets(server, url: str) -> int:
    return server.state.requests[("GET", url.removeprefix(server.url))]


def test_first_download_then_cache_hit(hub, served, tv_resnet18):
    url, path = served
    for _ in range(2):
        state_dict = load_state_dict_from_url(url, progress=False)
        assert all(torch.equal(state_dict[k], v) for k, v in tv_resnet18.state_dict().items())
    assert gets(hub, url) == 1 and path.exists()
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


def test_corrupted_cache_is_reported_and_fetched_again(hub, served, tv_resnet18):
    url, path = served
    load_state_dict_from_url(url, progress=False)
    path.write_bytes(path.read_bytes()[:-1000])  # truncated
    with pytest.warns(UserWarning, match=f"the cached file {path} is corrupted"):
        state_dict = load_state_dict_from_url(url, progress=False)
    assert torch.equal(state_dict["fc.weight"], tv_resnet18.fc.weight) and gets(hub, url) == 2


def test_download_with_wrong_hash_is_never_kept(hub, served):
    url, path = served
    wrong = path.name.replace(path.name[9:17], "00000000")
    hub.state.tv_files[wrong] = hub.state.tv_files[path.name]
    with pytest.raises(CorruptWeightsError, match="does not match its name's sha256 prefix"):
        load_state_dict_from_url(f"{hub.url}/models/{wrong}", progress=False)
    folder = Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints"
    assert list(folder.iterdir()) == []


def test_missing_file_says_how_to_provide_it(hub):
    with pytest.raises(WeightsUnavailableError, match=r"could not download .*404.*copy it to .*resnet18-12345678.pth"):
        load_state_dict_from_url(f"{hub.url}/models/resnet18-12345678.pth", progress=False)


def test_offline_uses_the_cache_and_never_the_network(hub, served, monkeypatch):
    url, path = served
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsUnavailableError, match=f"{path.name} is not cached and HF_HUB_OFFLINE is set"):
        load_state_dict_from_url(url, progress=False)
    assert gets(hub, url) == 0
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    load_state_dict_from_url(url, progress=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    load_state_dict_from_url(url, progress=False)
    assert gets(hub, url) == 1


def test_concurrent_downloads_end_with_one_good_copy(hub, served, tv_resnet18):
    url, path = served
    hub.state.delay_s = 0.01  # ~45 MB in 64 KiB chunks: both downloads are in flight together
    code = f"from cutlass_resnet.pretrained.download import load_state_dict_from_url as f; f({url!r}, progress=False)"
    procs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert gets(hub, url) == 1  # the second waited for the first's download (a lock) and found it whole
    assert list(path.parent.iterdir()) == [path]
    assert hashlib.sha256(path.read_bytes()).hexdigest().startswith(path.name[9:17])


@pytest.mark.parametrize("weights", ["DEFAULT", "IMAGENET1K_V1", ResNet18_Weights.IMAGENET1K_V1])
def test_builders_load_torchvision_weights(pointed, tv_resnet18, weights):
    model = cutlass_resnet.resnet18(weights=weights, progress=False).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), tv_resnet18(x), rtol=0, atol=1e-5)
    assert model.pretrained_source == "ResNet18_Weights.IMAGENET1K_V1"


def test_builders_fold_then_cast_then_move(pointed, tv_resnet18):
    model = cutlass_resnet.resnet18(weights="DEFAULT", progress=False, fuse_bn=True, dtype=torch.float64, device="cpu")
    assert model.fused and not model.training and model.fc.weight.dtype == torch.float64
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        expected = tv_resnet18.double()(x)
        # Folded in float64 from fp32 weights: only float64 rounding separates the two.
        assert torch.allclose(model(x), expected, rtol=0, atol=1e-10)
    half = cutlass_resnet.resnet18(weights="DEFAULT", fuse_bn=True, dtype=torch.float16)
    conv, bn = tv_resnet18.conv1, tv_resnet18.bn1
    w, b = fuse_conv_bn_weights(
        conv.weight.double(),
        None,
        bn.running_mean.double(),
        bn.running_var.double(),
        bn.eps,
        bn.weight.double(),
        bn.bias.double(),
    )
    # One rounding, from float64 to fp16 (not float64 -> fp32 -> fp16).
    assert torch.equal(half.conv1.weight, w.half()) and torch.equal(half.conv1.bias, b.half())


def test_legacy_pretrained_and_num_classes_conflict(pointed):
    with pytest.warns(UserWarning, match="'pretrained' is deprecated"):
        model = cutlass_resnet.resnet18(pretrained=True, progress=False)
    assert model.pretrained_source == "ResNet18_Weights.IMAGENET1K_V1"
    with pytest.raises(ValueError, match="num_classes"):
        cutlass_resnet.resnet18(weights="DEFAULT", num_classes=10)


@pytest.mark.parametrize("fault", [("stall", -1), ("stall", 100_000), ("close", 100_000), ("drip", 0)])
def test_a_silent_or_dropped_server_is_given_up_on(hub, served, monkeypatch, fault):
    """No answer at all, a body that stops, a connection closed mid-body, a body that drips a byte at a time: a
    clear error soon after the read timeout (CUTLASS_RESNET_DOWNLOAD_TIMEOUT), and no partial file left."""
    url, path = served
    monkeypatch.setenv("CUTLASS_RESNET_DOWNLOAD_TIMEOUT", "1")
    hub.state.faults[url.removeprefix(hub.url)] = fault
    start = time.monotonic()
    why = {
        "stall": "no answer from the server for 1 s",
        "close": "closed after 100000 of",
        "drip": "under the 16 KiB/s a download must keep up after its first 1 s",
    }[fault[0]]
    with pytest.raises(WeightsUnavailableError, match=f"could not download .*{why}"):
        load_state_dict_from_url(url, progress=False)
    assert time.monotonic() - start < 10
    assert list(path.parent.iterdir()) == []


def test_a_bad_timeout_setting_is_named(hub, served, monkeypatch):
    monkeypatch.setenv("CUTLASS_RESNET_DOWNLOAD_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="CUTLASS_RESNET_DOWNLOAD_TIMEOUT must be a number of seconds, got 'soon'"):
        load_state_dict_from_url(served[0], progress=False)


def test_partial_files_of_killed_downloads_are_removed(hub, served, tv_resnet18):
    url, path = served
    path.parent.mkdir(parents=True)
    stale = [path.with_name(f"{path.name}.{i}deadbeef.partial") for i in range(2)]  # torch.hub's and ours
    for p in stale:
        p.write_bytes(b"half a file")
    state_dict = load_state_dict_from_url(url, progress=False)
    assert torch.equal(state_dict["fc.weight"], tv_resnet18.fc.weight)
    assert list(path.parent.iterdir()) == [path]


def test_downloads_get_the_mode_the_umask_gives(hub, served):
    url, path = served
    previous = os.umask(0o027)
    try:
        load_state_dict_from_url(url, progress=False)
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o640


def test_a_checkpoint_that_is_not_one_says_so_without_blaming_a_hash(tmp_path):
    from cutlass_resnet.pretrained.download import load_checkpoint

    (tmp_path / "model.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CorruptWeightsError, match=r"model.pth cannot be loaded as a checkpoint") as info:
        load_checkpoint(tmp_path / "model.pth")
    assert "hash" not in str(info.value)
