"""MindSpore ``flash_attention_score``: MindSpore's functional signature over the V4 forward primitive.

``input_layout`` "TND" goes straight to :class:`~.flash_attention.FlashAttentionVarLenScoreV4`; "BSH",
"SBH", "BSND" and "BNSD" (uniform S1, S2 per batch) are a layout adapter around it: q/k/v to
``[B*S, N, D]``, lengths ``[S, 2S, ...]``, masks and pse to their TND forms, outputs back to the input
layout, statistics ``[B, N1, S1, 8]`` (the NTD data of the TND call). The shape rules of that mapping are
validation's (``check_fa_score_layout``, ``fa_score_tnd_values``); the TND call's own checks then run on
the mapped metas, so every message is the op's, under MindSpore's argument names. The backward is the
forward primitive's (gradients flow through the differentiable reshapes / transposes here).
"""
from __future__ import annotations

import functools

import mindspore as ms
from mindspore import ops

from .. import validation as V
from ._op import Primitive, per_attribute_set, renamed
from .flash_attention import (FWD_OP, MAX_TOKENS, FlashAttentionVarLenScoreV4, check_inputs, check_mask_content,
                              reject_reserved)

# MindSpore's names of the functional's arguments where they differ from the validation names.
FUNCTIONAL_MS_NAMES = {"pse": "real_shift", "atten_mask": "attn_mask", "scale_value": "scalar_value"}
NON_TND_LAYOUTS = V.FA_SCORE_UNIFORM_LAYOUTS
INPUT_LAYOUTS = V.FA_SCORE_LAYOUTS
NON_TND_SPARSE_MODES = V.FA_SCORE_UNIFORM_SPARSE_MODES
LayoutPlan = V.FaLayoutPlan


@functools.lru_cache(maxsize=None)
def layout_plan(layout: str, head_num: int, q_shape: tuple, k_shape: tuple, v_shape: tuple,
                mask_shape: tuple | None, pse_shape: tuple | None, seq_given: bool) -> LayoutPlan:
    """Shape checks of a non-TND call and its TND mapping (validation's; cached: GRAPH_MODE runs it at compile
    time)."""
    return V.check_fa_score_layout(FWD_OP, layout, head_num, q_shape, k_shape, v_shape, mask_shape, pse_shape,
                                   seq_given, mask_arg="attn_mask", pse_arg="real_shift")


def _shape_of(x):
    return None if x is None else tuple(x.shape)


def _in_float32_if_bf16(move):
    """Run a data-movement function (reshape / transpose) on a bf16 tensor through float32.

    MindSpore's CPU backend has no bfloat16 Transpose / Reshape kernels, so GRAPH_MODE fails to
    compile them; bf16 -> fp32 -> bf16 is exact, and Cast has bf16 CPU kernels."""
    def wrapped(x, *args):
        if x.dtype == ms.bfloat16:
            return ops.cast(move(ops.cast(x, ms.float32), *args), ms.bfloat16)
        return move(x, *args)
    return wrapped


@_in_float32_if_bf16
def _to_tnd(x, layout, n, d):
    """[B, S, H] / [S, B, H] / [B, S, N, D] / [B, N, S, D] -> [B*S, N, D] (differentiable MindSpore ops)."""
    if layout == "SBH":
        x = ops.transpose(x, (1, 0, 2))
    elif layout == "BNSD":
        x = ops.transpose(x, (0, 2, 1, 3))
    return ops.reshape(x, (-1, n, d))


@_in_float32_if_bf16
def _from_tnd(x, layout, b, s, n, d):
    """[B*S, N, D] -> the input layout."""
    if layout in ("BSH", "SBH"):
        x = ops.reshape(x, (b, s, n * d))
        return ops.transpose(x, (1, 0, 2)) if layout == "SBH" else x
    x = ops.reshape(x, (b, s, n, d))
    return ops.transpose(x, (0, 2, 1, 3)) if layout == "BNSD" else x


