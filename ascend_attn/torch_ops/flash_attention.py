"""``ascend_attn::flash_attention_varlen_score`` (TND forward V4) and
``ascend_attn::flash_attention_unpadding_score_grad`` (grad V4): schemas, fallback, fake kernels,
autograd (the forward's backward is the grad op) and the NPU slot.
"""
from __future__ import annotations

import torch

from .. import validation as V
from ..kernels import flash_attention as kernel

_COMMON_ARGS = (
    "Tensor? pse=None, Tensor? drop_mask=None, Tensor? atten_mask=None, int[]? prefix=None, "
    "float scale_value=1.0, float keep_prob=1.0, int pre_tokens=2147483647, "
    "int next_tokens=2147483647, int inner_precise=0, int sparse_mode=0, int pse_type=1, "
    "int[]? q_start_idx=None, int[]? kv_start_idx=None"
)
FWD_SCHEMA = (
    "(Tensor query, Tensor key, Tensor value, int head_num, int[] actual_seq_qlen, "
    f'int[] actual_seq_kvlen, {_COMMON_ARGS}, str softmax_out_layout="") -> (Tensor, Tensor, Tensor)'
)
GRAD_SCHEMA = (
    "(Tensor query, Tensor key, Tensor value, Tensor dy, int head_num, int[] actual_seq_qlen, "
    "int[] actual_seq_kvlen, Tensor softmax_max, Tensor softmax_sum, Tensor attention_in, "
    f'{_COMMON_ARGS}, str softmax_in_layout="") -> (Tensor, Tensor, Tensor, Tensor)'
)
_OPTION_NAMES = ("pse", "drop_mask", "atten_mask", "prefix", "scale_value", "keep_prob", "pre_tokens",
                 "next_tokens", "inner_precise", "sparse_mode", "pse_type", "q_start_idx", "kv_start_idx")


def _metas(options: dict) -> dict:
    return {k: (V.meta_of(v) if k in ("pse", "drop_mask", "atten_mask") else v) for k, v in options.items()}


def check_forward(query, key, value, head_num, actual_seq_qlen, actual_seq_kvlen, softmax_out_layout, options):
    return V.check_flash_attention(V.meta_of(query), V.meta_of(key), V.meta_of(value), head_num,
                                   list(actual_seq_qlen), list(actual_seq_kvlen), softmax_layout=softmax_out_layout,
                                   **_metas(options))


def check_grad(query, key, value, dy, head_num, actual_seq_qlen, actual_seq_kvlen, softmax_max, softmax_sum,
               attention_in, softmax_in_layout, options):
    return V.check_flash_attention_grad(
        *(V.meta_of(t) for t in (query, key, value, dy)), head_num, list(actual_seq_qlen), list(actual_seq_kvlen),
        V.meta_of(softmax_max), V.meta_of(softmax_sum), V.meta_of(attention_in), softmax_layout=softmax_in_layout,
        **_metas(options))


def _check_content(op, plan, options):
    mask = options["atten_mask"]
    if mask is not None and plan.mask_form == "compressed":
        kernel.check_compressed_mask(mask, plan.sparse_mode, op)


def _options(local: dict) -> dict:
    return {k: local[k] for k in _OPTION_NAMES}


@torch.library.custom_op("ascend_attn::flash_attention_varlen_score", mutates_args=(), schema=FWD_SCHEMA)
def flash_attention_varlen_score_op(query, key, value, head_num, actual_seq_qlen, actual_seq_kvlen, pse=None,
                                    drop_mask=None, atten_mask=None, prefix=None, scale_value=1.0, keep_prob=1.0,
                                    pre_tokens=2147483647, next_tokens=2147483647, inner_precise=0, sparse_mode=0,
                                    pse_type=1, q_start_idx=None, kv_start_idx=None, softmax_out_layout=""):
    options = _options(locals())
    plan = check_forward(query, key, value, head_num, actual_seq_qlen, actual_seq_kvlen, softmax_out_layout, options)
    _check_content(V.FA_FWD_OP, plan, options)
    return kernel.flash_attention_forward(query, key, value, plan, pse=pse, drop_mask=drop_mask, atten_mask=atten_mask)


