"""Exports of torchvision's weights (served locally) to safetensors folders with model cards."""

from __future__ import annotations

import copy
import hashlib
import json

import torch
from conftest import assert_within_twice_aten, max_error

from cutlass_resnet import from_pretrained
from cutlass_resnet.pretrained import export


def test_export_writes_every_variant_with_its_card(pointed, tv_resnet18, tmp_path):
    folders = export("resnet18", "IMAGENET1K_V1", tmp_path, progress=False)
    assert [f.name for f in folders] == [
        "resnet18.tv_in1k",
        "resnet18.tv_in1k.fused-fp16",
        "resnet18.tv_in1k.fused-bf16",
    ]
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = copy.deepcopy(tv_resnet18).double()(x.double())
    forms = [(False, torch.float32), (True, torch.float16), (True, torch.bfloat16)]
    for folder, (fused, dtype) in zip(folders, forms, strict=True):
        config = json.loads((folder / "config.json").read_text())
        assert (config["fused"], config["dtype"], config["source"]) == (fused, str(dtype)[6:], str(pointed))
        card = (folder / "README.md").read_text()
        assert hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest() in card
        assert "acc@1 69.758" in card and f"--variant {folder.name.split('.')[-1].replace('tv_in1k', 'fp32')}" in card
        model = from_pretrained(folder)
        assert model.fused is fused and model.fc.weight.dtype == dtype
        with torch.no_grad():
            ours = model(x.to(dtype))
        if dtype == torch.float32:
            assert max_error(ours, expected) < 1e-4
        else:  # torchvision's own computation at this precision sets the bar
            aten = copy.deepcopy(tv_resnet18).to(dtype)(x.to(dtype))
            assert_within_twice_aten(ours, aten, expected)
