"""``ascend_attn::self_attention`` (ATB SelfAttention): schema, fallback, fake kernel, public function.

Flow: ``ascend_attn.self_attention`` (public: ATB enum names -> ints, host lengths as int64 tensors, a single
cache tensor -> a one-element list) -> ``torch.ops.ascend_attn.self_attention`` (one schema; ``cache_k`` /
``cache_v`` are mutable tensor lists: the KV-cache flows write the new rows in place) -> the
device-generic kernel ``kernels/self_attention.py`` on every device, the fake kernel under FakeTensor /
torch.compile. Both run ``validation.self_attention.check_self_attention`` first; the eager kernel then
checks the mask's values (compressed content, 0/1 masks) before writing anything.

There is no NPU slot: on Ascend, SelfAttention is provided by the ATB library
(``atb::infer::SelfAttentionParam``), not by the ascend_attn kernel package.
"""
from __future__ import annotations

import torch

from .. import validation as V
from ..validation import self_attention as SV
from ..kernels import self_attention as kernel
from .op_args import OpArgs, lengths_tensor

# seq_len, token_offset, batch_run_status: int64 CPU tensors (op_args): data for torch.compile, values
# for the real kernel. layer_id stays int[]: a model's constant, one per layer.
SA = OpArgs("self_attention", (
    "(Tensor query, Tensor? key, Tensor? value, Tensor(a!)[] cache_k, Tensor(b!)[] cache_v, Tensor? attention_mask, "
    "Tensor seq_len, Tensor? token_offset=None, int[]? layer_id=None, Tensor? batch_run_status=None, "
    "Tensor? slopes=None, Tensor? qk_descale=None, Tensor? qk_offset=None, Tensor? vpv_descale=None, "
    "Tensor? vpv_offset=None, Tensor? p_scale=None, Tensor? log_n=None, int head_num=1, int kv_head_num=0, "
    "float qk_scale=1.0, float q_scale=1.0, int calc_type=0, int kernel_type=0, int clamp_type=0, "
    "float clamp_min=0.0, float clamp_max=0.0, int mask_type=0, int kv_cache_cfg=0, int scale_type=0, "
    "int quant_type=0, int out_data_type=-1, int input_layout=0, bool batch_run_status_enable=False) -> Tensor"),
    lengths=("seq_len", "token_offset", "batch_run_status"))
SCHEMA = SA.schema
ENUM_ATTRIBUTES = ("calc_type", "kernel_type", "clamp_type", "mask_type", "kv_cache_cfg", "scale_type", "quant_type",
                   "out_data_type", "input_layout")
FLOAT_ATTRIBUTES = ("qk_scale", "q_scale", "clamp_min", "clamp_max")


def present(caches) -> list:
    """The caches of a call: absent caches travel as one empty 1-D tensor (inductor cannot lower a mutable
    tensor list that is empty), which is dropped here."""
    return [t for t in caches if not (t.dim() == 1 and t.shape[0] == 0)]


def check(a: dict, *, known: bool) -> SV.SAPlan | None:
    """The shared validation on torch (``known``: real) or fake tensors (lengths unknown)."""
    a = dict(a, cache_k=present(a["cache_k"]), cache_v=present(a["cache_v"]))
    return SV.check_self_attention(**SA.for_validation(a, known=known, op=SV.OP))


def _forward(a: dict):
    plan = check(a, known=True)
    return kernel.self_attention(plan, a["query"], a["key"], a["value"], present(a["cache_k"]),
                                 present(a["cache_v"]), attention_mask=a["attention_mask"],
                                 **{n: a[n] for n in ("slopes", "log_n", "qk_descale", "vpv_descale", "p_scale")})


def _fake(a: dict):
    check(a, known=False)
    query = a["query"]
    dtype = SV.output_dtype(V.dtype_name(query.dtype), a["quant_type"], a["out_data_type"])
    return query.new_empty(query.shape, dtype=getattr(torch, dtype))


self_attention_op = SA.define(_forward, mutates_args=("cache_k", "cache_v"))
self_attention_op.register_fake(SA.binding(_fake))


def _caches(x, query) -> list:
    if x is None or (isinstance(x, (list, tuple)) and not x):
        return [query.new_empty(0)]  # absent (see present())
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _float(arg, value):
    SV.check_float(SV.OP, arg, value)
    return float(value)


def _one_or_list(value):
    return [value] if isinstance(value, int) and not isinstance(value, bool) else value


def _prepare(a: dict) -> dict:
    if a["seq_len"] is None:
        raise V.value_error(SV.OP, "seq_len", "a list of per-batch query lengths", "None")
    a.update({n: _float(n, a[n]) for n in FLOAT_ATTRIBUTES})
    a.update({n: SV.enum_value(n, a[n]) for n in ENUM_ATTRIBUTES})
    a["cache_k"], a["cache_v"] = _caches(a["cache_k"], a["query"]), _caches(a["cache_v"], a["query"])
    for n in SA.lengths:
        a[n] = lengths_tensor(SV.OP, n, _one_or_list(a[n]))
    a["layer_id"] = V.int_list(SV.OP, "layer_id", _one_or_list(a["layer_id"]))
    return a


