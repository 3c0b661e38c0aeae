"""``ascend_attn::self_attention`` (ATB SelfAttention): schema, fallback, fake kernel, public function.

Flow: ``ascend_attn.self_attention`` (public: ATB enum names -> ints, host lists normalised, a single
cache tensor -> a one-element list) -> ``torch.ops.ascend_attn.self_attention`` (one schema; ``cache_k`` /
``cache_v`` are mutable tensor lists: the KV-cache flows write the new rows in place) -> the
device-generic kernel ``kernels/self_attention.py`` on every device, the fake kernel under FakeTensor /
torch.compile. Both run ``validation_self_attention.check_self_attention`` first; the eager kernel then
checks the mask's values (compressed content, 0/1 masks) before writing anything.

There is no NPU slot: on Ascend, SelfAttention is provided by the ATB library
(``atb::infer::SelfAttentionParam``), not by the ascend_attn kernel package.
"""
from __future__ import annotations

import torch

from .. import validation as V
from .. import validation_self_attention as SV
from ..kernels import self_attention as kernel

SCHEMA = (
    "(Tensor query, Tensor? key, Tensor? value, Tensor(a!)[] cache_k, Tensor(b!)[] cache_v, Tensor? attention_mask, "
    "int[] seq_len, int[]? token_offset=None, int[]? layer_id=None, int[]? batch_run_status=None, "
    "Tensor? slopes=None, Tensor? qk_descale=None, Tensor? qk_offset=None, Tensor? vpv_descale=None, "
    "Tensor? vpv_offset=None, Tensor? p_scale=None, Tensor? log_n=None, int head_num=1, int kv_head_num=0, "
    "float qk_scale=1.0, float q_scale=1.0, int calc_type=0, int kernel_type=0, int clamp_type=0, "
    "float clamp_min=0.0, float clamp_max=0.0, int mask_type=0, int kv_cache_cfg=0, int scale_type=0, "
    "int quant_type=0, int out_data_type=-1, int input_layout=0, bool batch_run_status_enable=False) -> Tensor"
)
TENSOR_OPTIONS = ("slopes", "qk_descale", "qk_offset", "vpv_descale", "vpv_offset", "p_scale", "log_n")
HOST_LISTS = ("token_offset", "layer_id", "batch_run_status")
ATTRIBUTES = ("head_num", "kv_head_num", "qk_scale", "q_scale", "calc_type", "kernel_type", "clamp_type", "clamp_min",
              "clamp_max", "mask_type", "kv_cache_cfg", "scale_type", "quant_type", "out_data_type", "input_layout",
              "batch_run_status_enable")
ENUM_ATTRIBUTES = ("calc_type", "kernel_type", "clamp_type", "mask_type", "kv_cache_cfg", "scale_type", "quant_type",
                   "out_data_type", "input_layout")


def present(caches) -> list:
    """The caches of a call: absent caches travel as one empty 1-D tensor (inductor cannot lower a mutable
    tensor list that is empty), which is dropped here."""
    return [t for t in caches if not (t.dim() == 1 and t.shape[0] == 0)]


def check(query, key, value, cache_k, cache_v, attention_mask, seq_len, options: dict) -> SV.SAPlan | None:
    """The shared validation on torch (or fake) tensors; ``options``: every other schema argument."""
    cache_k, cache_v = present(cache_k), present(cache_v)
    metas = {n: (V.meta_of(options[n]) if n in TENSOR_OPTIONS else options[n]) for n in options}
    for n in HOST_LISTS:
        metas[n] = None if metas[n] is None else list(metas[n])
    return SV.check_self_attention(
        V.meta_of(query), V.meta_of(key), V.meta_of(value), [V.meta_of(t) for t in cache_k],
        [V.meta_of(t) for t in cache_v], V.meta_of(attention_mask), seq_len=list(seq_len), **metas)


