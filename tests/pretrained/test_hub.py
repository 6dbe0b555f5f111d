"""from_pretrained / save_pretrained / push_to_hub against a local server playing the Hugging Face hub.

The served files are made here from random-init torchvision models, laid out as timm's
republished torchvision weights (``timm/<arch>.tv_in1k``: torchvision keys, timm's config) or
as our own saves; every loaded model is compared with the torchvision model holding the weights.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torchvision
from huggingface_hub import constants
from safetensors.torch import load_file, save
from servers import Repo
from torch.nn.utils.fusion import fuse_conv_bn_weights

import cutlass_resnet
from cutlass_resnet import CorruptWeightsError, WeightsUnavailableError, from_pretrained, save_pretrained
from cutlass_resnet.testing import torchvision_model_with_statistics

REPO = "timm/resnet18.tv_in1k"
FILE = f"/{REPO}/resolve/main/model.safetensors"


@pytest.fixture(scope="module")
def tv18():
    """torchvision resnet18 with non-trivial BatchNorm statistics (so folding is exercised), 10 classes."""
    return torchvision_model_with_statistics("resnet18", seed=5, num_classes=10)


@pytest.fixture
def x():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def safetensors_bytes(model: torch.nn.Module) -> bytes:
    return save({k: v.detach().contiguous() for k, v in model.state_dict().items()})


@pytest.fixture
def timm_repo(hub, tv18):
    """``timm/resnet18.tv_in1k`` as timm publishes it: torchvision keys, timm's config.json."""
    config = {"architecture": "resnet18", "num_classes": 10, "pretrained_cfg": {"tag": "tv_in1k"}}
    hub.state.repos[REPO] = Repo(
        {"model.safetensors": safetensors_bytes(tv18), "config.json": json.dumps(config).encode()}
    )
    return hub


def cache_dir() -> Path:
    return Path(constants.HF_HUB_CACHE)


def blob() -> Path:
    (path,) = (cache_dir() / "models--timm--resnet18.tv_in1k" / "blobs").glob("?" * 64)
    return path


def check_parity(model, tv18, x, atol=1e-5):
    with torch.no_grad():
        expected = tv18(x)
        assert torch.allclose(model(x.to(model.fc.weight.dtype)).float(), expected, rtol=0, atol=atol)


@pytest.mark.parametrize("fuse_bn", [None, True])
def test_timm_repo_loads_as_torchvision(timm_repo, tv18, x, fuse_bn):
    model = from_pretrained(REPO, fuse_bn=fuse_bn)
    assert model.fused is bool(fuse_bn) and not model.training and model.fc.out_features == 10
    check_parity(model, tv18, x)
    assert model.pretrained_source == f"hf:{REPO}@main"


def test_arch_from_the_repo_name_when_there_is_no_config(hub, tv18, x):
    hub.state.repos["timm/resnet18.a1_in1k"] = Repo({"model.safetensors": safetensors_bytes(tv18)})
    check_parity(from_pretrained("timm/resnet18.a1_in1k"), tv18, x)


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


def test_unknown_repo(hub):
    with pytest.raises(WeightsUnavailableError, match="'nobody/resnet18'.*RepositoryNotFoundError"):
        from_pretrained("nobody/resnet18")


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


def test_local_file_that_is_not_safetensors_is_refused(tmp_path, tv18):
    folder = save_pretrained(cutlass_resnet.resnet18(num_classes=10), tmp_path / "saved")
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CorruptWeightsError, match=f"refusing to load {path}: its sha256"):
        from_pretrained(folder)
    (folder / "config.json").unlink()  # no hash to check: the header check still refuses it
    with pytest.raises(CorruptWeightsError, match="not a readable safetensors file"):
        from_pretrained(path, arch="resnet18")


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


def test_concurrent_downloads_end_with_one_good_copy(timm_repo):
    timm_repo.state.delay_s = 0.01
    code = f"import cutlass_resnet; cutlass_resnet.from_pretrained({REPO!r})"
    procs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    path = blob()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name
    assert not list(path.parent.glob("*.incomplete"))  # no partial download left behind


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


@pytest.mark.parametrize(
    "config,match",
    [
        (b"{not json", r"config.json of 'timm/resnet18.tv_in1k' \(.*\) is not JSON"),
        (b'{"architecture": "resnet18", "fused": "false"}', r"'fused' must be true or false, got 'false'"),
        (b'{"sha256": ["abc"]}', r"'sha256' must be an object of file names and sha256 hex digests"),
        (b'{"sha256": {"model.safetensors": "abc"}}', r"sha256\['model.safetensors'\] must be a sha256 hex digest"),
        (b'{"num_classes": "ten"}', r"'num_classes' must be a whole number from 1 to 1000000, got 'ten'"),
        (b'{"num_classes": 100000000000000000000000000000}', r"'num_classes' must be a whole number from 1 to"),
        (b'{"pretrained_cfg": {"mean": "abc"}}', r"'pretrained_cfg.mean' must be three numbers, .*got 'abc'"),
        (b'{"pretrained_cfg": {"input_size": [3, 0, 0]}}', r"'pretrained_cfg.input_size' must be \[3, height"),
        (b'{"pretrained_cfg": {"input_size": [3, 200000, 200000]}}', r"height and width from 1 to 4096"),
        (b'{"pretrained_cfg": {"crop_pct": -1}}', r"'pretrained_cfg.crop_pct' must be a number above 0, at most 1"),
        (b'{"pretrained_cfg": {"std": [0.2, 0, 0.2]}}', r"'pretrained_cfg.std' must be three numbers above 0"),
        (b"[1, 2]", r"holds list, not a JSON object"),
    ],
)
def test_a_config_the_hub_serves_wrong_is_named(timm_repo, config, match):
    timm_repo.state.repos[REPO].files["config.json"] = config
    with pytest.raises(CorruptWeightsError, match=match):
        from_pretrained(REPO)


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


def test_model_cards_are_huggingface_hub_model_cards(tmp_path):
    from huggingface_hub import ModelCard

    from cutlass_resnet.pretrained.card import model_card

    config = {"architecture": "resnet50", "fused": True, "dtype": "float16", "source": "ResNet50_Weights.IMAGENET1K_V2",
              "num_classes": 1000, "library_version": "0", "sha256": {"model.safetensors": "0" * 64}}  # fmt: skip
    card = ModelCard(model_card(config, "how"))
    assert card.data.library_name == "cutlass_resnet" and card.data.pipeline_tag == "image-classification"
    assert card.data.base_model == "timm/resnet50.tv2_in1k" and card.data.license == "bsd-3-clause"
    assert "acc@1 80.858" in card.text and "loads in cutlass-resnet only" in card.text


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
