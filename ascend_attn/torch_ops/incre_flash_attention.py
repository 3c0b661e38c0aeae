"""``ascend_attn::incre_flash_attention`` (IFA V2 int8 scenarios + V4 extensions) and
``trans_quant_param``: schema, fallback, fake kernel.
"""
from __future__ import annotations

import torch

from .. import validation as V
from ..kernels import incre_flash_attention as kernel
from .op_args import OpArgs, host_lengths, lengths_tensor

# actual_seq_lengths: an int64 CPU tensor (op_args): data for torch.compile, values for the real kernel.
IFA = OpArgs("incre_flash_attention", (
    "(Tensor query, Tensor[] key, Tensor[] value, Tensor? atten_mask=None, Tensor? actual_seq_lengths=None, "
    "Tensor? pse_shift=None, Tensor? dequant_scale1=None, Tensor? quant_scale1=None, Tensor? dequant_scale2=None, "
    "Tensor? quant_scale2=None, Tensor? quant_offset2=None, Tensor? antiquant_scale=None, "
    "Tensor? antiquant_offset=None, Tensor? block_table=None, int num_heads=1, str input_layout=\"BSH\", "
    "float scale_value=1.0, int num_key_value_heads=0, int block_size=0, int inner_precise=1, "
    "Tensor? kv_padding_size=None) -> Tensor"), lengths=("actual_seq_lengths",))
SCHEMA = IFA.schema


def check(a: dict, *, known: bool) -> V.IncrePlan:
    """The shared validation on torch (``known``: real) or fake tensors (lengths unknown)."""
    kw = IFA.for_validation(a, known=known, op=V.IFA_OP)
    # one tensor = that tensor; several (or none: validation rejects it) = the tensor-list form
    for n in ("key", "value"):
        kw[n] = kw[n][0] if len(kw[n]) == 1 else kw[n]
    return V.check_incre_flash_attention(**kw)


def _kv(tensors):
    return list(tensors) if len(tensors) > 1 else tensors[0]


def _forward(a: dict):
    plan = check(a, known=True)
    return kernel.incre_flash_attention(a["query"], _kv(a["key"]), _kv(a["value"]), plan,
                                        **{n: a[n] for n in IFA.tensors if n not in ("query", "key", "value")})


def _fake(a: dict):
    plan = check(a, known=False)
    return a["query"].new_empty(a["query"].shape, dtype=getattr(torch, plan.out_dtype))


incre_flash_attention_op = IFA.define(_forward)
incre_flash_attention_op.register_fake(IFA.binding(_fake))


def _npu(a: dict):
    """NPU tensors, through the glue: the package's AscendAttnIncreFlashAttentionV2 kernel where it implements the
    input, else CANN's IncreFlashAttentionV4 (``aclnn.ifa_api`` decides; same validation either way)."""
    plan = check(a, known=True)
    from .. import _npu_ext, aclnn, backends
    api = aclnn.ifa_api(plan, backends.probe_kernel_package() is None)
    lengths = a["actual_seq_lengths"]
    if api is aclnn.IFA_PACKAGE_V2:
        # key / value: DYNAMIC inputs (aclTensorList) as in CANN's V2 prototype: one tensor or one per batch;
        # its IR takes the lengths as an int64 device tensor
        values = dict(a, key=list(a["key"]), value=list(a["value"]),
                      actual_seq_lengths=None if lengths is None else lengths.to(a["query"].device))
        return _npu_ext.incre_flash_attention_package(*api.arguments(values), plan.out_dtype)
    values = dict(a, key=list(a["key"]), value=list(a["value"]),
                  actual_seq_lengths=host_lengths(V.IFA_OP, "actual_seq_lengths", lengths, known=True))
    return _npu_ext.incre_flash_attention_cann(*api.arguments(values), plan.out_dtype)


npu_kernel = IFA.binding(_npu)


