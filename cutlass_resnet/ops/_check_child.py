"""Kernels' self-checks in a process of their own: ``python -m cutlass_resnet.ops._check_child KERNEL[,KERNEL...] DEVICE
LIB``.

Prints JSON lines: ``{"ready": true}`` once it can use the GPU; for each kernel ``{"kernel": "..."}``, then
``{"case": "..."}`` before each case and ``{"verdict": {"kernel": ..., "reason": ...}}`` (null: passed); and last
``{"reason": ..., "verdicts": {...}}`` (the first kernel's, and every kernel's), or ``{"unavailable": "..."}`` when the
check could not run (no usable GPU, out of memory).
"""

import json
import sys

import torch

from cutlass_resnet.ops import library as loader
from cutlass_resnet.ops.selfcheck import SelfCheckUnavailable, check_kernel


def main(kernel_names: str, device_index: str, library_path: str) -> dict:
    """Check each kernel of the comma-separated ``kernel_names`` in turn."""
    try:
        loader.load_built(library_path)
        device = torch.device("cuda", int(device_index))
        torch.cuda.set_device(device)
        torch.ones(1, device=device).add_(1).item()  # a context and a launch: a busy or exclusive GPU fails here
    except Exception as exc:  # noqa: BLE001 - whatever it is, it says nothing about the kernel
        return {"unavailable": f"the check process could not use GPU {device_index}: {exc}"}
    say({"ready": True})
    names, verdicts = kernel_names.split(","), {}
    try:
        for name in names:
            say({"kernel": name})
            verdicts[name] = check_kernel(name, device, progress=lambda case: say({"case": str(case)}))
            say({"verdict": {"kernel": name, "reason": verdicts[name]}})
    except SelfCheckUnavailable as exc:
        return {"unavailable": str(exc)}
    return {"reason": verdicts[names[0]], "verdicts": verdicts}


def say(line: dict) -> None:
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    say(main(*sys.argv[1:4]))
