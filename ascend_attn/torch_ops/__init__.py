"""PyTorch frontend: every op registered once with torch.library (namespace ``ascend_attn``)."""
from __future__ import annotations

from . import flash_attention as _fa
from . import incre_flash_attention as _ifa
from . import npu
from . import ring_attention_update as _rau
from .flash_attention import flash_attention_unpadding_score_grad, flash_attention_varlen_score
from .incre_flash_attention import incre_flash_attention, trans_quant_param
from .ring_attention_update import ring_attention_update
from .self_attention import self_attention  # ATB's op: no NPU slot here (OP_DEFS), see its module

OP_DEFS = {
    "ring_attention_update": _rau.ring_attention_update_op,
    "flash_attention_varlen_score": _fa.flash_attention_varlen_score_op,
    "flash_attention_unpadding_score_grad": _fa.flash_attention_unpadding_score_grad_op,
    "incre_flash_attention": _ifa.incre_flash_attention_op,
}
# PrivateUse1 ("npu") kernels, registered only for the ops whose NPU backend is usable here
# (backends.select says which and why not; ascend-attn info prints it).
NPU_KERNELS = {
    "ring_attention_update": _rau.npu_kernel,
    "flash_attention_varlen_score": _fa.npu_forward,
    "flash_attention_unpadding_score_grad": _fa.npu_grad,
    "incre_flash_attention": _ifa.npu_kernel,
}
NPU_SELECTION = npu.install(OP_DEFS, NPU_KERNELS)

__all__ = ["ring_attention_update", "flash_attention_varlen_score", "flash_attention_unpadding_score_grad",
           "incre_flash_attention", "trans_quant_param", "self_attention", "OP_DEFS", "NPU_SELECTION"]
