"""The native FA CPU kernels (``csrc/cpu/flash_attention_{fwd,grad}.cpp``) called from a FlashPlan.

``kernels.flash_attention`` routes its CPU work here when :func:`supported` says so; everything the
native kernels do not cover (float64, the forward ``hooks`` of ATB SelfAttention) stays eager.
The plan's index rules are passed as per-sequence band limits (``kernels.flash_attention.band_limits``,
the same function the eager keep rule uses), so both paths read one definition of the sparse modes.
"""
from __future__ import annotations

import torch

from . import use_native

FORWARD_OP = "flash_attention_varlen_score"
GRAD_OP = "flash_attention_unpadding_score_grad"
_PSE_FORMS = {None: 0, "full": 1, "row": 2, "alibi": 3, "slopes": 4}
_MASK_FORMS = {None: 0, "compressed": 0, "local": 1, "global": 2}  # compressed masks are index rules only
_UNBOUNDED = 1 << 62  # fa::kUnbounded
# Query positions / key positions per tile; 0 = the kernel's choice (tests set tiny blocks).
BLOCK_Q = 0
BLOCK_K = 0


def supported(op: str, query: torch.Tensor, *tensors, hooks=None) -> bool:
    """Whether the native kernel runs this call: CPU tensors, fp32/fp16/bf16, no forward hooks."""
    return hooks is None and query.dtype != torch.float64 and use_native(op, query, *tensors)


def _plan_args(plan, pse, drop_mask, atten_mask) -> dict:
    from ..kernels.flash_attention import band_limits, sequences
    lows, highs, prefixes = [], [], []
    for seq in sequences(plan):
        lo, hi, prefix = band_limits(plan, seq, atten_mask is not None)
        lows.append(-_UNBOUNDED if lo is None else lo)
        highs.append(_UNBOUNDED if hi is None else hi)
        prefixes.append(0 if prefix is None else prefix)
    mask_form = _MASK_FORMS[plan.mask_form] if atten_mask is not None else 0
    return dict(seq_q=list(plan.seq_q), seq_kv=list(plan.seq_kv), scale=plan.scale, pse=pse,
                pse_form=_PSE_FORMS[plan.pse_form], pse_type=plan.pse_type, q_start=plan.q_start,
                kv_start=plan.kv_start, drop_mask=drop_mask if plan.dropout else None, keep_prob=plan.keep_prob,
                atten_mask=atten_mask if mask_form else None, mask_form=mask_form, band_lo=lows, band_hi=highs,
                prefix=prefixes, stats_tnd=plan.softmax_layout == "TND", block_q=BLOCK_Q, block_k=BLOCK_K)


def forward(query, key, value, plan, *, pse=None, drop_mask=None, atten_mask=None):
    """Same contract as ``kernels.flash_attention.flash_attention_forward`` (without hooks)."""
    return torch.ops.ascend_attn_cpu.flash_attention_fwd(query, key, value,
                                                         **_plan_args(plan, pse, drop_mask, atten_mask))


def backward(query, key, value, dy, softmax_max, softmax_sum, attention_in, plan, *, pse=None, drop_mask=None,
             atten_mask=None):
    """Same contract as ``kernels.flash_attention.flash_attention_backward``."""
    return torch.ops.ascend_attn_cpu.flash_attention_grad(query, key, value, dy, softmax_max, softmax_sum,
                                                          attention_in,
                                                          **_plan_args(plan, pse, drop_mask, atten_mask))