def _mask_to_tnd(mask, form, b, s1, s2):
    if form == "squeeze":
        return ops.reshape(mask, (s1, s2))
    if form == "global":
        # Block-diagonal [T1, T2]: sequence b's block is its mask, everything across sequences masked
        # (never read by the kernel, which slices the diagonal blocks).
        own = ops.reshape(ops.cast(mask, ms.bool_), (b, s1, 1, s2))
        across = ops.reshape(ops.eye(b, b, ms.int32) == 0, (b, 1, b, 1))
        return ops.reshape(ops.logical_or(own, across), (b * s1, b * s2))
    return mask


@_in_float32_if_bf16
def _pse_to_tnd(pse, form, b, n1, s1, s2):
    if form == "broadcast":
        return ops.reshape(ops.broadcast_to(pse, (b, n1, s1, s2)), (-1,))
    if form == "flat":
        return ops.reshape(pse, (-1,))
    return pse


class FlashAttentionScoreCell(Primitive):
    """``flash_attention_score`` for one set of attributes: layout conversion around the V4 primitive.

    TND: straight to :class:`FlashAttentionVarLenScoreV4`. BSH / SBH / BSND / BNSD (uniform S1, S2 per
    batch): q/k/v to ``[B*S, N, D]``, lengths ``[S, 2S, ...]``, masks and pse to their TND forms, outputs
    back to the input layout, statistics ``[B, N1, S1, 8]`` (the NTD data of the TND call).
    """

    OP = FWD_OP
    INPUTS = ("query", "key", "value", "real_shift", "drop_mask", "attn_mask", "prefix", "actual_seq_qlen",
              "actual_seq_kvlen")
    INT_LISTS = ("prefix", "actual_seq_qlen", "actual_seq_kvlen")

    def __init__(self, head_num, keep_prob=1.0, scalar_value=1.0, pre_tokens=MAX_TOKENS, next_tokens=MAX_TOKENS,
                 inner_precise=0, input_layout="TND", sparse_mode=0, softmax_out_layout=""):
        super().__init__()
        V.check_fa_score_attributes(FWD_OP, input_layout, sparse_mode, softmax_out_layout)
        with renamed(FUNCTIONAL_MS_NAMES):
            self.prim = FlashAttentionVarLenScoreV4(head_num, scalar_value, keep_prob, pre_tokens, next_tokens,
                                                    inner_precise, sparse_mode, 1, softmax_out_layout)
        self.head_num = head_num
        self.input_layout = input_layout

    def plan(self, query, key, value, real_shift, attn_mask, seq_given):
        return layout_plan(self.input_layout, self.head_num, tuple(query.shape), tuple(key.shape),
                           tuple(value.shape), _shape_of(attn_mask), _shape_of(real_shift), seq_given)

    def check(self, *args, **kwargs):
        """Host check of a call (MindSpore names); non-TND: layout shapes, then the TND call's checks."""
        call = self.bind(args, kwargs, required=("query", "key", "value"))
        if self.input_layout == "TND":
            with renamed(FUNCTIONAL_MS_NAMES):
                self.prim.check(**call)
            return call
        seq_given = call["actual_seq_qlen"] is not None or call["actual_seq_kvlen"] is not None
        plan = self.plan(call["query"], call["key"], call["value"], call["real_shift"], call["attn_mask"], seq_given)
        with renamed(FUNCTIONAL_MS_NAMES):
            values = V.fa_score_tnd_values(plan, *(V.meta_of(call[n]) for n in ("query", "key", "value", "real_shift",
                                                                                   "drop_mask", "attn_mask")))
            values["prefix"] = V.int_list(FWD_OP, "prefix", call["prefix"])
            tnd_plan = check_inputs(FWD_OP, self.prim.attrs, values)
            if plan.mask_form == "keep":
                check_mask_content(FWD_OP, tnd_plan, call["attn_mask"])
        return call

    def construct(self, query, key, value, real_shift=None, drop_mask=None, attn_mask=None, prefix=None,
                  actual_seq_qlen=None, actual_seq_kvlen=None):
        if self.input_layout == "TND":
            return self.prim(query, key, value, real_shift, drop_mask, None, attn_mask, prefix, actual_seq_qlen,
                             actual_seq_kvlen)
        plan = self.plan(query, key, value, real_shift, attn_mask,
                         actual_seq_qlen is not None or actual_seq_kvlen is not None)
        layout, b, s1 = self.input_layout, plan.batch, plan.s1
        out, softmax_max, softmax_sum = self.prim(
            _to_tnd(query, layout, plan.n1, plan.d), _to_tnd(key, layout, plan.n2, plan.dk),
            _to_tnd(value, layout, plan.n2, plan.dk),
            None if real_shift is None else _pse_to_tnd(real_shift, plan.pse_form, b, plan.n1, s1, plan.s2),
            None if drop_mask is None else ops.reshape(drop_mask, (-1,)), None,
            None if attn_mask is None else _mask_to_tnd(attn_mask, plan.mask_form, b, s1, plan.s2),
            prefix, plan.seq_q, plan.seq_kv)
        stats_shape = (b, plan.n1, s1, 8)
        return (_from_tnd(out, layout, b, s1, plan.n1, plan.d), ops.reshape(softmax_max, stats_shape),
                ops.reshape(softmax_sum, stats_shape))


