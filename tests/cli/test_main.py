"""Every command through its real entry point (a subprocess), on the CPU, with weights from local servers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image
from servers import Repo

import cutlass_resnet
from cutlass_resnet.cli.predict import sample_image
from cutlass_resnet.predict import OUTPUT_VERSION, read_results

CATEGORIES = torchvision.models.ResNet50_Weights.IMAGENET1K_V2.meta["categories"]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cutlass_resnet", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def hub_resnet18(hub):
    """A random-init resnet18, fused and saved as we save (fp16), on the local hub as me/resnet18."""
    model = cutlass_resnet.fuse_bn(cutlass_resnet.resnet18().eval()).half()
    folder = cutlass_resnet.save_pretrained(model, Path(os.environ["HF_HUB_CACHE"]).parent / "export")
    hub.state.repos["me/resnet18"] = Repo({p.name: p.read_bytes() for p in folder.iterdir()})
    return "hf:me/resnet18"


def test_a_hub_server_error_is_one_line(hub, hub_resnet18):
    """A hub that answers 500 (the hub client's message and its retry warnings run to several lines): one line,
    exit 3."""
    for name in ("config.json", "model.safetensors"):
        hub.state.faults[f"/me/resnet18/resolve/main/{name}"] = ("status", 500)
    proc = cli("predict", "--weights", hub_resnet18, env={"CUTLASS_RESNET_DOWNLOAD_TIMEOUT": "5"})
    assert proc.returncode == 3 and "500" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_console_script_is_installed():
    script = shutil.which("cutlass-resnet")
    if script is None and os.environ.get("CI") != "true":
        pytest.skip("the package is not pip-installed here")
    proc = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == f"cutlass-resnet {cutlass_resnet.__version__}"


def test_no_command_prints_usage_and_exits_2():
    proc = cli()
    assert proc.returncode == 2
    for command in ("predict", "bench", "selftest", "info", "export"):
        assert command in proc.stderr


def test_sample_photo_is_shipped_with_its_licence():
    with Image.open(sample_image()) as image:
        assert image.size == (451, 300) and image.format == "JPEG"
    assert "CC0" in (sample_image().parent / "README.md").read_text()


def test_predict_on_the_sample_photo(hub_resnet18):
    proc = cli("predict", "--weights", hub_resnet18)
    assert proc.returncode == 0, proc.stderr
    header, image, *rows = proc.stdout.splitlines()
    assert header == "resnet18 (hf:me/resnet18@main), fused float32 on cpu, reference convolution (CPU)"
    assert image == str(sample_image()) and len(rows) == 5
    ranks = [int(r.split(".")[0]) for r in rows]
    probabilities = [float(r.split()[1].rstrip("%")) for r in rows]
    labels = [r.split("%", 1)[1].strip() for r in rows]
    assert ranks == [1, 2, 3, 4, 5] and probabilities == sorted(probabilities, reverse=True)
    assert 0 < sum(probabilities) <= 100 and all(label in CATEGORIES for label in labels)


def test_predict_json_for_several_images(hub_resnet18, tmp_path):
    with Image.open(sample_image()) as image:
        image.rotate(90, expand=True).save(tmp_path / "rotated.png")
    proc = cli("predict", str(sample_image()), str(tmp_path / "rotated.png"), "--weights", hub_resnet18,
               "--topk", "3", "--json", "--dtype", "bf16")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["model"] == dict(arch="resnet18", weights="hf:me/resnet18@main", device="cpu", dtype="bfloat16",
                                fused=True)  # fmt: skip
    assert [p["path"] for p in out["predictions"]] == [str(sample_image()), str(tmp_path / "rotated.png")]
    for prediction in out["predictions"]:
        top = prediction["top"]
        assert len(top) == 3 and [t["probability"] for t in top] == sorted(
            (t["probability"] for t in top), reverse=True
        )
        assert all(CATEGORIES[t["index"]] == t["label"] for t in top)
    assert out["version"] == OUTPUT_VERSION
    (tmp_path / "printed.json").write_text(proc.stdout)
    forms = [tmp_path / "printed.json"]
    for name in ("out.jsonl", "out.csv"):  # the same results in each output form, read by one reader
        proc = cli("predict", str(sample_image()), str(tmp_path / "rotated.png"), "--weights", hub_resnet18,
                   "--topk", "3", "--dtype", "bf16", "--output", str(tmp_path / name))  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        forms.append(tmp_path / name)
    read = [[(r.path, r.error, [(t["index"], t["label"]) for t in r.top]) for r in read_results(f)] for f in forms]
    assert read[0] == read[1] == read[2] and len(read[0]) == 2
    assert [r.to_json() for r in read_results(forms[0])] == [r.to_json() for r in read_results(forms[1])]


def test_predict_with_a_local_folder_matches_torchvision(tmp_path):
    model = torchvision.models.resnet18(num_classes=10).eval()
    ours = cutlass_resnet.resnet18(num_classes=10)
    cutlass_resnet.load_torchvision_state_dict(ours, model.state_dict())
    cutlass_resnet.save_pretrained(ours, tmp_path / "ten")
    proc = cli("predict", "--weights", str(tmp_path / "ten"), "--topk", "10", "--json", "--no-fuse")
    assert proc.returncode == 0, proc.stderr
    top = json.loads(proc.stdout)["predictions"][0]["top"]
    assert sorted(t["index"] for t in top) == list(range(10)) and top[0]["label"].startswith("class ")
    transform = torchvision.models.ResNet50_Weights.IMAGENET1K_V1.transforms()
    with Image.open(sample_image()) as image, torch.no_grad():
        expected = torch.softmax(model(transform(image.convert("RGB"))[None]), dim=1)[0]
    assert top[0]["index"] == int(expected.argmax())
    assert abs(top[0]["probability"] - float(expected.max())) < 1e-3  # torchvision.io's decode against PIL's


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["missing.jpg"], 2, "no such image: missing.jpg"),
        (["README.md"], 2, "cannot read README.md as an image"),
        (["--weights", "HUB", "--topk", "0"], 2, "--topk must be between 1 and 1000"),
        (["--weights", "IMAGENET1K_V9"], 2, "unknown weights 'IMAGENET1K_V9': ResNet50_Weights has IMAGENET1K_V1"),
        (["--weights", "nowhere/model.safetensors"], 2, "no such weights file or folder"),
        (["--device", "cuda"], 4, "no CUDA GPU is visible"),  # as bench says it
        (["--weights", "HUB", "--no-fuse"], 2, "holds a fused model (BatchNorm folded away)"),
        ([], 3, "resnet50-11ad3fa6.pth is not cached and HF_HUB_OFFLINE is set"),
        (["--weights", "hf:nobody/resnet18"], 3, "'nobody/resnet18'"),
    ],
)
def test_predict_errors_are_one_line_with_an_exit_code(hub_resnet18, args, code, message):
    if args == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    args = [hub_resnet18 if a == "HUB" else a for a in args]
    proc = subprocess.run(
        [sys.executable, "-m", "cutlass_resnet", "predict", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "HF_HUB_OFFLINE": "1"} if not args else None,
    )
    assert proc.returncode == code and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_bad_option_gets_argparse_usage():
    proc = cli("predict", "--device", "tpu")
    assert proc.returncode == 2 and "invalid choice: 'tpu'" in proc.stderr


def test_an_unknown_model_is_a_usage_error_naming_what_is_known():
    proc = cli("predict", "--arch", "vgg17")
    assert proc.returncode == 2 and "unknown model 'vgg17': cutlass_resnet's (resnet101" in proc.stderr
    assert "torchvision's classification models" in proc.stderr and "timm:NAME" in proc.stderr


def test_verbose_shows_the_traceback(hub):
    proc = cli("predict", "--weights", "hf:nobody/resnet18", "--verbose")
    assert proc.returncode == 3 and "Traceback" in proc.stderr and "RepositoryNotFoundError" in proc.stderr


def test_bench_input_measures_each_decoder_side_by_side(image_folder, tmp_path):
    """No GPU needed: images/s of one decoding worker per decoder, in the JSON as {"decoders": {name: ...}}; the
    corrupt file is left out of the rates."""
    proc = cli("bench", "--input", str(image_folder), "--json", "--output", str(tmp_path / "input.json"))
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    assert document == json.loads((tmp_path / "input.json").read_text()) and document["images"] == 40
    assert set(document["decoders"]) == {"torchvision", "pil"}
    for rate in document["decoders"].values():
        assert rate["images_per_s"] > 0 and abs(rate["ms_per_image"] * rate["images_per_s"] - 1000) < 1e-6
    assert "torchvision decodes" in proc.stderr and "x the images per second of pil" in proc.stderr
    proc = cli("bench", "--input", str(tmp_path / "empty"))
    assert proc.returncode == 2 and "--input" in proc.stderr


def test_bench_on_the_cpu_writes_table_json_and_plot(tmp_path):
    proc = cli("bench", "--device", "cpu", "--arch", "resnet18", "--batch-size", "1", "2", "--image-size", "32",
               "--warmup", "0", "--iters", "1", "--no-compile", "--output", str(tmp_path / "b.json"),
               "--plot", str(tmp_path / "b.png"), "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((tmp_path / "b.json").read_text())
    assert json.loads(proc.stdout) == rows  # --json prints what --output writes, and the table goes to stderr
    assert rows["meta"]["device"].startswith("CPU") and len(rows["results"]) == 4
    assert {(r["batch"], r["impl"]) for r in rows["results"]} == {
        (b, i) for b in (1, 2) for i in ("cutlass-resnet", "torchvision")
    }
    for r in rows["results"]:
        assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] and not r["graph"] and r["estimate_ms"] is None
        assert r["images_per_s"] == pytest.approx(r["batch"] * 1000 / r["p50_ms"])
    assert len([line for line in proc.stderr.splitlines() if line.startswith("resnet18 ")]) == 4
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json", "b.png"]


@pytest.mark.parametrize("gpu", ["8.0", "9.0"])
def test_bench_dry_run_reports_host_time_per_conv_without_a_gpu(extension, tmp_path, gpu):
    """On 9.0 too: the Hopper kernels' TMA descriptors are encoded on the host where no driver is loaded (the dry
    run once ended in CUDA_ERROR_NOT_FOUND)."""
    env = {"CUTLASS_RESNET_CACHE": os.environ["CUTLASS_RESNET_CACHE"], "TORCH_CUDA_ARCH_LIST": "8.0;9.0a"}
    proc = cli("bench", "--dry-run", "--arch", "resnet18", "--dtype", "fp16", "bf16", "--iters", "3",
               "--gpu-arch", gpu, "--output", str(tmp_path / "host.json"), env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "host.json").read_text())
    assert data["meta"]["device"].startswith("dry run") and [r["dtype"] for r in data["results"]] == [
        "float16",
        "bfloat16",
    ]
    capability = [int(v) for v in gpu.split(".")]
    assert all(
        r["convs"] == 20 and r["capability"] == capability and r["host_us_per_conv"] > 0 for r in data["results"]
    )
    assert data["host_us_per_conv"] > 0 and "us/conv" in proc.stdout and "compiling" not in proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_bench_without_a_gpu_exits_4():
    proc = cli("bench", "--arch", "resnet18")
    assert proc.returncode == 4 and "needs a CUDA GPU and none is visible; nothing was measured" in proc.stderr


def test_bench_rejects_bad_values():
    proc = cli("bench", "--device", "cpu", "--batch-size", "0")
    assert proc.returncode == 2 and "--batch-size, --image-size and --iters must be >= 1" in proc.stderr


def test_bench_s_old_option_names_still_work_and_warn(tmp_path):
    """``--batch`` and ``--json FILE`` (as scripts of 0.1.0 call bench) do what --batch-size and --output do."""
    proc = cli("bench", "--device", "cpu", "--arch", "resnet18", "--batch", "1", "--image-size", "32",
               "--warmup", "0", "--iters", "1", "--no-compile", "--json", str(tmp_path / "b.json"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert [r["batch"] for r in json.loads((tmp_path / "b.json").read_text())["results"]] == [1, 1]
    assert "`bench --batch` is deprecated: use --batch-size" in proc.stderr
    assert "`bench --json FILE` is deprecated: use --output FILE" in proc.stderr


def test_selftest_on_the_cpu_says_no_kernel_ran():
    proc = cli("selftest", "--arch", "resnet18", "--image-size", "32")
    assert proc.returncode == 0, proc.stderr
    assert "1 passed, 0 failed" in proc.stdout and "No GPU is visible: no CUTLASS kernel was exercised." in proc.stdout


def test_info_reports_versions_caches_and_disabled_kernels(tmp_path):
    (tmp_path / "kernels").mkdir()
    verdicts = {"GPU|sm_90|build|sm90_f16_t128x128x64": "error 3.1e-01 > 2x aten's 1.0e-03", "GPU|sm_80|b|k": ""}
    (tmp_path / "kernels" / "verdicts.json").write_text(json.dumps(verdicts))
    env = {"CUTLASS_RESNET_CACHE": str(tmp_path), "TORCH_HOME": str(tmp_path / "th")}
    proc = cli("info", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["cutlass_resnet"] == cutlass_resnet.__version__ and info["torch"] == torch.__version__
    assert info["kernel_cache"] == str(tmp_path / "kernels") and info["cached_builds"] == []
    assert info["torchvision_weights_cache"] == str(tmp_path / "th" / "hub" / "checkpoints")
    assert info["disabled_kernels"] == {"GPU|sm_90|build|sm90_f16_t128x128x64": "error 3.1e-01 > 2x aten's 1.0e-03"}
    text = cli("info", env=env)
    assert text.returncode == 0 and "disabled by self-check: GPU|sm_90|build|sm90_f16_t128x128x64" in text.stdout
    assert f"torch {torch.__version__}" in text.stdout and str(tmp_path / "kernels") in text.stdout


@pytest.mark.parametrize("name", ["resnet18-20240101.pth", "run-12345678.best.pth", "resnet18-00000000.pth"])
def test_predict_with_a_checkpoint_of_any_name_reads_its_architecture(tmp_path, name):
    """A file the user names is never judged by its name (a hash-like part is just a name), and without --arch
    its architecture comes from its shapes; --arch for another architecture is a usage error (exit 2)."""
    model = torchvision.models.resnet18().eval()
    torch.save(model.state_dict(), tmp_path / name)
    proc = cli("predict", "--weights", str(tmp_path / name), "--topk", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["model"]["arch"] == "resnet18"
    top = json.loads(proc.stdout)["predictions"][0]["top"][0]
    transform = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.transforms()
    with Image.open(sample_image()) as image, torch.no_grad():
        expected = torch.softmax(model(transform(image.convert("RGB"))[None]), dim=1)[0]
    assert top["index"] == int(expected.argmax()) and abs(top["probability"] - float(expected.max())) < 1e-3
    proc = cli("predict", "--weights", str(tmp_path / name), "--arch", "resnet34")
    assert proc.returncode == 2 and "missing key" in proc.stderr and "Traceback" not in proc.stderr


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels (its header is all a decoder reads before refusing)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IEND", b"")
    )


def test_usage_errors_exit_2_not_unexpected_1(tmp_path):
    (tmp_path / "bomb.png").write_bytes(png_header(20000, 20000))
    (tmp_path / "a-file").write_text("x")
    a_file_as_cache = {"CUTLASS_RESNET_CACHE": str(tmp_path / "a-file")}
    cases = [
        (["predict", str(tmp_path / "bomb.png")], "too large to decode safely", {}),
        (["export", "--arch", "resnet18", "--out", str(tmp_path / "a-file")], "that is a file; give a folder", {}),
        (["export", "--arch", "resnet18", "--out", "/proc/cutlass-resnet-test"], "cannot create the folder", {}),
        (["bench", "--device", "cpu", "--output", "/nonexistent/x.json"], "the folder /nonexistent does not exist", {}),
        (["bench", "--device", "cpu", "--plot", str(tmp_path)], "that is a folder; give a file name", {}),
        (["predict", "--weights", "hf:../../etc"], "'../../etc' is not a hub repo id", {}),
        (
            ["bench", "--dry-run", "--arch", "resnet18"],
            f"CUTLASS_RESNET_CACHE {tmp_path}/a-file is a file",
            a_file_as_cache,
        ),
    ]
    for args, message, env in cases:
        start = time.monotonic()
        proc = cli(*args, env={"HF_HUB_OFFLINE": "1", **env})
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
        assert "unexpected error" not in proc.stderr and time.monotonic() - start < 60, args


def test_verbose_before_the_command_counts(hub):
    proc = cli("--verbose", "predict", "--weights", "hf:nobody/resnet18")
    assert proc.returncode == 3 and "Traceback" in proc.stderr


def test_a_closed_pipe_ends_the_output_quietly():
    proc = subprocess.Popen(
        [sys.executable, "-m", "cutlass_resnet", "info", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdout.close()  # as `| head` does once it has read enough
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141 and "Traceback" not in stderr and "unexpected error" not in stderr


BENCH_FOREVER = ["bench", "--device", "cpu", "--arch", "resnet18", "--batch-size", "1", "--image-size", "32",
                 "--warmup", "0", "--iters", "1000000", "--no-compile"]  # fmt: skip

SWALLOWS_CTRL_C = """
import os, signal, sys