@flash_attention_varlen_score_op.register_fake
def _fake_forward(query, key, value, head_num, actual_seq_qlen, actual_seq_kvlen, pse=None, drop_mask=None,
                  atten_mask=None, prefix=None, scale_value=1.0, keep_prob=1.0, pre_tokens=2147483647,
                  next_tokens=2147483647, inner_precise=0, sparse_mode=0, pse_type=1, q_start_idx=None,
                  kv_start_idx=None, softmax_out_layout=""):
    check_forward(query, key, value, head_num, actual_seq_qlen, actual_seq_kvlen, softmax_out_layout,
                  _options(locals()))
    stats = query.new_empty((query.shape[0], query.shape[1], 8), dtype=torch.float32)
    return query.new_empty(query.shape), stats, stats.new_empty(stats.shape)


@torch.library.custom_op("ascend_attn::flash_attention_unpadding_score_grad", mutates_args=(), schema=GRAD_SCHEMA)
def flash_attention_unpadding_score_grad_op(query, key, value, dy, head_num, actual_seq_qlen, actual_seq_kvlen,
                                            softmax_max, softmax_sum, attention_in, pse=None, drop_mask=None,
                                            atten_mask=None, prefix=None, scale_value=1.0, keep_prob=1.0,
                                            pre_tokens=2147483647, next_tokens=2147483647, inner_precise=0,
                                            sparse_mode=0, pse_type=1, q_start_idx=None, kv_start_idx=None,
                                            softmax_in_layout=""):
    options = _options(locals())
    plan = check_grad(query, key, value, dy, head_num, actual_seq_qlen, actual_seq_kvlen, softmax_max, softmax_sum,
                      attention_in, softmax_in_layout, options)
    _check_content(V.FA_GRAD_OP, plan, options)
    dq, dk, dv = kernel.flash_attention_backward(query, key, value, dy, softmax_max, softmax_sum, attention_in, plan,
                                                 pse=pse, drop_mask=drop_mask, atten_mask=atten_mask)
    return dq, dk, dv, query.new_empty((0,))  # dpse: always empty (V4 "dpse unused", §9k)


@flash_attention_unpadding_score_grad_op.register_fake
def _fake_grad(query, key, value, dy, head_num, actual_seq_qlen, actual_seq_kvlen, softmax_max, softmax_sum,
               attention_in, pse=None, drop_mask=None, atten_mask=None, prefix=None, scale_value=1.0, keep_prob=1.0,
               pre_tokens=2147483647, next_tokens=2147483647, inner_precise=0, sparse_mode=0, pse_type=1,
               q_start_idx=None, kv_start_idx=None, softmax_in_layout=""):
    check_grad(query, key, value, dy, head_num, actual_seq_qlen, actual_seq_kvlen, softmax_max, softmax_sum,
               attention_in, softmax_in_layout, _options(locals()))
    return query.new_empty(query.shape), key.new_empty(key.shape), value.new_empty(value.shape), query.new_empty((0,))


# ----------------------------------------------------------------------------- autograd

_FWD_ARG_NAMES = ("query", "key", "value", "head_num", "actual_seq_qlen", "actual_seq_kvlen") + _OPTION_NAMES + (
    "softmax_out_layout",)


def _setup_context(ctx, inputs, output):
    args = dict(zip(_FWD_ARG_NAMES, inputs))
    out, smax, ssum = output
    ctx.mark_non_differentiable(smax, ssum)  # statistics, as in CANN and flash-attn
    ctx.save_for_backward(args["query"], args["key"], args["value"], out, smax, ssum,
                          args["pse"], args["drop_mask"], args["atten_mask"])
    ctx.args = {k: v for k, v in args.items() if k not in ("query", "key", "value", "pse", "drop_mask", "atten_mask")}


