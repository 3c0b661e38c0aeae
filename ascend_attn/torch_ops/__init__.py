"""PyTorch frontend: every op registered once with torch.library (namespace ``ascend_attn``)."""
from __future__ import annotations

from . import npu
from . import ring_attention_update as _rau
from .ring_attention_update import ring_attention_update

OP_DEFS = {"ring_attention_update": _rau.ring_attention_update_op}
NPU_KERNELS = {"ring_attention_update": _rau.npu_kernel}
NPU_SELECTION = npu.install(OP_DEFS, NPU_KERNELS)

__all__ = ["ring_attention_update", "OP_DEFS", "NPU_SELECTION"]
