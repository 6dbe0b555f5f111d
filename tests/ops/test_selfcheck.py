"""The self-check's isolation: a kernel's check runs in a child process whose crash or hang is a verdict,
never the user's process's fate."""

from __future__ import annotations

import dataclasses
import itertools
import sys
from pathlib import Path

import pytest
import torch

from cutlass_resnet.ops import library, selfcheck
from cutlass_resnet.ops.select import kernel_table


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_check_process_s_answer_is_its_last_json_line():
    outcome = selfcheck.run_isolated(python('print("loading"); print(\'{"reason": null}\')'), timeout=60)
    assert outcome == {"reason": None}


def test_a_crash_in_the_check_process_is_reported_not_shared():
    ready = "import json; print(json.dumps({'ready': True}), flush=True); "
    outcome = selfcheck.run_isolated(python(ready + "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"), 60)
    assert outcome == {"crashed": "was killed by signal 11", "ready": True, "said": [{"ready": True}]}
    outcome = selfcheck.run_isolated(python(ready + "raise SystemExit('illegal memory access')"), timeout=60)
    assert outcome == {"crashed": "exited with 1 (illegal memory access)", "ready": True, "said": [{"ready": True}]}


def test_a_hang_in_the_check_process_is_cut_short():
    outcome = selfcheck.run_isolated(python("import time; time.sleep(600)"), timeout=2)
    assert outcome == {"crashed": "did not finish in 2 s (a hang?) and was killed", "ready": False, "said": []}


def test_a_silent_check_process_is_given_up_on_soon():
    """A process that reports each case but then says nothing for ``silence`` seconds is hung: killed then, not at
    the whole check's time limit."""
    code = "import json, time; print(json.dumps({'ready': True}), flush=True); time.sleep(600)"
    outcome = selfcheck.run_isolated(python(code), timeout=600, silence=2)
    assert outcome == {
        "crashed": "said nothing for 2 s (a hang?) and was killed",
        "ready": True,
        "said": [{"ready": True}],
    }


def test_a_check_process_that_cannot_use_the_gpu_is_no_verdict(monkeypatch):
    """A busy or exclusive-process GPU, or a process that dies before it reaches the GPU, says nothing about the
    kernel: nothing is recorded, and the kernel is checked again on its next use."""
    run = selfcheck.run_isolated
    busy = python("raise SystemExit('CUDA error: all CUDA-capable devices are busy or unavailable')")
    monkeypatch.setattr(selfcheck, "run_isolated", lambda command, timeout: run(busy, timeout))
    with pytest.raises(selfcheck.SelfCheckUnavailable, match="busy or unavailable.*before it could use the GPU"):
        selfcheck.isolated_check("sm80_f16_t64x64_64x5", 0, "unused.so")
    said = python("import json; print(json.dumps({'unavailable': 'the check process could not use GPU 0: busy'}))")
    monkeypatch.setattr(selfcheck, "run_isolated", lambda command, timeout: run(said, timeout))
    with pytest.raises(selfcheck.SelfCheckUnavailable, match="could not use GPU 0"):
        selfcheck.isolated_check("sm80_f16_t64x64_64x5", 0, "unused.so")


def test_the_child_loads_the_library_and_reaches_the_gpu(extension):
    """End to end through ``python -m cutlass_resnet.ops._check_child``: here, with no GPU, the child gets as far
    as asking CUDA for the device, and says it could not use it: no verdict on the kernel."""
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the check would pass")
    with pytest.raises(selfcheck.SelfCheckUnavailable, match="the check process could not use GPU 0"):
        selfcheck.isolated_check("sm80_f16_t64x64_64x5", 0, library.library_path(), timeout=300)


def test_on_a_gpu_the_check_runs_isolated_for_the_model_s_kernels_together(emulated_gpu, monkeypatch):
    """The user's process never runs a CUDA kernel's check itself: it asks one child process, which checks the
    kernel, the others of its dtype that run on this GPU (a model uses several) and the max-pool pass: one torch
    import, not one per kernel, and the next kernel a model needs has its verdict already."""
    asked = []

    def checks(names, device_index, library):
        asked.append((names, device_index, library))
        return {name: None for name in names}

    monkeypatch.setattr(selfcheck, "_device", lambda index: torch.device("cuda", index))
    monkeypatch.setattr(selfcheck, "isolated_checks", checks)
    assert selfcheck.kernel_verdict("sm80_f16_t64x64_64x5", 0) is None
    ((names, device_index, path),) = asked
    assert names[0] == "sm80_f16_t64x64_64x5" and (device_index, path) == (0, library.library_path())
    assert set(names) == {k.name for k in kernel_table() if k.dtype == torch.float16 and not k.hopper} | {"max_pool2d"}
    assert selfcheck.kernel_verdict("sm80_f16_stem_t128x64_64x3", 0) is None and len(asked) == 1
    assert selfcheck.kernel_verdict("max_pool2d", 0) is None and len(asked) == 1
    assert emulated_gpu.calls == [] and set(selfcheck.read_verdicts().values()) == {""}


def test_the_max_pool_pass_checks_itself_against_aten(extension, monkeypatch):
    """The binding's max-pool (what nn.MaxPool2d runs on a GPU) has a self-check as the kernels do: equal to aten's
    max-pool, NaN and -inf included; a pass that differs is named with the case."""
    assert selfcheck.check_kernel("max_pool2d", torch.device("cpu")) is None
    monkeypatch.setattr(torch.nn.functional, "max_pool2d", torch.nn.functional.avg_pool2d)  # a pass that is off
    reason = selfcheck.check_kernel("max_pool2d", torch.device("cpu"))
    assert reason.startswith("max_pool2d failed its self-check on (2, 64, 17, 16) float16") and "differ" in reason


