"""``ascend_attn::flash_attention_varlen_score`` (TND forward V4) and
``ascend_attn::flash_attention_unpadding_score_grad`` (grad V4): schemas, fallback, fake kernels,
autograd (the forward's backward is the grad op) and the NPU slot.
"""
from __future__ import annotations

import torch

from .. import validation as V
from ..kernels import flash_attention as kernel
from ..kernels.masks import check_compressed_mask
from .op_args import OpArgs, host_lengths, lengths_tensor

_COMMON_ARGS = (
    "Tensor? pse=None, Tensor? drop_mask=None, Tensor? atten_mask=None, Tensor? prefix=None, "
    "float scale_value=1.0, float keep_prob=1.0, int pre_tokens=2147483647, "
    "int next_tokens=2147483647, int inner_precise=0, int sparse_mode=0, int pse_type=1, "
    "int[]? q_start_idx=None, int[]? kv_start_idx=None"
)
# Host lengths are int64 CPU tensors (op_args): data for torch.compile, values for the real kernels.
LENGTHS = ("actual_seq_qlen", "actual_seq_kvlen", "prefix")
FWD = OpArgs("flash_attention_varlen_score",
             "(Tensor query, Tensor key, Tensor value, int head_num, Tensor actual_seq_qlen, "
             f'Tensor actual_seq_kvlen, {_COMMON_ARGS}, str softmax_out_layout="") -> (Tensor, Tensor, Tensor)',
             lengths=LENGTHS)
GRAD = OpArgs("flash_attention_unpadding_score_grad",
              "(Tensor query, Tensor key, Tensor value, Tensor dy, int head_num, Tensor actual_seq_qlen, "
              "Tensor actual_seq_kvlen, Tensor softmax_max, Tensor softmax_sum, Tensor attention_in, "
              f'{_COMMON_ARGS}, str softmax_in_layout="") -> (Tensor, Tensor, Tensor, Tensor)',
              lengths=LENGTHS)
FWD_SCHEMA, GRAD_SCHEMA = FWD.schema, GRAD.schema
# the statistics' layout argument of each op: validation's softmax_layout
_LAYOUT_ARG = {FWD: "softmax_out_layout", GRAD: "softmax_in_layout"}


def check(args: OpArgs, values: dict, *, known: bool) -> V.FlashPlan | None:
    """The shared validation of either op on torch (``known``: real) or fake tensors (lengths unknown)."""
    grad = args is GRAD
    op = V.FA_GRAD_OP if grad else V.FA_FWD_OP
    kw = args.for_validation(values, known=known, op=op)
    kw["softmax_layout"] = kw.pop(_LAYOUT_ARG[args])
    return (V.check_flash_attention_grad if grad else V.check_flash_attention)(**kw)


def _checked_plan(args: OpArgs, a: dict) -> V.FlashPlan:
    """The CPU fallback's validation: the shared checks, then the compressed mask's content."""
    plan = check(args, a, known=True)
    if a["atten_mask"] is not None and plan.mask_form == "compressed":
        check_compressed_mask(a["atten_mask"], plan.sparse_mode,
                              V.FA_GRAD_OP if args is GRAD else V.FA_FWD_OP)
    return plan


def _forward(a: dict):
    plan = _checked_plan(FWD, a)
    return kernel.flash_attention_forward(a["query"], a["key"], a["value"], plan, pse=a["pse"],
                                          drop_mask=a["drop_mask"], atten_mask=a["atten_mask"])


def _grad(a: dict):
    plan = _checked_plan(GRAD, a)
    dq, dk, dv = kernel.flash_attention_backward(a["query"], a["key"], a["value"], a["dy"], a["softmax_max"],
                                                 a["softmax_sum"], a["attention_in"], plan, pse=a["pse"],
                                                 drop_mask=a["drop_mask"], atten_mask=a["atten_mask"])
    return dq, dk, dv, a["query"].new_empty((0,))  # dpse: always empty (V4 "dpse unused", §9k)


def _fake_forward(a: dict):
    check(FWD, a, known=False)
    query = a["query"]
    stats = query.new_empty((query.shape[0], query.shape[1], 8), dtype=torch.float32)
    return query.new_empty(query.shape), stats, stats.new_empty(stats.shape)