class _Importer:  # as torch's C++ does when numpy's import fails inside its own: the interrupt is lost
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            try:
                os.kill(os.getpid(), signal.SIGINT)
                signal.sigtimedwait([], 0.1)  # a moment for Python to run its handler
            except KeyboardInterrupt:
                pass
        return None

sys.meta_path.insert(0, _Importer())
"""


def test_ctrl_c_at_any_moment_exits_130_quietly():
    for delay in (0.6, 2.5):  # while torch is still being imported (after Python's own start-up), and later
        proc = subprocess.Popen(
            [sys.executable, "-m", "cutlass_resnet", *BENCH_FOREVER], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 130 and "Traceback" not in stderr.decode(), (delay, stderr.decode())


def test_ctrl_c_that_a_library_swallows_while_it_imports_still_exits_130(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(SWALLOWS_CTRL_C)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "cutlass_resnet", *BENCH_FOREVER], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 130 and "Traceback" not in proc.stderr, proc.stderr


def test_a_damaged_verdicts_file_is_named_not_fatal(tmp_path):
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / "verdicts.json").write_text("{half a file")
    proc = cli("info", env={"CUTLASS_RESNET_CACHE": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert (
        f"{tmp_path / 'kernels' / 'verdicts.json'} is damaged" in proc.stderr and "checks itself again" in proc.stderr
    )


def test_files_the_commands_write_get_the_umask_s_mode(tmp_path):
    proc = subprocess.run(
        ["sh", "-c", f"umask 002 && {sys.executable} -m cutlass_resnet bench --device cpu --arch resnet18 --batch 1 "
         f"--image-size 32 --warmup 0 --iters 1 --no-compile --json {tmp_path}/b.json --plot {tmp_path}/b.png"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert {p.stat().st_mode & 0o777 for p in tmp_path.iterdir()} == {0o664}


def _visible_options(parser) -> dict[str, object]:
    """Each option string of a command's parser that --help shows (not -h, -v), with its action."""
    import argparse

    shown = {}
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        for option in action.option_strings:
            if option not in ("-v", "--verbose"):
                shown[option] = action
    return shown