def _backward(ctx, grad_out, grad_max, grad_sum):
    query, key, value, out, smax, ssum, pse, drop_mask, atten_mask = ctx.saved_tensors
    a = ctx.args
    if grad_out is None:
        grad_out = torch.zeros_like(out)
    dq, dk, dv, _ = torch.ops.ascend_attn.flash_attention_unpadding_score_grad(
        query, key, value, grad_out.contiguous(), a["head_num"], a["actual_seq_qlen"], a["actual_seq_kvlen"],
        smax, ssum, out, pse=pse, drop_mask=drop_mask, atten_mask=atten_mask, prefix=a["prefix"],
        scale_value=a["scale_value"], keep_prob=a["keep_prob"], pre_tokens=a["pre_tokens"],
        next_tokens=a["next_tokens"], inner_precise=a["inner_precise"], sparse_mode=a["sparse_mode"],
        pse_type=a["pse_type"], q_start_idx=a["q_start_idx"], kv_start_idx=a["kv_start_idx"],
        softmax_in_layout=a["softmax_out_layout"])
    return (dq, dk, dv) + (None,) * (len(_FWD_ARG_NAMES) - 3)


flash_attention_varlen_score_op.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------- public functions

def _host_options(op, prefix, q_start_idx, kv_start_idx):
    return (V.int_list(op, "prefix", prefix), V.int_list(op, "q_start_idx", _as_list(q_start_idx)),
            V.int_list(op, "kv_start_idx", _as_list(kv_start_idx)))


def _as_list(x):
    return [x] if isinstance(x, int) and not isinstance(x, bool) else x


def flash_attention_varlen_score(query, key, value, head_num, actual_seq_qlen, actual_seq_kvlen, *, pse=None,
                                 drop_mask=None, atten_mask=None, prefix=None, scale_value=1.0, keep_prob=1.0,
                                 pre_tokens=2147483647, next_tokens=2147483647, inner_precise=0, sparse_mode=0,
                                 pse_type=1, q_start_idx=None, kv_start_idx=None, softmax_out_layout=""):
    """FlashAttention varlen forward, TND layout (aclnnFlashAttentionVarLenScoreV4). Differentiable.

    Shapes: ``query [T1, N1, D]``, ``key``/``value`` ``[T2, N2, D]`` (N1 % N2 == 0, GQA: query head
    h reads kv head h // (N1/N2)), dtype fp16 / bf16 / fp32. ``actual_seq_qlen`` /
    ``actual_seq_kvlen``: cumulative lengths WITHOUT a leading 0 (``[2, 5, 9]``), trailing zeros
    switch batches off; list, tuple or 1-D integer tensor.

    ``atten_mask`` (1 = masked): ``[maxS1, maxS2]`` or ``[T1, T2]`` for sparse_mode 0/1, the
    compressed 2048x2048 (3072x2048 for mode 6) for modes 2-4, 6-8; None = full attention.
    ``pse``: pse_type 0/1 external (1-D packed ``N1*sum(S1*S2)``, 1-D rows ``N1*sum(S2)``, or
    ALiBi-compressed ``[B|1, N1, 1024, maxS2]``); 2/3 fp32 ALiBi slopes ``[N1]`` / ``[B, N1]``.
    ``drop_mask``: bit-packed uint8 keep bits (LSB first) in per-sequence ``[N1, S1, S2]`` order.

    Returns ``(attention_out [T1, N1, D], softmax_max [T1, N1, 8], softmax_sum [T1, N1, 8])``; the
    statistics hold per-sequence NTD data (``softmax_out_layout=""``) or TND data
    (``"same_as_input"``). Fully masked rows: out 0, max -FLT_MAX, sum +FLT_MAX.
    """
    op = V.FA_FWD_OP
    prefix, q_start_idx, kv_start_idx = _host_options(op, prefix, q_start_idx, kv_start_idx)
    return torch.ops.ascend_attn.flash_attention_varlen_score(
        query, key, value, head_num, V.int_list(op, "actual_seq_qlen", actual_seq_qlen),
        V.int_list(op, "actual_seq_kvlen", actual_seq_kvlen), pse=pse, drop_mask=drop_mask, atten_mask=atten_mask,
        prefix=prefix, scale_value=float(scale_value), keep_prob=float(keep_prob), pre_tokens=int(pre_tokens),
        next_tokens=int(next_tokens), inner_precise=inner_precise, sparse_mode=sparse_mode, pse_type=pse_type,
        q_start_idx=q_start_idx, kv_start_idx=kv_start_idx, softmax_out_layout=softmax_out_layout)