def _fake_grad(a: dict):
    check(GRAD, a, known=False)
    q, k, v = a["query"], a["key"], a["value"]
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape), q.new_empty((0,))


flash_attention_varlen_score_op = FWD.define(_forward)
flash_attention_varlen_score_op.register_fake(FWD.binding(_fake_forward))
flash_attention_unpadding_score_grad_op = GRAD.define(_grad)
flash_attention_unpadding_score_grad_op.register_fake(GRAD.binding(_fake_grad))


# ----------------------------------------------------------------------------- autograd

# forward arguments the backward needs as tensors (saved) / as plain values (on ctx)
_SAVED = ("query", "key", "value", "pse", "drop_mask", "atten_mask") + LENGTHS
_PLAIN = tuple(n for n in FWD.names if n not in _SAVED and n in GRAD.names)


def _setup_context(ctx, inputs, output):
    a = FWD.bind(inputs, {})
    out, smax, ssum = output
    ctx.mark_non_differentiable(smax, ssum)  # statistics, as in CANN and flash-attn
    ctx.save_for_backward(out, smax, ssum, *(a[n] for n in _SAVED))
    ctx.plain = {n: a[n] for n in _PLAIN}
    ctx.softmax_layout = a["softmax_out_layout"]


def _backward(ctx, grad_out, grad_max, grad_sum):
    out, smax, ssum, *saved = ctx.saved_tensors
    if grad_out is None:
        grad_out = torch.zeros_like(out)
    a = dict(zip(_SAVED, saved), **ctx.plain, dy=grad_out.contiguous(), softmax_max=smax, softmax_sum=ssum,
             attention_in=out, softmax_in_layout=ctx.softmax_layout)
    dq, dk, dv, _ = torch.ops.ascend_attn.flash_attention_unpadding_score_grad(*GRAD.ordered(a))
    return (dq, dk, dv) + (None,) * (len(FWD.names) - 3)


flash_attention_varlen_score_op.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------- public functions

def _prepare(op: str):
    """Normalisation of the public arguments of either op: host lengths as tensors, start indices
    (an int or a one-element list) as host lists, numbers as the schema types."""
    def prepare(a: dict) -> dict:
        for n in LENGTHS:
            a[n] = lengths_tensor(op, n, a[n])
        for n in ("q_start_idx", "kv_start_idx"):
            x = a[n]
            a[n] = V.int_list(op, n, [x] if isinstance(x, int) and not isinstance(x, bool) else x)
        for n, to in (("scale_value", float), ("keep_prob", float), ("pre_tokens", int), ("next_tokens", int)):
            a[n] = to(a[n])
        return a
    return prepare


@FWD.public(_prepare(V.FA_FWD_OP))
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


@GRAD.public(_prepare(V.FA_GRAD_OP))
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


# ----------------------------------------------------------------------------- NPU kernels

def _npu_arguments(args: OpArgs, a: dict) -> tuple:
    """(plan, the glue's arguments in schema order), host lengths as lists: the aclnn ops take host arrays."""
    plan = check(args, a, known=True)
    return plan, args.ordered(dict(a, **{n: host_lengths(args.name, n, a[n], known=True) for n in LENGTHS}))


def _npu_forward(a: dict):
    """NPU tensors: aclnnFlashAttentionVarLenScoreV4 through the glue extension (same validation)."""
    from .. import _npu_ext
    return _npu_ext.flash_attention_varlen_score(*_npu_arguments(FWD, a)[1])


def _npu_grad(a: dict):
    """NPU tensors: the ascend_attn package's AscendAttnFlashAttentionUnpaddingScoreGradV4 where its kernel
    implements the input, else CANN's FlashAttentionUnpaddingScoreGradV4 (``aclnn.fag_api``; same validation)."""
    plan, arguments = _npu_arguments(GRAD, a)
    from .. import _npu_ext, aclnn, backends
    package = aclnn.fag_api(plan, backends.probe_kernel_package() is None) is aclnn.FA_GRAD_PACKAGE
    return _npu_ext.flash_attention_unpadding_score_grad(*arguments, package)


npu_forward, npu_grad = FWD.binding(_npu_forward), GRAD.binding(_npu_grad)
