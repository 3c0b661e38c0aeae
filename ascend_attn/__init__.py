"""ascend_attn: Ascend fused attention operators as PyTorch and MindSpore ops.

The PyTorch functions below are loaded on first use, so ``import ascend_attn`` (and
``ascend-attn info``) works without torch installed. MindSpore frontends live in
``ascend_attn.mindspore``.
"""
from __future__ import annotations

__version__ = "0.1.0"

_TORCH_API = ("ring_attention_update", "flash_attention_varlen_score", "flash_attention_unpadding_score_grad",
              "incre_flash_attention", "trans_quant_param", "self_attention")

_FLASH_ATTN_API = ("flash_attn_func", "flash_attn_varlen_func", "flash_attn_with_kvcache", "flash_attn_qkvpacked_func",
                   "flash_attn_kvpacked_func", "flash_attn_varlen_qkvpacked_func", "flash_attn_varlen_kvpacked_func")
_RING_API = ("ring_flash_attn_varlen_func", "zigzag_ring_flash_attn_varlen_func", "ring_flash_attn_func",
             "zigzag_ring_flash_attn_func", "zigzag_shard", "zigzag_unshard", "contiguous_shard", "contiguous_unshard")

__all__ = list(_TORCH_API) + list(_FLASH_ATTN_API) + list(_RING_API) + ["__version__"]


def __getattr__(name: str):
    if name in _TORCH_API:
        from . import torch_ops
        return getattr(torch_ops, name)
    if name in _FLASH_ATTN_API:
        from . import flash_attn_interface
        return getattr(flash_attn_interface, name)
    if name in _RING_API:
        from . import ring_attention
        return getattr(ring_attention, name)
    raise AttributeError(f"module 'ascend_attn' has no attribute {name!r}")
