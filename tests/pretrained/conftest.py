"""Fixtures of the pretrained tests: a torchvision model with statistics, an input, and the hub repo serving it."""

from __future__ import annotations

import json

import pytest
import torch
from servers import Repo

from cutlass_resnet.testing import torchvision_model_with_statistics

from .hubrepo import REPO, safetensors_bytes


@pytest.fixture(scope="module")
def tv18():
    """torchvision resnet18 with non-trivial BatchNorm statistics (so folding is exercised), 10 classes."""
    return torchvision_model_with_statistics("resnet18", seed=5, num_classes=10)


@pytest.fixture
def x():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def timm_repo(hub, tv18):
    """``timm/resnet18.tv_in1k`` as timm publishes it: torchvision keys, timm's config.json."""
    config = {"architecture": "resnet18", "num_classes": 10, "pretrained_cfg": {"tag": "tv_in1k"}}
    hub.state.repos[REPO] = Repo(
        {"model.safetensors": safetensors_bytes(tv18), "config.json": json.dumps(config).encode()}
    )
    return hub
