"""``cutlass-resnet predict`` over folders into files: one process, torchrun on gloo, killed and resumed."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import torchvision_alone

from cutlass_resnet.predict import expand_paths, load_features, read_results

PREDICT = [sys.executable, "-m", "cutlass_resnet", "predict"]


def predict(*args, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*PREDICT, *map(str, args)], capture_output=True, text=True, timeout=timeout, **kwargs)


@pytest.fixture(scope="module")
def one_process(ten_classes, image_folder, tmp_path_factory):
    """The folder classified by one process into JSON Lines and .safetensors features, and its stderr."""
    out = tmp_path_factory.mktemp("one")
    proc = predict(image_folder, "--weights", ten_classes[1], "--topk", 10, "--batch-size", 8, "--workers", 2,
                   "--output", out / "out.jsonl", "--features", out / "features.safetensors")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return out, proc.stderr


def test_a_folder_gives_a_line_per_image_and_one_for_the_corrupt_file(one_process, ten_classes, image_folder):
    out, stderr = one_process
    lines = [json.loads(line) for line in (out / "out.jsonl").read_text().splitlines()]
    assert len(lines) == 41 and [line["path"] for line in lines] == expand_paths([image_folder])
    (broken,) = [line for line in lines if "error" in line]
    assert broken["path"] == str(image_folder / "broken.jpg") and set(broken) == {"version", "path", "error"}
    assert f"skipped {image_folder / 'broken.jpg'}: " in stderr and "Traceback" not in stderr
    assert "41 images (1 could not be read)" in stderr and "images/s; model " in stderr and "decode " in stderr
    for line in lines:
        if "error" in line:
            continue
        probabilities, _ = torchvision_alone(ten_classes[0], line["path"])
        assert [t["index"] for t in line["top"]] == probabilities.argsort(descending=True).tolist()
        ours = torch.tensor([t["probability"] for t in line["top"]])
        # torchvision.io and a uint8 resize against PIL's: each pixel at most one level apart
        torch.testing.assert_close(ours, probabilities.sort(descending=True).values, atol=1e-3, rtol=0)


def test_features_rows_are_the_pooled_features(one_process, ten_classes, image_folder):
    rows = load_features(one_process[0] / "features.safetensors")
    assert list(rows) == [p for p in expand_paths([image_folder]) if not p.endswith("broken.jpg")]
    for path, row in rows.items():
        _, pooled = torchvision_alone(ten_classes[0], path)
        assert row.shape == (512,)
        torch.testing.assert_close(row, pooled, atol=2e-3, rtol=1e-3)  # the decoders' one level, as above


def test_csv_output(ten_classes, image_folder, tmp_path):
    proc = predict(image_folder, "--weights", ten_classes[1], "--topk", 3, "--output", tmp_path / "out.csv")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader((tmp_path / "out.csv").read_text().splitlines()))
    assert len(rows) == 41 and list(rows[0]) == ["path", "error"] + [
        f"{k}_{n}" for n in (1, 2, 3) for k in ("index", "label", "probability")
    ]
    broken = [r for r in rows if r["error"]]
    assert [r["path"] for r in broken] == [str(image_folder / "broken.jpg")] and broken[0]["label_1"] == ""
    for row in rows[1:4]:
        probabilities, _ = torchvision_alone(ten_classes[0], row["path"])
        assert int(row["index_1"]) == int(probabilities.argmax()) and row["label_1"] == f"class {row['index_1']}"
        assert abs(float(row["probability_1"]) - float(probabilities.max())) < 1e-3  # decoders: one level apart


def test_torchrun_on_two_processes_writes_what_one_process_writes(one_process, ten_classes, image_folder, tmp_path):
    """Each rank classifies whole batches of the shared list (gloo on the CPU), rank 0 merges the parts in input
    order: the same file, byte for byte, and the same features."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "cutlass_resnet", "predict", str(image_folder), "--weights", str(ten_classes[1]), "--topk", "10",
               "--batch-size", "8", "--workers", "2", "--output", str(tmp_path / "out.jsonl"),
               "--features", str(tmp_path / "features.npy")]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "[rank 0 of 2]" in proc.stderr and "[rank 1 of 2]" in proc.stderr
    assert (tmp_path / "out.jsonl").read_bytes() == (one_process[0] / "out.jsonl").read_bytes()
    expected = load_features(one_process[0] / "features.safetensors")
    paths = json.loads((tmp_path / "features.npy.paths.json").read_text())
    assert paths == list(expected)
    assert np.array_equal(np.load(tmp_path / "features.npy"), torch.stack(list(expected.values())).numpy())
    names = ["features.npy", "features.npy.paths.json", "out.jsonl", "out.jsonl.run.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == names  # the parts and logs gone; the run's record kept
    record = json.loads((tmp_path / "out.jsonl.run.json").read_text())
    alone = json.loads((one_process[0] / "out.jsonl.run.json").read_text())
    assert record == {**alone, "features": "features.npy"}


def test_a_killed_run_resumes_without_duplicates(one_process, ten_classes, image_folder, tmp_path):
    out = tmp_path / "out.jsonl"
    args = [image_folder, "--weights", ten_classes[1], "--topk", 10, "--batch-size", 4, "--output", out,
            "--features", tmp_path / "features.safetensors"]  # fmt: skip
    proc = subprocess.Popen([*PREDICT, *map(str, args)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while (not out.exists() or out.read_text().count("\n") < 8) and proc.poll() is None:
        assert time.monotonic() < deadline, "no output after 300 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    kept = out.read_text().count("\n")
    assert 8 <= kept < 41, "the run ended before it could be killed midway"
    with open(out, "a") as f:
        f.write('{"path": "' + str(image_folder))  # as if killed mid-line
    again = predict(*args, "--resume")
    assert again.returncode == 0, again.stderr
    assert f"{41 - kept} images" in again.stderr
    assert out.read_text() == (one_process[0] / "out.jsonl").read_text()
    rows = load_features(tmp_path / "features.safetensors")
    expected = load_features(one_process[0] / "features.safetensors")
    assert list(rows) == list(expected)
    for path, row in rows.items():
        torch.testing.assert_close(row, expected[path], atol=1e-5, rtol=1e-5)
    third = predict(*args, "--resume")
    assert third.returncode == 0 and "0 images" in third.stderr and out.read_text().count("\n") == 41


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--features", "f.safetensors"], "--features, --resume and --ray go with --output"),
        (["--output", "o.jsonl", "--features", "f.pt"], "the file is a .safetensors or a .npy"),
        (["--output", "o.jsonl", "--batch-size", "0"], "--batch-size must be >= 1"),
    ],
)
def test_bad_options_are_usage_errors(args, message, tmp_path):
    proc = predict(*args, cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


@pytest.fixture
def three_images(tmp_path):
    from PIL import Image

    from cutlass_resnet.cli.predict import sample_image

    folder = tmp_path / "three"
    folder.mkdir()
    with Image.open(sample_image()) as photo:
        for i in range(3):
            photo.convert("RGB").rotate(10 * i).save(folder / f"img{i}.png")
    return folder


def test_a_resume_of_another_run_or_of_a_file_not_ours_changes_nothing(ten_classes, three_images, tmp_path):
    """--resume refuses, naming the difference, an output written with other options (here --topk), and refuses a
    file it cannot recognise as a predict output; neither file is touched."""
    out = tmp_path / "out.csv"
    first = predict(three_images, "--weights", ten_classes[1], "--topk", 3, "--output", out)
    assert first.returncode == 0, first.stderr
    record = json.loads((tmp_path / "out.csv.run.json").read_text())
    assert record["topk"] == 3 and record["arch"] == "resnet18" and len(record["weights_sha256"]) == 64
    before = out.read_bytes()
    again = predict(three_images, "--weights", ten_classes[1], "--topk", 5, "--output", out, "--resume")
    assert again.returncode == 2 and "topk 3 there, 5 now" in again.stderr and out.read_bytes() == before
    notes = tmp_path / "notes.jsonl"
    notes.write_text("my own notes, no final newline")
    mine = predict(three_images, "--weights", ten_classes[1], "--output", notes, "--resume")
    assert mine.returncode == 2 and "not recognised as a cutlass-resnet predict output" in mine.stderr
    assert notes.read_text() == "my own notes, no final newline"


def test_the_output_may_be_a_link_or_a_pipe_and_inputs_only_regular_files(ten_classes, three_images, tmp_path):
    """--output through a symbolic link writes its target and keeps the link; into a pipe, writes the pipe (as
    tee does); a FIFO among the inputs is an error line, not a hang."""
    os.mkfifo(three_images / "stuck.jpg")
    target = tmp_path / "runs" / "dated.jsonl"
    target.parent.mkdir()
    link = tmp_path / "latest.jsonl"
    link.symlink_to(target)
    images = [*sorted(three_images.glob("*.png")), three_images / "stuck.jpg"]
    proc = predict(*images, "--weights", ten_classes[1], "--output", link, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert link.is_symlink() and len(lines) == 4 and "is a FIFO" in lines[-1]["error"]
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    reader = subprocess.Popen(["cat", str(pipe)], stdout=subprocess.PIPE, text=True)
    proc = predict(*images[:3], "--weights", ten_classes[1], "--output", pipe, timeout=300)
    received = reader.communicate(timeout=60)[0]
    assert proc.returncode == 0 and pipe.is_fifo() and len(received.splitlines()) == 3, proc.stderr


@pytest.mark.parametrize(
    ("source", "message"),
    [("@missing.txt", "no such list of images: missing.txt"), ("empty", "no images found in empty")],
)
def test_nothing_to_classify_is_a_usage_error(source, message, tmp_path):
    (tmp_path / "empty").mkdir()
    proc = predict(source, cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr


def test_any_torchvision_classification_model_by_name(tmp_path, image_folder):
    """--arch mobilenet_v2 with a weights file: converted onto the op, the same classes and probabilities as
    torchvision's own model on torchvision's V1 preprocessing; timm's names offline: exit 3, saying why."""
    from torchvision.transforms._presets import ImageClassification

    from cutlass_resnet.predict import read_image
    from cutlass_resnet.testing import torchvision_model_with_statistics

    reference = torchvision_model_with_statistics("mobilenet_v2", seed=4, num_classes=10)
    torch.save(reference.state_dict(), tmp_path / "mobilenet.pth")
    images = [p for p in expand_paths([image_folder]) if "broken" not in p][:3]
    proc = predict(*images, "--arch", "mobilenet_v2", "--weights", tmp_path / "mobilenet.pth", "--json")
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    assert document["model"]["arch"] == "mobilenet_v2" and document["model"]["fused"]
    for path, result in zip(images, document["predictions"], strict=True):
        with torch.no_grad():
            x = ImageClassification(crop_size=224)(read_image(path))[None]
            expected = torch.softmax(reference.double()(x.double()), dim=1)[0]
        top = expected.topk(5)
        assert [t["index"] for t in result["top"]] == top.indices.tolist()
        assert np.allclose([t["probability"] for t in result["top"]], top.values.numpy(), atol=1e-3, rtol=0)
    pytest.importorskip("timm")
    offline = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    proc = predict(images[0], "--arch", "timm:resnet18", env=offline)
    assert proc.returncode == 3 and "timm could not fetch the weights of resnet18" in proc.stderr


def test_ray_data_writes_what_one_process_writes(one_process, ten_classes, image_folder, tmp_path):
    """--ray on a local Ray instance (this machine's CPUs): the same lines, in the same order, as the
    single-process run, the corrupt file an error line; features too."""
    pytest.importorskip("ray")
    out = tmp_path / "ray.jsonl"
    proc = predict(image_folder, "--weights", ten_classes[1], "--topk", 10, "--batch-size", 8, "--output", out,
                   "--features", tmp_path / "features.safetensors", "--ray", timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    single = read_results(one_process[0] / "out.jsonl")
    ours = read_results(out)
    assert [r.path for r in ours] == [r.path for r in single] and len(ours) == 41
    for a, b in zip(single, ours, strict=True):
        assert a.error == b.error or (a.error and b.error)
        assert [t["index"] for t in a.top] == [t["index"] for t in b.top], a.path
        assert np.allclose([t["probability"] for t in a.top], [t["probability"] for t in b.top], atol=1e-6)
    expected, features = (
        load_features(one_process[0] / "features.safetensors"),
        load_features(tmp_path / "features.safetensors"),
    )
    assert features.keys() == expected.keys()
    for path, row in expected.items():
        torch.testing.assert_close(features[path], row, atol=1e-5, rtol=1e-5)


def test_gpu_decoding_without_a_gpu_is_exit_4(tmp_path):
    proc = predict("--decode", "gpu", "--device", "cpu", "--weights", tmp_path / "none.safetensors")
    assert proc.returncode == 4 and "--decode gpu decodes on the GPU the model runs on" in proc.stderr


def test_int8_predictions_from_a_calibration_folder(ten_classes, image_folder, tmp_path):
    from conftest import make_image_folder

    calibration = tmp_path / "calibration"
    make_image_folder(calibration, 12)
    (calibration / "broken.jpg").unlink()
    (calibration / "notes.txt").unlink()
    images = [p for p in expand_paths([image_folder]) if "broken" not in p][:6]
    fp32 = predict(*images, "--weights", ten_classes[1], "--json", "--topk", 3)
    int8 = predict(*images, "--weights", ten_classes[1], "--json", "--topk", 3, "--dtype", "int8",
                   "--calibrate", calibration, "--calibration-method", "max")  # fmt: skip
    assert fp32.returncode == 0 and int8.returncode == 0, int8.stderr
    expected, document = json.loads(fp32.stdout), json.loads(int8.stdout)
    assert document["model"]["dtype"] == "int8" and document["model"]["fused"]
    for a, b in zip(expected["predictions"], document["predictions"], strict=True):
        assert a["top"][0]["index"] == b["top"][0]["index"]
        assert abs(a["top"][0]["probability"] - b["top"][0]["probability"]) < 0.05


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dtype", "int8"], "--dtype int8 goes with --calibrate"),
        (["--calibrate", "."], "--dtype int8 goes with --calibrate"),
        (["--dtype", "int8", "--calibrate", ".", "--ray", "--output", "x.jsonl"], "--ray runs fp32"),
    ],
)
def test_int8_options_go_together(args, message, tmp_path):
    proc = predict(*args, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
