"""The Hopper kernels' TMA descriptors, host-only: every encode is checked, and descriptors are reused.

No CUDA driver is loaded here, so the driver's encoders are replaced (``cr_testing_set_tensor_map_encoders``)
by Python functions that record their arguments and return a chosen CUresult.
"""

from __future__ import annotations

import ctypes

import pytest
import torch

CL = torch.channels_last
CUDA_SUCCESS, CUDA_ERROR_INVALID_VALUE, CUDA_ERROR_NOT_FOUND = 0, 1, 500
TMA_ENCODE = 3000  # CR_STATUS_TMA_ENCODE in conv_api.h

u32p, u64p, intp = ctypes.POINTER(ctypes.c_uint32), ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ctypes.c_int)
IM2COL = ctypes.CFUNCTYPE(
    ctypes.c_int,
    *(ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_void_p, u64p, u64p, intp, intp),
    *(ctypes.c_uint32, ctypes.c_uint32, u32p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int),
)
TILED = ctypes.CFUNCTYPE(
    ctypes.c_int,
    *(ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_void_p, u64p, u64p, u32p, u32p),
    *(ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int),
)


def set_encoders(library: ctypes.CDLL, im2col: object, tiled: object) -> None:
    """Install ctypes callbacks as the tensor-map encoders (None, None: the driver's again)."""
    pointers = [None if f is None else ctypes.cast(f, ctypes.c_void_p) for f in (im2col, tiled)]
    library.cr_testing_set_tensor_map_encoders(*pointers)


class Encoders:
    """Stand-ins for the driver's encoders: each records its call and returns ``self.result``."""

    def __init__(self, library: ctypes.CDLL) -> None:
        self.library, self.result = library, CUDA_SUCCESS
        self.im2col_calls: list[dict] = []
        self.tiled_calls: list[int] = []

        def im2col(desc, dtype, rank, address, dims, strides, lower, upper, c, pixels, elem_strides, *modes):
            self.im2col_calls.append(
                dict(
                    address=address,
                    dims=[dims[i] for i in range(rank)],
                    element_strides=[elem_strides[i] for i in range(rank)],
                    lower=[lower[i] for i in range(rank - 2)],
                )
            )
            return self.result

        def tiled(desc, dtype, rank, address, *rest):
            self.tiled_calls.append(address)
            return self.result

        self._im2col, self._tiled = IM2COL(im2col), TILED(tiled)  # kept alive while installed

    def __enter__(self) -> Encoders:
        set_encoders(self.library, self._im2col, self._tiled)
        return self

    def __exit__(self, *exc) -> None:
        set_encoders(self.library, None, None)


@pytest.fixture
def library(extension):
    lib = ctypes.CDLL(extension.library_path())
    lib.cr_testing_set_tensor_map_encoders.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    return lib


def hopper(dtype=torch.float16):
    from cutlass_resnet.ops.select import kernel

    return kernel("sm90_f16_t128x128x64" if dtype == torch.float16 else "sm90_bf16_t128x128x64")


def conv(n=2, c=64, k=64, size=12, stride=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, size, size, generator=g).half().contiguous(memory_format=CL)
    w = torch.randn(k, c, 3, 3, generator=g).half().contiguous(memory_format=CL)
    return x, w, torch.zeros(k, dtype=torch.half), None, [stride, stride], [1, 1], [1, 1], 1, True


def test_without_a_driver_the_descriptors_are_encoded_on_the_host(extension, library):
    """No CUDA driver is loaded here: host stand-ins check what the driver documents for each encode and fill the
    descriptors, so that a dry run gets as far as a launch would (it once ended in CUDA_ERROR_NOT_FOUND)."""
    assert hopper().dry_run(*conv()) == 0
    assert hopper(torch.bfloat16).dry_run(*[t.bfloat16() if torch.is_tensor(t) else t for t in conv()]) == 0


def test_a_failed_encode_is_the_kernel_s_status(extension, library):
    with Encoders(library) as encoders:
        encoders.result = CUDA_ERROR_INVALID_VALUE
        status = hopper().dry_run(*conv(seed=1))
        assert status == TMA_ENCODE + CUDA_ERROR_INVALID_VALUE
        assert "CUDA_ERROR_INVALID_VALUE" in torch.ops.cutlass_resnet_C.status_string(status)
        encoders.result = CUDA_SUCCESS  # the failure was not kept: the same launch encodes again, and succeeds
        assert hopper().dry_run(*conv(seed=1)) == 0


def test_the_im2col_descriptor_is_the_convolution_s(extension, library):
    args = conv(n=2, c=64, size=12, stride=2, seed=2)
    with Encoders(library) as encoders:
        assert hopper().dry_run(*args) == 0
        first = encoders.im2col_calls[0]
        assert first["address"] == args[0].data_ptr()
        assert first["dims"] == [64, 12, 12, 2]  # C, W, H, N
        assert first["element_strides"][1:3] == [2, 2]  # the conv's traversal stride
        assert first["lower"] == [-1, -1]  # the padding
        assert encoders.tiled_calls == [args[1].data_ptr()], "the filter is a tiled tensor map"


def test_descriptors_are_encoded_once_per_problem_and_operands(extension, library):
    """Each launch allocates its output; where the allocator hands back the same address, as CUDA's caching
    allocator does in a loop, the launch reuses the descriptors instead of encoding them again."""
    args = conv(seed=4)
    im2col_encodes = [0]

    def count(*_):
        im2col_encodes[0] += 1
        return CUDA_SUCCESS

    im2col, tiled = IM2COL(count), TILED(lambda *_: CUDA_SUCCESS)
    set_encoders(library, im2col, tiled)
    try:
        for _ in range(20):
            assert hopper().dry_run(*args) == 0
        per_params = 3  # the input, and the output both as the epilogue's source and as its destination
        assert im2col_encodes[0] % per_params == 0
        assert im2col_encodes[0] < 20 * per_params
        before = im2col_encodes[0]
        assert hopper().dry_run(*conv(seed=5)) == 0  # other operands: encoded anew
        assert im2col_encodes[0] == before + per_params
    finally:
        set_encoders(library, None, None)


def test_strides_tma_cannot_traverse_are_refused_before_any_encode(extension, library):
    with Encoders(library) as encoders, pytest.raises(RuntimeError, match=r"TMA im2col limits \(stride above 8\)"):
        hopper().dry_run(*conv(size=40, stride=9))
    assert not encoders.im2col_calls


def test_sm80_kernels_prepare_their_params_host_only(extension):
    from cutlass_resnet.ops.select import kernel

    assert kernel("sm80_f16_t64x64_64x5").dry_run(*conv()) == 0
    with pytest.raises(RuntimeError, match="x must be a 4-D channels_last"):
        kernel("sm80_f16_t64x64_64x5").dry_run(conv()[0].contiguous(), *conv()[1:])
