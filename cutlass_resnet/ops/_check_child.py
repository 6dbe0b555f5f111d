"""One kernel's self-check in a process of its own: ``python -m cutlass_resnet.ops._check_child KERNEL DEVICE LIB``.

Prints one JSON line: ``{"reason": null}`` when the kernel passed, ``{"reason": "..."}`` when it
failed, ``{"unavailable": "..."}`` when the check could not run (out of memory).
"""

import json
import sys

import torch

from cutlass_resnet.ops import build
from cutlass_resnet.ops.selfcheck import SelfCheckUnavailable, check_kernel


def main(kernel_name: str, device_index: str, library: str) -> dict:
    build.load_built(library)
    device = torch.device("cuda", int(device_index))
    torch.cuda.set_device(device)
    try:
        return {"reason": check_kernel(kernel_name, device)}
    except SelfCheckUnavailable as exc:
        return {"unavailable": str(exc)}


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:4])), flush=True)
