"""Fill the NPU slot of each op when a backend for ``npu`` tensors is usable.

torch's dispatcher then prefers the PrivateUse1 (``npu``) kernel over the device-generic
fallback for NPU tensors; CPU/CUDA tensors always take the fallback. Which backend serves
``npu`` is decided by ``backends.select`` so ``ascend-attn info`` and this code agree.
"""
from __future__ import annotations

from .. import backends

NPU_BACKEND = "torch_npu.kernels"


def install(op_defs: dict, npu_kernels: dict) -> dict[str, str]:
    """Register ``npu_kernels[name]`` on ``op_defs[name]`` for the ``npu`` device where selected.

    Returns ``{op name: backend chosen for npu tensors}``.
    """
    chosen = {}
    for name, op_def in op_defs.items():
        backend, _ = backends.select("torch", name, "npu")
        chosen[name] = backend.name
        if backend.name == NPU_BACKEND:
            op_def.register_kernel("npu")(npu_kernels[name])
    return chosen