@SA.public(_prepare)
def self_attention(query, key=None, value=None, cache_k=None, cache_v=None, attention_mask=None, *, seq_len,
                   token_offset=None, layer_id=None, batch_run_status=None, slopes=None, qk_descale=None,
                   qk_offset=None, vpv_descale=None, vpv_offset=None, p_scale=None, log_n=None, head_num,
                   kv_head_num=0, qk_scale=1.0, q_scale=1.0, calc_type=0, kernel_type=0, clamp_type=0,
                   clamp_min=0.0, clamp_max=0.0, mask_type=0, kv_cache_cfg=0, scale_type=0, quant_type=0,
                   out_data_type=-1, input_layout=0, batch_run_status_enable=False):
    """ATB SelfAttention (``atb::infer::SelfAttentionParam``): prefill and decode with a KV cache.

    Enumerations take ATB's int or its name, case-insensitive, with or without the prefix
    (``calc_type="PA_ENCODER"`` = ``"calc_type_pa_encoder"`` = 3): ``calc_type`` UNDEFINED 0 (prefill and
    decode in one call) / ENCODER 1 / DECODER 2 / PA_ENCODER 3; ``kernel_type`` DEFAULT 0 / HIGH_PRECISION 1;
    ``clamp_type`` UNDEFINED 0 / MIN_MAX 1; ``mask_type`` UNDEFINED 0 / NORM 1 / ALIBI 2 / NORM_COMPRESS 3 /
    ALIBI_COMPRESS 4 / ALIBI_COMPRESS_SQRT 5 / ALIBI_COMPRESS_LEFT_ALIGN 6; ``kv_cache_cfg`` K_CACHE_V_CACHE 0
    / K_BYPASS_V_BYPASS 1; ``scale_type`` TOR 0 / LOGN 1; ``quant_type`` UNDEFINED 0 / QKV_OFFLINE 2 /
    QKV_ONLINE 3; ``out_data_type`` ACL_DT_UNDEFINED -1 / ACL_FLOAT16 1 / ACL_BF16 27 (or a dtype);
    ``input_layout`` BSND 0 / BNSD 1.

    Tensors (N = head_num, Nkv = kv_head_num or N, D = head size; fp16 / bf16, int8 with full quantization):

    * PA_ENCODER: ``query [nTokens, N*D]`` or ``[nTokens, N, D]``, ``key`` / ``value`` the same with Nkv heads,
      ``seq_len`` per batch (query = key lengths); no caches.
    * KV-cache flows (UNDEFINED / ENCODER / DECODER, BSND): ``query`` as above holding the new rows of every
      batch (``seq_len[b]`` each, DECODER: 1), ``key`` / ``value`` the new key / value rows (None with
      kv-bypass), ``cache_k`` / ``cache_v`` ``[layer, batch, max_seq, Nkv*D]`` (``[batch, max_seq, Nkv*D]`` with
      ``batch_run_status_enable``), or with DECODER + kv-bypass a list of one tensor per batch
      ``[layer, max_seq_b, Nkv*D]`` (the kv tensor list). ``token_offset[b]``: the KV length after this call;
      the new rows go to cache rows ``[token_offset - seq_len, token_offset)`` of ``layer_id`` (in place,
      not with kv-bypass) and the query rows attend over the first ``token_offset`` rows.
    * BNSD (kv-bypass only): ``query [batch, N, S, D]`` (rows ``>= seq_len[b]`` unused),
      caches ``[layer, batch, Nkv, max_seq, D]``.

    ``attention_mask``: NORM ``[max_q, max_kv]`` / ``[B|1, max_q, max_kv]``, additive for the default fp16
    kernel, 0 = keep / 1 = masked for the high-precision kernel and bf16; ALIBI ``[N, max_q, max_kv]`` /
    ``[B|1, N, max_q, max_kv]`` (additive); rows are the batch's query rows from 0. NORM_COMPRESS: the
    ``[128, 128]`` causal mask; ALIBI_COMPRESS* (PA_ENCODER): the ``[256, 256]`` compressed bias with
    ``slopes [N]``. ``log_n``: float32, ``[batch]`` (DECODER) or ``[>= max seq_len]`` (PA_ENCODER).
    ``batch_run_status``: 0/1 per batch (with ``batch_run_status_enable``). Full quantization:
    ``qk_descale``, ``vpv_descale``, ``p_scale`` (offline only) float32 ``[N]``, ``qk_offset`` /
    ``vpv_offset`` int32 ``[N]`` (reserved: required, unused). Formulas and interpretations: README
    "ATB SelfAttention".

    Returns the attention output, shaped like ``query``, dtype of query (``out_data_type`` when quantised);
    rows of batches that are not computed (``batch_run_status`` 0, ``seq_len`` 0) and rows past the
    sequences are 0.
    """