def _prepare(a: dict) -> dict:
    a["key"], a["value"] = (list(x) if isinstance(x, (list, tuple)) else [x] for x in (a["key"], a["value"]))
    a["actual_seq_lengths"] = lengths_tensor(V.IFA_OP, "actual_seq_lengths", a["actual_seq_lengths"])
    a["scale_value"] = float(a["scale_value"])
    return a


@IFA.public(_prepare)
def incre_flash_attention(query, key, value, *, atten_mask=None, actual_seq_lengths=None, pse_shift=None,
                          dequant_scale1=None, quant_scale1=None, dequant_scale2=None, quant_scale2=None,
                          quant_offset2=None, antiquant_scale=None, antiquant_offset=None, block_table=None,
                          num_heads=1, input_layout="BSH", scale_value=1.0, num_key_value_heads=0, block_size=0,
                          inner_precise=1, kv_padding_size=None):
    """Incremental (decode) attention, aclnnIncreFlashAttentionV2 + V4 extensions.

    Layouts (query S = 1; output shaped like query):
      * ``"BSH"``: query ``(B, 1, Nq*D)``, key/value ``(B, S, Nkv*D)``
      * ``"BSND"``: query ``(B, 1, Nq, D)``, key/value ``(B, S, Nkv, D)``
      * ``"BNSD"``: query ``(B, Nq, 1, D)``, key/value ``(B, Nkv, S, D)``
    ``key``/``value``: a tensor, or a list of B tensors with batch 1 and their own S_b.
    Paged KV: ``block_table`` int32 ``(B, M)``, ``block_size``, caches
    ``(num_blocks, block_size, Nkv*D)`` or (BNSD query) ``(num_blocks, Nkv, block_size, D)``.
    GQA: query head h reads kv head ``h // (num_heads / num_key_value_heads)``.

    ``atten_mask`` (1 = masked) ``(B, S)``, ``(B, 1, S)``, ``(B, 1, 1, S)`` or per head
    ``(B|1, Nq, 1, S)``; ``actual_seq_lengths`` per-batch KV lengths (length 1 broadcasts);
    ``pse_shift`` ``(B|1, Nq, 1, S)``; ``kv_padding_size`` int64 one element (left padding).

    Quantisation (docs/semantics.md §7.5): int8 query/key/value with ``dequant_scale1``,
    ``quant_scale1``, ``dequant_scale2`` -> fp16 output (scenario B), plus ``quant_scale2`` [and
    ``quant_offset2``] -> int8 output (A); fp16/bf16 in with ``quant_scale2`` -> int8 out (C),
    per tensor or per channel (Nq*D values). Dequant scales: float32 values or uint64/int64 words
    from :func:`trans_quant_param`. Antiquant (float query, int8 cache): ``antiquant_scale`` /
    ``antiquant_offset`` per channel or per tensor, row 0 key, row 1 value.
    """


def trans_quant_param(scale, offset=None):
    """Quantisation words for ``dequant_scale1/2``, like ``torch_npu.npu_trans_quant_param``.

    ``scale``: float tensor (or number), scalar or 1-D; ``offset``: optional, broadcastable to it.
    Returns int64 words (the uint64 bit pattern): FP19-truncated scale bits | 1 << 46, and the
    offset (rounded half-even, clamped to [-256, 255]) as 9 bits at bits 37-45.
    """
    op = "trans_quant_param"
    scale = torch.as_tensor(scale)
    if not scale.is_floating_point():
        raise V.type_error(op, "scale", "a floating-point tensor", V.dtype_name(scale.dtype))
    if scale.dim() > 1:
        raise V.value_error(op, "scale", "a scalar or 1-D tensor", f"shape {list(scale.shape)}")
    if offset is not None:
        offset = torch.as_tensor(offset)
        if not offset.is_floating_point():
            raise V.type_error(op, "offset", "a floating-point tensor", V.dtype_name(offset.dtype))
        try:
            torch.broadcast_shapes(scale.shape, offset.shape)
        except RuntimeError:
            raise V.value_error(op, "offset", f"a shape broadcastable to scale {list(scale.shape)}",
                                f"shape {list(offset.shape)}") from None
    return kernel.trans_quant_param(scale, offset)
