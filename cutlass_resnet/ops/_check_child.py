"""One kernel's self-check in a process of its own: ``python -m cutlass_resnet.ops._check_child KERNEL DEVICE LIB``.

Prints JSON lines: ``{"ready": true}`` once it can use the GPU, ``{"case": "..."}`` before each case, and last
``{"reason": null}`` when the kernel passed, ``{"reason": "..."}`` when it failed, ``{"unavailable": "..."}`` when the
check could not run (no usable GPU, out of memory).
"""

import json
import sys

import torch

from cutlass_resnet.ops import build
from cutlass_resnet.ops.selfcheck import SelfCheckUnavailable, check_kernel


def main(kernel_name: str, device_index: str, library: str) -> dict:
    try:
        build.load_built(library)
        device = torch.device("cuda", int(device_index))
        torch.cuda.set_device(device)
        torch.ones(1, device=device).add_(1).item()  # a context and a launch: a busy or exclusive GPU fails here
    except Exception as exc:  # noqa: BLE001 - whatever it is, it says nothing about the kernel
        return {"unavailable": f"the check process could not use GPU {device_index}: {exc}"}
    print(json.dumps({"ready": True}), flush=True)
    try:
        return {"reason": check_kernel(kernel_name, device, progress=lambda case: say({"case": str(case)}))}
    except SelfCheckUnavailable as exc:
        return {"unavailable": str(exc)}


def say(line: dict) -> None:
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    say(main(*sys.argv[1:4]))
