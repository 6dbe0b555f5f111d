"""The emulated GPU: whole models through the one path a GPU runs (choice, packing, kernel-ready filters, batch
split, split-K, epilogue arguments), each launch computed by its kernel's CUTLASS host reference, against
torchvision in float64; and the defects that path had at its seams."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import CL, assert_within_twice_aten

import cutlass_resnet
from cutlass_resnet.nn import Conv2d
from cutlass_resnet.ops import dispatch
from cutlass_resnet.testing import torchvision_model_with_statistics

DTYPES = {"f16": torch.float16, "bf16": torch.bfloat16}
MODELS = {  # name: (torchvision builder, keyword arguments); the dilated one is DeepLabV3's backbone
    "resnet50": ("resnet50", {}),
    "resnext50_32x4d": ("resnext50_32x4d", {}),
    "deeplabv3_backbone": ("resnet50", {"replace_stride_with_dilation": [False, True, True]}),
}


@pytest.fixture(scope="module", params=list(MODELS))
def zoo_model(request):
    """(name, torchvision model, input, its float64 logits) at 2x3x40x40."""
    arch, kwargs = MODELS[request.param]
    reference = torchvision_model_with_statistics(arch, seed=1, **kwargs)
    x = torch.randn(2, 3, 40, 40, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = copy.deepcopy(reference).double()(x.double())
    return request.param, reference, x, expected


@pytest.mark.parametrize("capability", ["8.0", "9.0"])
@pytest.mark.parametrize("dtype", list(DTYPES), ids=list(DTYPES))
def test_fused_models_on_the_emulated_gpu_match_torchvision(zoo_model, capability, dtype, launches):
    name, reference, x, expected = zoo_model
    dtype = DTYPES[dtype]
    arch, kwargs = MODELS[name]
    ours = getattr(cutlass_resnet, arch)(**kwargs)
    cutlass_resnet.load_torchvision_state_dict(ours, reference.state_dict())
    ours = cutlass_resnet.fuse_bn(ours.eval()).to(dtype)
    convs = sum(isinstance(m, Conv2d) for m in ours.modules())
    # A few SMs for half the runs, so that unsplit kernels win where the full GPU would split K.
    sm_count = 8 if dtype == torch.float16 else None
    with torch.no_grad(), dispatch.emulate(capability, sm_count):
        torch_layout = ours(x.to(dtype))  # torchvision's filter layout: copied for the kernels on each call
    launches.clear()
    ours = ours.to(memory_format=CL)  # the kernels' layout: read as it is, from C++ after each first call
    with torch.no_grad(), dispatch.emulate(capability, sm_count):
        y = ours(x.to(dtype))  # strict: no conv falls back to aten's convolution
        assert torch.equal(y, torch_layout)
        distinct = torch.ops.cutlass_resnet_C.remembered_choices()
        assert len(launches) == distinct and distinct < convs  # chosen once per problem, the rest from C++
        again = ours(x.to(dtype))
    assert len(launches) == distinct  # the second forward ran from C++ alone
    assert torch.equal(y, again)
    with torch.no_grad():
        aten = copy.deepcopy(reference).to(dtype)(x.to(dtype))
    assert_within_twice_aten(y, aten, expected)
    hopper = {k for k in launches if k.startswith("sm90")}
    assert bool(hopper) == (capability == "9.0")
    if name == "resnext50_32x4d":
        assert any("group" in k for k in launches)
    assert any("stem" in k for k in launches)


def test_the_emulated_gpu_runs_every_kind_of_kernel(extension, launches):
    """Every kind of kernel runs on the emulated GPU: split-K and unsplit, Ampere's and Hopper's."""
    model = cutlass_resnet.fuse_bn(cutlass_resnet.resnet50().eval()).half()
    x = torch.randn(1, 3, 32, 32).half()
    for capability, sm_count in (("8.0", 108), ("8.0", 2), ("9.0", 132), ("9.0", 2)):
        with torch.no_grad(), dispatch.emulate(capability, sm_count):
            model(x)
    kinds = {k.split("_")[0] + ("_splitk" if "splitk" in k else "") for k in launches}
    assert kinds == {"sm80", "sm80_splitk", "sm90", "sm90_splitk"}


def stem_and_grouped() -> list[Conv2d]:
    torch.manual_seed(0)
    return [
        Conv2d(3, 64, 7, stride=2, padding=3, relu=True).eval(),  # the stem: input and filter padded to 4 channels
        Conv2d(128, 128, 3, padding=1, groups=32, relu=True).eval(),  # merged block-diagonal groups
    ]


def expected_of(conv: Conv2d, x: torch.Tensor) -> torch.Tensor:
    w, b = conv.weight.double(), conv.bias.double()
    return F.relu(F.conv2d(x.double(), w, b, conv.stride, conv.padding, conv.dilation, conv.groups))


def close(y: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(y.double(), expected, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("conv", stem_and_grouped(), ids=["stem", "grouped"])
def test_a_weight_changed_by_any_means_reaches_the_kernel(conv, launches):
    """The stem's padded filter and the grouped convs' block-diagonal one are made from the live weight on every
    call: ``.data`` writes, ``.data =``, ``load_state_dict`` and casts all reach the kernel, in Python's first call
    and in C++'s later ones."""
    conv = copy.deepcopy(conv).half()
    x = torch.randn(2, conv.in_channels, 16, 16).half().contiguous(memory_format=CL)
    with torch.no_grad(), dispatch.emulate("8.0"):
        close(conv(x), expected_of(conv, x))
        conv(x)  # from C++
        conv.weight.data.zero_()
        assert torch.equal(conv(x), expected_of(conv, x).half())  # relu(bias) everywhere
        conv.weight.data = torch.randn_like(conv.weight)
        close(conv(x), expected_of(conv, x))
        state = {k: torch.randn_like(v) for k, v in conv.state_dict().items()}
        conv.load_state_dict(state)
        close(conv(x), expected_of(conv, x))
        conv.bfloat16()
        close(conv(x.bfloat16()), expected_of(conv, x.bfloat16()))
    assert len(launches) == 2  # one choice per dtype: everything else ran from C++


