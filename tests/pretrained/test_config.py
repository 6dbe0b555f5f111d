"""The hub config.json and pretrained_cfg schema: a config served wrong is refused with its key and value."""

from __future__ import annotations

import pytest

from cutlass_resnet import CorruptWeightsError, from_pretrained

from .hubrepo import REPO


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