def _commands():
    from cutlass_resnet.cli.main import build_parser

    (sub,) = [a for a in build_parser()._actions if a.dest == "command"]
    return sub.choices


def test_every_command_speaks_one_vocabulary():
    """Every option has help; --arch is always a model, --gpu-arch a GPU target, --json a flag printing JSON,
    --output a file, and the batch is --batch-size."""
    models = set(cutlass_resnet.list_models())
    for name, parser in _commands().items():
        options = _visible_options(parser)
        for option, action in options.items():
            assert action.help, f"{name} {option} has no help"
        assert "--batch" not in options, name
        assert "--gpu-arch" not in options or name in ("bench", "build", "plan"), name
        if "--arch" in options:
            choices = options["--arch"].choices
            assert set(choices) <= models if choices else "model" in options["--arch"].help, name
        if "--gpu-arch" in options:
            assert "GPU" in options["--gpu-arch"].help or "nvcc" in options["--gpu-arch"].help, name
        if "--json" in options:
            assert options["--json"].nargs in (0, "?") and "JSON" in options["--json"].help, name
    assert {n for n, p in _commands().items() if "--arch" in _visible_options(p)} == {
        "predict",
        "bench",
        "selftest",
        "export",
        "plan",
    }


def test_docs_cli_synopses_are_the_parsers_options():
    """docs/cli.md's synopsis of each command names exactly the options its parser shows."""
    import re

    text = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    for name, parser in _commands().items():
        section = text[text.index(f"\n## {name}\n") :]
        synopsis = section[section.index("```") + 3 : section.index("```", section.index("```") + 3)]
        documented = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", synopsis))
        documented |= {f"--no-{o[2:]}" for o in re.findall(r"(--[a-z-]+)/--no-", synopsis)}
        assert documented == set(_visible_options(parser)), name


def test_bench_int8_on_the_cpu_runs_the_quantized_model():
    proc = cli("bench", "--device", "cpu", "--arch", "resnet18", "--batch-size", "2", "--image-size", "32",
               "--dtype", "int8", "--warmup", "0", "--iters", "1", "--no-compile", "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["results"]
    assert {(r["dtype"], r["impl"]) for r in rows} == {("int8", "cutlass-resnet"), ("int8", "torchvision")}
    proc = cli("bench", "--dry-run", "--dtype", "int8")
    assert proc.returncode == 2 and "int8 is not timed there" in proc.stderr