def flash_attention_unpadding_score_grad(query, key, value, dy, head_num, actual_seq_qlen, actual_seq_kvlen,
                                         softmax_max, softmax_sum, attention_in, *, pse=None, drop_mask=None,
                                         atten_mask=None, prefix=None, scale_value=1.0, keep_prob=1.0,
                                         pre_tokens=2147483647, next_tokens=2147483647, inner_precise=0,
                                         sparse_mode=0, pse_type=1, q_start_idx=None, kv_start_idx=None,
                                         softmax_in_layout=""):
    """FA grad V4 (aclnnFlashAttentionUnpaddingScoreGradV4 contract), TND.

    Arguments as :func:`flash_attention_varlen_score`, plus ``dy`` (like query), the forward's
    ``softmax_max`` / ``softmax_sum`` (``[T1, N1, 8]`` fp32, layout per ``softmax_in_layout``
    ``""`` = NTD, ``"same_as_input"`` = TND) and its output ``attention_in``.
    Returns ``(dq, dk, dv, dpse)``; ``dpse`` is always an empty tensor.
    """
    op = V.FA_GRAD_OP
    prefix, q_start_idx, kv_start_idx = _host_options(op, prefix, q_start_idx, kv_start_idx)
    return torch.ops.ascend_attn.flash_attention_unpadding_score_grad(
        query, key, value, dy, head_num, V.int_list(op, "actual_seq_qlen", actual_seq_qlen),
        V.int_list(op, "actual_seq_kvlen", actual_seq_kvlen), softmax_max, softmax_sum, attention_in, pse=pse,
        drop_mask=drop_mask, atten_mask=atten_mask, prefix=prefix, scale_value=float(scale_value),
        keep_prob=float(keep_prob), pre_tokens=int(pre_tokens), next_tokens=int(next_tokens),
        inner_precise=inner_precise, sparse_mode=sparse_mode, pse_type=pse_type, q_start_idx=q_start_idx,
        kv_start_idx=kv_start_idx, softmax_in_layout=softmax_in_layout)


# ----------------------------------------------------------------------------- NPU kernels

def npu_forward(query, key, value, head_num, actual_seq_qlen, actual_seq_kvlen, pse=None, drop_mask=None,
                atten_mask=None, prefix=None, scale_value=1.0, keep_prob=1.0, pre_tokens=2147483647,
                next_tokens=2147483647, inner_precise=0, sparse_mode=0, pse_type=1, q_start_idx=None,
                kv_start_idx=None, softmax_out_layout=""):
    """NPU tensors: aclnnFlashAttentionVarLenScoreV4 through the glue extension (same validation)."""
    options = _options(locals())
    check_forward(query, key, value, head_num, actual_seq_qlen, actual_seq_kvlen, softmax_out_layout, options)
    from .. import _npu_ext
    return _npu_ext.flash_attention_varlen_score(query, key, value, head_num, actual_seq_qlen, actual_seq_kvlen,
                                                 *options.values(), softmax_out_layout)


def npu_grad(query, key, value, dy, head_num, actual_seq_qlen, actual_seq_kvlen, softmax_max, softmax_sum,
             attention_in, pse=None, drop_mask=None, atten_mask=None, prefix=None, scale_value=1.0, keep_prob=1.0,
             pre_tokens=2147483647, next_tokens=2147483647, inner_precise=0, sparse_mode=0, pse_type=1,
             q_start_idx=None, kv_start_idx=None, softmax_in_layout=""):
    """NPU tensors: the ascend_attn package's AscendAttnFlashAttentionUnpaddingScoreGradV4 where its kernel
    implements the input, else CANN's FlashAttentionUnpaddingScoreGradV4 (``aclnn.fag_api``; same validation)."""
    options = _options(locals())
    plan = check_grad(query, key, value, dy, head_num, actual_seq_qlen, actual_seq_kvlen, softmax_max, softmax_sum,
                      attention_in, softmax_in_layout, options)
    from .. import _npu_ext, aclnn, backends
    package = aclnn.fag_api(plan, backends.probe_kernel_package() is None) is aclnn.FA_GRAD_PACKAGE
    return _npu_ext.flash_attention_unpadding_score_grad(query, key, value, dy, head_num, actual_seq_qlen,
                                                         actual_seq_kvlen, softmax_max, softmax_sum, attention_in,
                                                         *options.values(), softmax_in_layout, package)