def test_models_built_under_inference_mode_use_the_cpp_path(launches):
    with torch.inference_mode():
        conv = stem_and_grouped()[0].half()
        x = torch.randn(1, 3, 16, 16).half()
        with dispatch.emulate("8.0"):
            first, second = conv(x), conv(x)
    assert len(launches) == 1 and torch.equal(first, second)
    close(first, expected_of(conv, x))


def test_trace_records_the_op_not_the_remembered_choice(launches):
    """Tracing a model whose convs this process has already run from C++ records the op, which a fresh process
    (or one where the kernel is disabled) can run."""
    model = cutlass_resnet.fuse_bn(cutlass_resnet.resnet18(num_classes=10).eval()).half()
    x = torch.randn(1, 3, 32, 32).half()
    with torch.no_grad(), dispatch.emulate("8.0"):
        model(x)
        traced = torch.jit.trace(model, x)
        graph = str(traced.inlined_graph)
        assert "cutlass_resnet_C::conv2d" not in graph and "cutlass_resnet::conv2d_fprop" in graph
        dispatch.forget_choices()
        close(traced(x), model(x).double())


def test_autocast_casts_to_the_autocast_dtype_as_aten_s_conv_does(extension):
    conv = Conv2d(16, 32, 3, padding=1, relu=True).eval()
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        y, aten = conv(x), F.conv2d(x, conv.weight, conv.bias, padding=1)
    assert y.dtype == aten.dtype == torch.bfloat16
    close(y, expected_of(conv, x))
    with torch.no_grad(), torch.autocast("cpu", torch.float16), dispatch.emulate("8.0"):
        assert conv(x).dtype == torch.float16


def test_the_environment_variable_turns_the_emulation_on():
    code = "import torch, cutlass_resnet; from cutlass_resnet.ops import dispatch; print(dispatch.emulating())"
    env = {**os.environ, "CUTLASS_RESNET_EMULATE": "9.0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == "(9, 0)", out.stderr
    env["CUTLASS_RESNET_EMULATE"] = "hopper"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "CUTLASS_RESNET_EMULATE='hopper' is not a compute capability" in out.stderr
