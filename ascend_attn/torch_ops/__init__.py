"""PyTorch frontend: every op registered once with torch.library (namespace ``ascend_attn``)."""
from __future__ import annotations

from . import flash_attention as _fa
from . import incre_flash_attention as _ifa
from . import npu
from . import ring_attention_update as _rau
from .flash_attention import flash_attention_unpadding_score_grad, flash_attention_varlen_score
from .incre_flash_attention import incre_flash_attention, trans_quant_param
from .ring_attention_update import ring_attention_update

OP_DEFS = {
    "ring_attention_update": _rau.ring_attention_update_op,
    "flash_attention_varlen_score": _fa.flash_attention_varlen_score_op,
    "flash_attention_unpadding_score_grad": _fa.flash_attention_unpadding_score_grad_op,
    "incre_flash_attention": _ifa.incre_flash_attention_op,
}
# NPU kernels that exist today: CANN's own RingAttentionUpdate V2 through torch_npu. The FA ops'
# NPU kernels come from the ascend_attn custom-op package (issue 5); until then NPU tensors take
# the device-generic fallback.
NPU_KERNELS = {"ring_attention_update": _rau.npu_kernel}
NPU_SELECTION = npu.install({k: v for k, v in OP_DEFS.items() if k in NPU_KERNELS}, NPU_KERNELS)

__all__ = ["ring_attention_update", "flash_attention_varlen_score", "flash_attention_unpadding_score_grad",
           "incre_flash_attention", "trans_quant_param", "OP_DEFS", "NPU_SELECTION"]
