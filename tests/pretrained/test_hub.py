"""Hub downloads held to the download policy, and every file verified before it is read, against a local server
playing the Hugging Face hub."""

from __future__ import annotations

import hashlib
import io
import socket
import subprocess
import sys
import time

import pytest
import torch
from huggingface_hub import constants

from cutlass_resnet import CorruptWeightsError, WeightsUnavailableError, from_pretrained

from .hubrepo import FILE, REPO, blob, cache_dir, check_parity


def test_second_load_is_a_cache_hit(timm_repo):
    from_pretrained(REPO)
    from_pretrained(REPO)
    assert timm_repo.state.requests[("GET", FILE)] == 1


def test_offline_mode_uses_the_cache_and_says_what_is_missing(timm_repo, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsUnavailableError, match="'model.safetensors' of 'timm/resnet18.tv_in1k'.*HF_HUB_OFFLINE"):
        from_pretrained(REPO)
    assert timm_repo.state.requests[("GET", FILE)] == 0
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    from_pretrained(REPO)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    from_pretrained(REPO)
    assert timm_repo.state.requests[("GET", FILE)] == 1


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupted_cache_is_reported_and_fetched_again(timm_repo, tv18, x, damage):
    from_pretrained(REPO)
    path = blob()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.warns(
        UserWarning, match="snapshots/0{40}/model.safetensors is corrupted .*sha256.*downloading it again"
    ):
        model = from_pretrained(REPO)
    check_parity(model, tv18, x)
    assert timm_repo.state.requests[("GET", FILE)] == 2


def test_hub_serving_the_wrong_bytes_is_refused(timm_repo, tv18):
    data = bytearray(timm_repo.state.repos[REPO].files["model.safetensors"])
    data[-100] ^= 1  # one bit of one weight: same size, valid file, wrong numbers
    timm_repo.state.tampered[f"{REPO}/model.safetensors"] = bytes(data)
    with pytest.warns(UserWarning, match="corrupted"), pytest.raises(CorruptWeightsError, match="refusing to load"):
        from_pretrained(REPO)
    assert timm_repo.state.requests[("GET", FILE)] == 2  # fetched again once, then refused


def test_wrong_sha256_is_refused(timm_repo):
    with pytest.warns(UserWarning), pytest.raises(CorruptWeightsError, match="expected 0000"):
        from_pretrained(REPO, sha256="0" * 64)


def test_a_sha256_prefix_is_not_taken_for_a_digest(timm_repo):
    """A prefix is refused before anything is fetched, rather than called a corrupted file and downloaded twice."""
    with pytest.raises(ValueError, match="takes a whole sha256 digest, 64 hex digits; got '0123abcd'"):
        from_pretrained(REPO, sha256="0123abcd")
    assert not timm_repo.state.requests


def test_unknown_repo(hub):
    with pytest.raises(WeightsUnavailableError, match="'nobody/resnet18'.*RepositoryNotFoundError"):
        from_pretrained("nobody/resnet18")


def test_concurrent_downloads_end_with_one_good_copy(timm_repo):
    timm_repo.state.delay_s = 0.01
    code = f"import cutlass_resnet; cutlass_resnet.from_pretrained({REPO!r})"
    procs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    path = blob()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name
    assert not list(path.parent.glob("*.incomplete"))  # no partial download left behind


@pytest.mark.parametrize("fault", [("stall", -1), ("stall", 100_000), ("close", 100_000), ("close", -1000)])
def test_a_silent_or_dropped_hub_is_given_up_on(timm_repo, monkeypatch, fault):
    """The hub client would retry a silent or dropped server for minutes, and one that promises 1000 bytes more
    than it sends without end (each retry fetches the same bytes again): a clear error soon after the read
    timeout (CUTLASS_RESNET_DOWNLOAD_TIMEOUT) instead."""
    monkeypatch.setenv("CUTLASS_RESNET_DOWNLOAD_TIMEOUT", "1")
    timm_repo.state.faults[FILE] = fault
    timm_repo.state.delay_s = 0.002  # a body that takes a while, so each retry is seen fetching the same bytes
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError, match="could not download 'model.safetensors' of"):
        from_pretrained(REPO)
    assert time.monotonic() - start < 30
    assert not list((cache_dir() / "models--timm--resnet18.tv_in1k").glob("blobs/*.incomplete"))  # nothing partial


def test_an_unreachable_hub_fails_fast_and_a_cached_file_still_loads(timm_repo, monkeypatch, tv18, x):
    from_pretrained(REPO)  # cached
    with socket.socket() as closed:  # a port nobody listens on: connections are refused
        closed.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{closed.getsockname()[1]}"
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    start = time.monotonic()
    check_parity(from_pretrained(REPO), tv18, x)
    with pytest.raises(
        WeightsUnavailableError, match=f"not in the hub cache and the hub cannot be reached at {endpoint}"
    ):
        from_pretrained("timm/resnet34.tv_in1k")
    assert time.monotonic() - start < 10


def test_stale_partial_downloads_are_removed(timm_repo):
    blobs = cache_dir() / "models--timm--resnet18.tv_in1k" / "blobs"
    blobs.mkdir(parents=True)
    stale = blobs / f"{'e' * 64}.1234abcd.incomplete"  # a killed download of a file no longer asked for
    stale.write_bytes(b"half")
    from_pretrained(REPO)
    assert not list(blobs.glob("*.incomplete"))


def test_a_cached_config_that_changed_is_fetched_again(timm_repo, tv18, x):
    from_pretrained(REPO)
    (config,) = (cache_dir() / "models--timm--resnet18.tv_in1k" / "blobs").glob("?" * 40)  # git-sha1 named
    config.write_text(config.read_text().replace("10", "11"))
    with pytest.warns(UserWarning, match="is corrupted"):
        check_parity(from_pretrained(REPO), tv18, x)
    assert timm_repo.state.requests[("GET", f"/{REPO}/resolve/main/config.json")] == 2


def test_offline_with_a_corrupt_cached_file_says_so(timm_repo, monkeypatch):
    from_pretrained(REPO)
    path = blob()
    path.write_bytes(path.read_bytes()[:-100])
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with (
        pytest.warns(UserWarning, match="is corrupted"),
        pytest.raises(
            CorruptWeightsError, match="corrupted and HF_HUB_OFFLINE is set, so it cannot be downloaded again"
        ),
    ):
        from_pretrained(REPO)


def test_a_pickle_on_the_hub_is_refused_with_how_to_convert(timm_repo, tv18):
    buffer = io.BytesIO()
    torch.save(tv18.state_dict(), buffer)
    timm_repo.state.repos[REPO].files["pytorch_model.bin"] = buffer.getvalue()
    with pytest.raises(WeightsUnavailableError, match=r"pytorch_model.bin is not a safetensors file.*never unpickles"):
        from_pretrained(REPO, filename="pytorch_model.bin")
