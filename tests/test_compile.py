"""torch.compile(fullgraph=True) and torch.export trace fused models through the op's fake implementation."""

from __future__ import annotations

import pytest
import torch
from conftest import max_error

import cutlass_resnet
from cutlass_resnet import fuse_bn, load_torchvision_state_dict
from cutlass_resnet.testing import torchvision_model_with_statistics

pytestmark = pytest.mark.slow


def fused_pair(arch):
    theirs = torchvision_model_with_statistics(arch, seed=9, image_size=32)
    ours = fuse_bn(getattr(cutlass_resnet, arch)().eval())
    load_torchvision_state_dict(ours, theirs.state_dict())
    return ours, theirs


def check_against_torchvision(y, theirs, x):
    """Within twice torchvision's own fp32 error against torchvision in float64."""
    with torch.no_grad():
        expected = theirs.double()(x.double())
        yardstick = theirs.float()(x)
    assert max_error(y, expected) <= 2 * max_error(yardstick, expected)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compile_fullgraph(backend):
    torch._dynamo.reset()
    ours, theirs = fused_pair("resnet18")
    compiled = torch.compile(ours, fullgraph=True, backend=backend)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        y = compiled(x)
    check_against_torchvision(y, theirs, x)


def test_export_with_dynamic_batch():
    ours, theirs = fused_pair("resnext50_32x4d")
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(ours, (torch.randn(2, 3, 32, 32),), dynamic_shapes={"x": {0: batch}})
    targets = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
    assert targets.count("cutlass_resnet.conv2d_fprop.default") == 53
    assert not [t for t in targets if "batch_norm" in t or "relu" in t or t.startswith("aten.add")]
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        y = program.module()(x)
    check_against_torchvision(y, theirs, x)
