"""plan() for the whole zoo, host-only, with CUTLASS's real can_implement."""

from __future__ import annotations

import pytest
import torch
import torchvision

import cutlass_resnet
from cutlass_resnet.testing import ARCHS


@pytest.fixture(scope="module")
def fused_models():
    with torch.device("meta"):  # shapes only: no memory, no init time
        return {arch: cutlass_resnet.fuse_bn(getattr(cutlass_resnet, arch)().eval()) for arch in ARCHS}


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_plan_every_conv_of_the_zoo(extension, fused_models, arch):
    """Batch 1, 8, 256, 2048; fp16 and bf16; sm_80 and sm_90: a kernel CUTLASS accepts, or a known reason."""
    model = fused_models[arch]
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    for batch in (1, 8, 256, 2048):
        for dtype in (torch.float16, torch.bfloat16):
            for gpu in ((8, 0), (9, 0)):
                entries = cutlass_resnet.plan(model, (batch, 3, 224, 224), dtype, gpu)
                assert len(entries) == convs
                for e in entries:
                    assert e.choice.kernel is not None, f"{arch} {e}"
                    family = ("sm80_", "sm90_") if gpu == (9, 0) else ("sm80_",)
                    assert e.choice.kernel.startswith(family), e
                    assert {torch.float16: "_f16_", torch.bfloat16: "_bf16_"}[dtype] in e.choice.kernel
                    assert ("group" in e.choice.kernel) == (e.problem.groups > 1)
                stem = entries[0]
                assert stem.module == "conv1" and stem.problem.c == 3
                assert "stem" in stem.choice.kernel and stem.choice.pad_channels == 4
                for e in entries:  # split exactly where a tensor reaches 2 GiB, into launches below it
                    pr, c = e.problem, max(e.problem.c, 4)
                    image = max(pr.h * pr.w * c, pr.p * pr.q * pr.k) * 2
                    assert bool(e.choice.batch_chunk) == (e.choice.kernel is not None and batch * image >= 2**31)
                    assert e.choice.batch_chunk * image < 2**31 <= (e.choice.batch_chunk + 1) * image or (
                        not e.choice.batch_chunk
                    )
                if batch == 2048:  # 2048x224x224x4 fp16 is 822 MB, but 2048x112x112x64 is 3.3 GB
                    assert stem.choice.batch_chunk == 1337