@pytest.mark.parametrize("name", ["sm80_f16_stem_t128x64_64x3", "sm80_bf16_group_t128x32_32x4"])
def test_a_packed_case_goes_through_the_binding_s_packing(extension, monkeypatch, name):
    """The zoo's stem (3 channels padded to 4) and ResNeXt's merged groups are checked from the model's conv
    through the binding's packing, as selection runs them: here on the CPU through CUTLASS's host reference."""
    from cutlass_resnet.ops.select import kernel

    info = kernel(name)
    (case, *_) = [c for c in selfcheck.coverage_cases(info) if c.packed]
    assert case.problem.c == 3 or case.problem.c // case.problem.groups == 4
    assert selfcheck._check_case(info, torch.device("cpu"), case) is None
    choices, run = [], torch.ops.cutlass_resnet_C.run
    monkeypatch.setattr(torch.ops.cutlass_resnet_C, "run", lambda *a: choices.append(a[5]) or run(*a) * 2)
    assert "error" in selfcheck._check_case(info, torch.device("cpu"), case)  # a wrong result is caught
    assert choices[0][0] == info.index and (choices[0][1] == 4 or choices[0][2] > 1)


def test_a_crash_is_the_verdict_of_the_kernel_being_checked(monkeypatch):
    """In a child checking several kernels, a crash fails the kernel it was checking; those checked before keep
    their verdicts, those after get none (checked on their next use)."""
    lines = [{"ready": True}, {"kernel": "a"}, {"verdict": {"kernel": "a", "reason": None}}, {"kernel": "b"}]
    code = "import json, os, signal\n" + "".join(f"print(json.dumps({line!r}), flush=True)\n" for line in lines)
    code += "os.kill(os.getpid(), signal.SIGSEGV)\n"
    monkeypatch.setattr(selfcheck, "_check_command", lambda *args: python(code))
    verdicts = selfcheck.isolated_checks(["a", "b", "c"], 0, "unused.so", timeout=60)
    assert verdicts == {"a": None, "b": "b failed its self-check: the check process was killed by signal 11"}


def test_the_check_process_imports_this_package_wherever_it_came_from(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    code = "import json, cutlass_resnet; print(json.dumps({'reason': cutlass_resnet.__file__}))"
    outcome = selfcheck.run_isolated([sys.executable, "-c", code], 60)
    assert outcome["reason"] == str(Path(selfcheck.__file__).resolve().parents[1] / "__init__.py")


def zoo_selections(capability: tuple[int, int], sm_count: int) -> set[tuple]:
    """(kernel, residual, relu, split, dilated, grid regime, packed) of every conv the zoo's plans put on a kernel:
    each model (and the dilated ResNets of DeepLabV3 and FCN) at batch 1 to 256, fp16 and bf16."""
    import cutlass_resnet
    from cutlass_resnet.ops.select import kernel, launch_form, select
    from cutlass_resnet.testing import ARCHS

    variants = [(arch, {}) for arch in ARCHS] + [
        (arch, {"replace_stride_with_dilation": dilate})
        for arch in ("resnet50", "resnet101")
        for dilate in ([False, True, True], [False, False, True])
    ]
    problems = {}
    for arch, kwargs in variants:
        with torch.device("meta"):
            model = cutlass_resnet.fuse_bn(getattr(cutlass_resnet, arch)(**kwargs).eval())
        relu = {name: m.relu for name, m in model.named_modules() if isinstance(m, cutlass_resnet.nn.Conv2d)}
        for e in cutlass_resnet.plan(model, (1, 3, 224, 224)):
            problems[(e.problem, e.residual, relu[e.module])] = None
    chosen = set()
    for (problem, residual, relu), n, dtype in itertools.product(
        problems, (1, 8, 32, 128, 256), (torch.float16, torch.bfloat16)
    ):
        batch = dataclasses.replace(problem, n=n)
        choice = select(batch, dtype, capability, sm_count, residual)
        if choice.kernel is None:
            continue
        info = kernel(choice.kernel)
        launch = dataclasses.replace(launch_form(batch)[0], n=choice.batch_chunk or n)
        regime = selfcheck.grid_regime(info, launch)
        packed = bool(choice.pad_channels) or choice.merge_groups > 1
        chosen.add((info.name, residual, relu, choice.split_k or 1, batch.dilation != (1, 1), regime, packed))
    return chosen


@pytest.mark.parametrize(("capability", "sm_count"), [((8, 0), 108), ((9, 0), 132)], ids=["8.0", "9.0"])
def test_the_self_check_matrix_covers_everything_selection_chooses(extension, capability, sm_count):
    """Each kernel checks itself on every epilogue, split, dilation, grid regime and packing (the binding's padded
    stem and merged groups) that selection puts it in for the zoo (the dilated backbones included), so that nothing
    a model runs is left unchecked."""
    from cutlass_resnet.ops.select import kernel_table

    covered = {
        (
            info.name,
            c.residual,
            c.relu,
            c.split_k,
            c.problem.dilation != (1, 1),
            selfcheck.grid_regime(info, c.problem),
            c.packed,
        )
        for info in kernel_table()
        for c in selfcheck.check_cases(info)
    }
    chosen = zoo_selections(capability, sm_count)
    assert len(chosen) > 40 and {split for *_, split, _, _, _ in chosen} > {1, 2, 4}
    assert {name.split("_")[2] for name, *_, packed in chosen if packed} == {"stem", "group"}
    assert chosen - covered == set()