def _options(local: dict) -> dict:
    return {n: local[n] for n in TENSOR_OPTIONS + HOST_LISTS + ATTRIBUTES}


@torch.library.custom_op("ascend_attn::self_attention", mutates_args=("cache_k", "cache_v"), schema=SCHEMA)
def self_attention_op(query, key, value, cache_k, cache_v, attention_mask, seq_len, token_offset=None, layer_id=None,
                      batch_run_status=None, slopes=None, qk_descale=None, qk_offset=None, vpv_descale=None,
                      vpv_offset=None, p_scale=None, log_n=None, head_num=1, kv_head_num=0, qk_scale=1.0,
                      q_scale=1.0, calc_type=0, kernel_type=0, clamp_type=0, clamp_min=0.0, clamp_max=0.0,
                      mask_type=0, kv_cache_cfg=0, scale_type=0, quant_type=0, out_data_type=-1, input_layout=0,
                      batch_run_status_enable=False):
    plan = check(query, key, value, cache_k, cache_v, attention_mask, seq_len, _options(locals()))
    return kernel.self_attention(plan, query, key, value, present(cache_k), present(cache_v),
                                 attention_mask=attention_mask,
                                 slopes=slopes, log_n=log_n, qk_descale=qk_descale, vpv_descale=vpv_descale,
                                 p_scale=p_scale)


@self_attention_op.register_fake
def _fake(query, key, value, cache_k, cache_v, attention_mask, seq_len, token_offset=None, layer_id=None,
          batch_run_status=None, slopes=None, qk_descale=None, qk_offset=None, vpv_descale=None, vpv_offset=None,
          p_scale=None, log_n=None, head_num=1, kv_head_num=0, qk_scale=1.0, q_scale=1.0, calc_type=0,
          kernel_type=0, clamp_type=0, clamp_min=0.0, clamp_max=0.0, mask_type=0, kv_cache_cfg=0, scale_type=0,
          quant_type=0, out_data_type=-1, input_layout=0, batch_run_status_enable=False):
    plan = check(query, key, value, cache_k, cache_v, attention_mask, seq_len, _options(locals()))
    dtype = query.dtype if plan is None else getattr(torch, plan.out_dtype)
    return query.new_empty(query.shape, dtype=dtype)


def _caches(x, query) -> list:
    if x is None or (isinstance(x, (list, tuple)) and not x):
        return [query.new_empty(0)]  # absent (see present())
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _float(arg, value):
    SV.check_float(SV.OP, arg, value)
    return float(value)


def _host(arg, value):
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    return V.int_list(SV.OP, arg, value)


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
    if seq_len is None:
        raise V.value_error(SV.OP, "seq_len", "a list of per-batch query lengths", "None")
    attrs = {"head_num": head_num, "kv_head_num": kv_head_num, "batch_run_status_enable": batch_run_status_enable,
             **{n: _float(n, v) for n, v in (("qk_scale", qk_scale), ("q_scale", q_scale), ("clamp_min", clamp_min),
                                             ("clamp_max", clamp_max))}}
    given = dict(calc_type=calc_type, kernel_type=kernel_type, clamp_type=clamp_type, mask_type=mask_type,
                 kv_cache_cfg=kv_cache_cfg, scale_type=scale_type, quant_type=quant_type,
                 out_data_type=out_data_type, input_layout=input_layout)
    attrs.update({n: SV.enum_value(n, v) for n, v in given.items()})
    return torch.ops.ascend_attn.self_attention(
        query, key, value, _caches(cache_k, query), _caches(cache_v, query), attention_mask, _host("seq_len", seq_len),
        token_offset=_host("token_offset", token_offset), layer_id=_host("layer_id", layer_id),
        batch_run_status=_host("batch_run_status", batch_run_status), slopes=slopes, qk_descale=qk_descale,
        qk_offset=qk_offset, vpv_descale=vpv_descale, vpv_offset=vpv_offset, p_scale=p_scale, log_n=log_n, **attrs)