@pytest.mark.parametrize(
    "arch,merges",
    [("resnext50_32x4d", [8, 4, 2, 1]), ("resnext101_32x8d", [4, 2, 1, 1]), ("resnext101_64x4d", [8, 4, 2, 1])],
)
def test_grouped_convs_are_merged_into_32_channel_groups(extension, fused_models, arch, merges):
    """4, 8, 16, 32+ channels per group: 8, 4, 2, 1 adjacent groups merged (block-diagonal weights)."""
    entries = [e for e in cutlass_resnet.plan(fused_models[arch], (8, 3, 224, 224)) if e.problem.groups > 1]
    for e in entries:
        stage = int(e.module[5]) - 1
        assert e.choice.kernel == "sm80_f16_group_t128x32_32x4" and e.choice.merge_groups == merges[stage]
        assert (e.problem.c // e.problem.groups * merges[stage]) % 8 == 0
    assert f"groups merged by {merges[0]}" in str(entries[0])


def test_plan_reports_each_launch_from_the_kernel_s_parameters(extension, fused_models):
    """CTAs, main-loop iterations and shared memory come from CUTLASS's own Params: the stem (7x7, C padded
    to 4, tile K 64) needs ceil(7*7*4/64) = 4 iterations, not the 49 of a kernel that counts as if C were 64."""
    from cutlass_resnet.ops.select import kernel

    entries = cutlass_resnet.plan(fused_models["resnet50"], (1, 3, 224, 224), torch.float16, (8, 0))
    stem = entries[0]
    assert stem.choice.launch.mainloop_iterations == 4 and stem.choice.launch.ctas == 98  # 112*112/128 x 64/64
    assert "98 CTAs x 4 iterations" in str(stem)
    for e in entries:
        k, pr = kernel(e.choice.kernel), e.problem
        if e.problem.groups == 1 and e.problem.c % 8 == 0:
            m = pr.n * pr.p * pr.q
            slices = e.choice.split_k or 1
            assert e.choice.launch.ctas == -(-m // k.tile_m) * -(-pr.k // k.tile_n) * slices, e
            if k.hopper:  # a slice of C/slices channels
                assert e.choice.launch.mainloop_iterations == pr.r * pr.s * -(-pr.c // slices // k.tile_k), e
            else:  # CUTLASS's share of the GEMM K's iterations
                assert e.choice.launch.mainloop_iterations == -(-pr.r * pr.s * -(-pr.c // k.tile_k) // slices), e
        assert 0 < e.choice.launch.shared_memory <= 163 * 1024, e  # A100's per-block limit


def test_resnet50_on_hopper_by_the_time_model(extension, fused_models):
    """Batch 1: every conv of the last stage split along K (its grids would leave most SMs idle), no Hopper slice
    narrower than the TMA box. Batch 256: Hopper kernels for nine convs in ten or more (K=64 ones on the 128x64
    tile), above 40k images/s, never past the per-layer roofline (54.6k images/s with the residual reads).
    Estimates, all of them: nothing here ran on a GPU."""
    model = fused_models["resnet50"]
    one = cutlass_resnet.plan(model, (1, 3, 224, 224), torch.float16, (9, 0))
    assert all(e.choice.kernel for e in one)
    hopper_splits = [e for e in one if e.choice.kernel.startswith("sm90_") and e.choice.split_k]
    assert hopper_splits and all(e.problem.c // e.choice.split_k >= 64 for e in hopper_splits)
    layer4 = [e for e in one if e.module.startswith("layer4.")]
    assert len(layer4) == 10 and all(e.choice.split_k >= 2 for e in layer4), [str(e) for e in layer4]
    assert "split-K" in str(layer4[0]) and " us)" in str(layer4[0])
    many = cutlass_resnet.plan(model, (256, 3, 224, 224), torch.float16, (9, 0))
    assert sum(e.choice.kernel.startswith("sm90_") for e in many) >= 0.9 * len(many)
    assert {e.choice.kernel for e in many if e.problem.k == 64 and e.problem.r == 3} == {"sm90_f16_t128x64x64"}
    roofline = 256 / many.roofline_us * 1e6
    assert roofline == pytest.approx(54_600, rel=0.01)
    assert 40_000 < many.images_per_s <= roofline
    for entries in (one, many):
        assert entries.estimate_us == pytest.approx(sum(e.estimate_us for e in entries))
        assert all(e.estimate_us >= e.roofline_us > 0 for e in entries)


@pytest.mark.parametrize("arch", [(9, 0), [9, 0], "sm_90", "sm90a", "9.0", "9.0a", "SM_90"])
def test_plan_takes_every_spelling_of_a_gpu(extension, fused_models, arch):
    entries = cutlass_resnet.plan(fused_models["resnet18"], (1, 3, 64, 64), torch.float16, arch)
    assert any(e.choice.kernel.startswith("sm90_") for e in entries)


@pytest.mark.parametrize("arch", ["hopper", "9", (9,), (9.0, 0), torch.device("cpu"), True, None])
def test_plan_names_a_gpu_it_cannot_read(extension, fused_models, arch):
    with pytest.raises(ValueError, match="compute capability|capability comes from a CUDA device"):
        cutlass_resnet.plan(fused_models["resnet18"], (1, 3, 64, 64), torch.float16, arch)


def test_the_gpu_is_named_capability_and_arch_is_a_deprecated_alias(extension):
    """``arch`` names a model everywhere else (builders, from_pretrained, the CLI): plan's GPU is ``capability``."""
    with torch.device("meta"):
        model = cutlass_resnet.fuse_bn(cutlass_resnet.resnet18().eval())
    new = cutlass_resnet.plan(model, (1, 3, 64, 64), torch.float16, capability="9.0")
    with pytest.warns(FutureWarning, match="plan\\(arch=\\) is deprecated: pass capability="):
        old = cutlass_resnet.plan(model, (1, 3, 64, 64), torch.float16, arch="9.0")
    assert [e.choice.kernel for e in new] == [e.choice.kernel for e in old]
    assert any(k.startswith("sm90") for k in (e.choice.kernel for e in new))


def _converted(build) -> torch.nn.Module:
    with torch.device("meta"):
        return cutlass_resnet.convert(build().eval())


def _timm_resnet50d() -> torch.nn.Module:
    return pytest.importorskip("timm").create_model("resnet50d", pretrained=False)


@pytest.mark.parametrize("build", [torchvision.models.resnet50, _timm_resnet50d], ids=["resnet50", "timm:resnet50d"])
def test_converted_models_put_their_conv_flops_on_kernels(extension, build):
    """torchvision's and timm's ResNet-50 converted: over 95% of the conv FLOPs on CUTLASS kernels at 8.0 and 9.0
    (every conv, in fact), each residual add in its conv's epilogue."""
    model = _converted(build)
    for gpu in ((8, 0), (9, 0)):
        entries = cutlass_resnet.plan(model, (8, 3, 224, 224), torch.float16, gpu)
        assert len(entries) == sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
        assert entries.kernel_share > 0.95 and sum(e.residual for e in entries) == 16
        assert all(e.choice.kernel for e in entries), [str(e) for e in entries if not e.choice.kernel]


def test_the_kernel_share_weighs_convs_by_their_flops(extension):
    """A conv of 26 channels (no kernel takes it: 16-byte loads) and a dense one: the share is the dense conv's
    FLOPs over both."""
    model = torch.nn.Sequential(cutlass_resnet.nn.Conv2d(26, 64, 3, padding=1), cutlass_resnet.nn.Conv2d(64, 128, 1))
    entries = cutlass_resnet.plan(model, (1, 26, 56, 56), torch.float16, (8, 0))
    odd, dense = entries
    assert odd.choice.kernel is None and odd.choice.reason and dense.choice.kernel is not None
    assert odd.problem.flops == 2 * 56 * 56 * 64 * 26 * 9 and dense.problem.flops == 2 * 56 * 56 * 128 * 64
    assert entries.kernel_share == pytest.approx(dense.problem.flops / (dense.problem.flops + odd.problem.flops))


def test_int8_plans_use_int8_bytes_and_peaks_and_the_int8_kernel(extension, fused_models):
    from cutlass_resnet.ops import cost
    from cutlass_resnet.ops.select import Problem, roofline_us

    entries = cutlass_resnet.plan(fused_models["resnet50"], (256, 3, 224, 224), torch.int8, (9, 0))
    assert len(entries) == 53 and entries.kernel_share == 1.0
    assert {e.choice.kernel for e in entries[1:]} == {"sm80_s8_t128x128_64x3", "sm90_s8_t128x128x128"}
    assert entries[0].choice.kernel == "sm80_s8_stem_t64x64_64x10" and entries[0].choice.pad_channels == 4
    fp16 = cutlass_resnet.plan(fused_models["resnet50"], (256, 3, 224, 224), torch.float16, (9, 0))
    assert entries.estimate_us >= entries.roofline_us and entries.images_per_s > 1.5 * fp16.images_per_s
    assert entries[0].choice.launch.mainloop_iterations == 4  # the fixed-channels stem: 16 filter positions each
    grouped = cutlass_resnet.plan(fused_models["resnext50_32x4d"], (8, 3, 224, 224), torch.int8, (8, 0))
    reasons = {e.choice.reason for e in grouped if e.problem.groups > 1}
    assert reasons == {"grouped int8 convolution has no CUTLASS kernel"}
    assert all(e.choice.estimate_us > 0 for e in grouped)  # the int8 kernel design's estimate where none runs
    h100 = cost.GPUS[(9, 0)]
    # memory-bound: a 1x1 conv on a large map moves half the bytes; compute-bound: the int8 peak (datasheets)
    wide = Problem.from_conv((256, 256, 56, 56), (64, 256, 1, 1), (1, 1), (0, 0), (1, 1), 1)
    x, w, y = 256 * 56 * 56 * 256, 64 * 256, 256 * 56 * 56 * 64
    assert roofline_us(wide, (9, 0), int8=True) == pytest.approx((x + w + y) / 3350e9 * 1e6)
    deep = Problem.from_conv((256, 512, 7, 7), (512, 512, 3, 3), (1, 1), (1, 1), (1, 1), 1)
    assert roofline_us(deep, (9, 0), int8=True) == pytest.approx(deep.flops / 1978.9e12 * 1e6)
    assert h100.peak(int8=True) == 1978.9e12 and h100.peak() == 989.4e12


def test_a_quantized_model_plans_as_its_float_model_in_int8():
    torch.manual_seed(0)
    model = cutlass_resnet.resnet18(num_classes=10).eval()
    quantized = cutlass_resnet.quantize(model, torch.randn(2, 3, 32, 32), "max")
    as_int8 = cutlass_resnet.plan(quantized, (8, 3, 224, 224), capability=(8, 0))
    expected = cutlass_resnet.plan(cutlass_resnet.fuse_bn(model), (8, 3, 224, 224), torch.int8, (8, 0))
    assert [(e.module, e.problem, e.residual) for e in as_int8] == [(e.module, e.problem, e.residual) for e in expected]
    assert as_int8.estimate_us == expected.estimate_us