_score_cell = per_attribute_set(FlashAttentionScoreCell)


def flash_attention_score(query, key, value, head_num, real_shift=None, drop_mask=None, padding_mask=None,
                          attn_mask=None, prefix=None, actual_seq_qlen=None, actual_seq_kvlen=None, keep_prob=1.0,
                          scalar_value=1.0, pre_tokens=2147483647, next_tokens=2147483647, inner_precise=0,
                          input_layout="TND", sparse_mode=0, softmax_out_layout=""):
    r"""MindSpore's ``ops.flash_attention_score`` signature over the V4 ops; PyNative and GRAPH_MODE.

    ``input_layout`` "TND": query ``[T1, N1, D]``, key / value ``[T2, N2, D]``, ``actual_seq_qlen`` /
    ``actual_seq_kvlen`` cumulative without a leading 0 (list, tuple or 1-D int tensor); ``attn_mask``
    ``[maxS1, maxS2]`` / ``[T1, T2]`` (sparse_mode 0/1) or compressed (2-4, 6-8); ``real_shift`` the
    packed 1-D pse forms or ``[B|1, N1, 1024, maxS2]``; statistics ``[T1, N1, 8]`` (NTD data, or TND
    with ``softmax_out_layout="same_as_input"``).

    "BSH" ``[B, S, H]``, "SBH" ``[S, B, H]``, "BSND" ``[B, S, N, D]``, "BNSD" ``[B, N, S, D]``: uniform
    S1 / S2 per batch, no length lists; ``attn_mask`` ``[S1, S2]``, ``[1, 1, S1, S2]``, ``[B, 1, S1, S2]``
    or compressed (per-head ``[B, N1, S1, S2]`` masks raise ValueError); ``real_shift`` ``[B, N1, S1, S2]``,
    ``[1, N1, S1, S2]``, ``[B, N1, 1, S2]`` or ``[B|1, N1, 1024, S2]``; ``drop_mask`` bit-packed in
    ``[B, N1, S1, S2]`` order; sparse_mode 0-4, 6; statistics ``[B, N1, S1, 8]``.

    ``real_shift`` is pse with pse_type 1 (``(QK^T + pse) * scale``); ``scalar_value`` is the scale;
    ``padding_mask`` is reserved and must be None. Returns ``(attention_out, softmax_max, softmax_sum)``,
    differentiable w.r.t. query, key and value (grad: FlashAttentionUnpaddingScoreGradV4).
    """
    reject_reserved(FWD_OP, "padding_mask", padding_mask is not None)
    cell = _score_cell(head_num, keep_prob, scalar_value, pre_tokens, next_tokens, inner_precise, input_layout,
                       sparse_mode, softmax_out_layout)
    return cell(query, key, value, real_shift, drop_mask, attn_mask, prefix, actual_seq_qlen, actual_seq_kvlen)
