"""Shared test helpers: the brief's precision rule, measured against independent references."""

from __future__ import annotations

import torch
from torch import Tensor


def max_error(actual: Tensor, expected: Tensor) -> float:
    """max|actual - expected| in float64 (0 for empty tensors)."""
    if expected.numel() == 0:
        return 0.0
    return (actual.double() - expected.double()).abs().max().item()


def assert_within_twice_aten(ours: Tensor, aten: Tensor, reference: Tensor) -> None:
    """Our low-precision result is right when its error against a float64 reference is at most
    twice that of aten's own computation at the same precision. Half a unit in the last place
    of the largest output is allowed on top, so that a case where aten happens to be exact
    does not demand exactness of a single, differently ordered rounding."""
    assert ours.dtype == aten.dtype
    floor = 0.5 * torch.finfo(ours.dtype).eps * (reference.abs().max().item() if reference.numel() else 0.0)
    ours_err, aten_err = max_error(ours, reference), max_error(aten, reference)
    assert ours_err <= 2 * aten_err + floor, (
        f"{ours.dtype}: error {ours_err:.3e} against float64 exceeds twice aten's {aten_err:.3e} (+{floor:.1e})"
    )
