"""ATB SelfAttention in float64 numpy, written from README "ATB SelfAttention"; no code shared with kernels/.

Loops over batches and heads, whole score matrices per (batch, head). Enumerations are ATB's ints.
The rounding points of the op are reproduced where they change results materially: the default fp16
kernel's fp16 scores (overflow -> inf -> NaN) and, with full quantization, P rounded to the output dtype
before its int8 quantisation. Everything else is exact float64.
"""
from __future__ import annotations

import numpy as np

PA_ENCODER, DECODER = 3, 2
NORM, ALIBI, NORM_COMPRESS = 1, 2, 3
ALIBI_COMPRESS, ALIBI_COMPRESS_SQRT, ALIBI_COMPRESS_LEFT_ALIGN = 4, 5, 6
OFFLINE, ONLINE = 2, 3


def to_dtype(x, dtype: str) -> np.ndarray:
    """float64 -> the nearest float16 / bfloat16 value (round half to even), as float64."""
    x = np.asarray(x, np.float64)
    if dtype == "float16":
        with np.errstate(over="ignore"):
            return x.astype(np.float16).astype(np.float64)
    if dtype == "bfloat16":
        bits = x.astype(np.float32).view(np.uint32).astype(np.uint64)
        rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
        out = (rounded & 0xFFFFFFFF).astype(np.uint32).view(np.float32).astype(np.float64)
        return np.where(np.isnan(x), np.nan, out)
    return x


def _as_list(cache):
    if cache is None:
        return None
    return [np.array(c, np.float64) for c in cache] if isinstance(cache, (list, tuple)) else np.array(cache, np.float64)


def compressed_alibi_bias(c, mask_type, rows, cols):
    """The bias ``E[i, j]`` a compressed ``[256, 256]`` ALiBi mask stands for, ``j <= i`` (README: the
    mask's lower triangle follows a law in the distance or the column, extended beyond 256)."""
    c = np.asarray(c, np.float64)
    i = np.arange(rows)[:, None]
    j = np.arange(cols)[None, :]
    if mask_type == ALIBI_COMPRESS_LEFT_ALIGN:
        return c[255, 0] + (c[255, 1] - c[255, 0]) * (j + 0 * i)
    d = np.maximum(i - j, 0).astype(np.float64)
    f = np.sqrt(d) if mask_type == ALIBI_COMPRESS_SQRT else d
    return c[0, 0] + (c[1, 0] - c[0, 0]) * f


def self_attention(query, key=None, value=None, cache_k=None, cache_v=None, attention_mask=None, *, seq_len,
                   token_offset=None, layer_id=None, batch_run_status=None, slopes=None, qk_descale=None,
                   vpv_descale=None, p_scale=None, log_n=None, head_num, kv_head_num=0, qk_scale=1.0, q_scale=1.0,
                   calc_type=0, kernel_type=0, clamp_type=0, clamp_min=0.0, clamp_max=0.0, mask_type=0,
                   kv_cache_cfg=0, scale_type=0, quant_type=0, input_layout=0, batch_run_status_enable=False,
                   dtype="float16", **_unused):
    """Returns ``(out, cache_k, cache_v)`` as float64 (caches: updated copies, lists stay lists).

    ``dtype``: the dtype the op computes in (the query's, or the output dtype with full quantization).
    """
    q_all = np.asarray(query, np.float64)
    ck, cv = _as_list(cache_k), _as_list(cache_v)
    n, nkv = head_num, kv_head_num or head_num
    group = n // nkv
    batch = len(seq_len)
    layer = 0 if layer_id is None else int(np.asarray(layer_id).reshape(-1)[0])
    status = [1] * batch if not batch_run_status_enable else [int(s) for s in batch_run_status]
    pa, bnsd = calc_type == PA_ENCODER, input_layout == 1
    dim = q_all.shape[-1] if q_all.ndim in (3, 4) else q_all.shape[1] // n
    out = np.zeros(q_all.shape, np.float64)
    default16 = kernel_type == 0 and dtype == "float16"
    binary = kernel_type == 1 or dtype == "bfloat16"
    offsets = np.concatenate([[0], np.cumsum(seq_len)]).astype(int)
    for b in range(batch):
        s1 = int(seq_len[b])
        if not status[b] or s1 == 0:
            continue
        s2 = s1 if pa else int(token_offset[b])
        rows = slice(offsets[b], offsets[b] + s1)
        # --- query, key, value of this batch: [S, heads, D]
        if bnsd:
            qb = q_all[b, :, :s1].transpose(1, 0, 2)
            kb = ck[layer, b, :, :s2].transpose(1, 0, 2)
            vb = cv[layer, b, :, :s2].transpose(1, 0, 2)
        elif pa:
            qb = q_all[rows].reshape(s1, n, dim)
            kb = np.asarray(key, np.float64)[rows].reshape(s1, nkv, dim)
            vb = np.asarray(value, np.float64)[rows].reshape(s1, nkv, dim)
        else:
            qb = q_all[rows].reshape(s1, n, dim)
            views = []
            for cache, new in ((ck, key), (cv, value)):
                if isinstance(cache, list):
                    seq_rows = cache[b][layer] if cache[b].ndim == 3 else cache[b]
                else:
                    seq_rows = cache[layer, b] if cache.ndim == 4 else cache[b]
                if kv_cache_cfg == 0:  # write the new rows first (in the copy)
                    seq_rows[s2 - s1: s2] = np.asarray(new, np.float64)[rows].reshape(s1, -1)
                views.append(seq_rows[:s2].reshape(s2, nkv, dim))
            kb, vb = views
        for h in range(n):
            qh, kh, vh = qb[:, h] * q_scale, kb[:, h // group], vb[:, h // group]
            with np.errstate(over="ignore", invalid="ignore"):
                s = qh @ kh.T
                if quant_type:
                    s = s * qk_descale[h]
                if default16:
                    s = to_dtype(s, "float16")
                if scale_type == 1:
                    s = s * (log_n[b] if calc_type == DECODER else np.asarray(log_n, np.float64)[:s1, None])
                s = s * qk_scale
                if default16:
                    s = to_dtype(s, "float16")
                if clamp_type == 1:
                    s = np.clip(s, clamp_min, clamp_max)
                s = _apply_mask(s, attention_mask, mask_type, slopes, binary, b, h, s1, s2)
                o = _softmax_v(s, vh, quant_type, dtype, None if vpv_descale is None else vpv_descale[h],
                               None if p_scale is None else p_scale[h])
            if bnsd:
                out[b, h, :s1] = o
            elif out.ndim == 3:
                out[rows, h] = o
            else:
                out[rows, h * dim:(h + 1) * dim] = o
    return out, ck, cv


def _apply_mask(s, mask, mask_type, slopes, binary, b, h, s1, s2):
    if mask_type == 0:
        return s
    i = np.arange(s1)[:, None]
    j = np.arange(s2)[None, :]
    causal_out = j > i + (s2 - s1)
    m = None if mask is None else np.asarray(mask, np.float64)
    if mask_type == NORM:
        block = (m if m.ndim == 2 else m[b if m.shape[0] > 1 else 0])[:s1, :s2]
        return np.where(block != 0, -np.inf, s) if binary else s + block
    if mask_type == ALIBI:
        block = (m[h] if m.ndim == 3 else m[b if m.shape[0] > 1 else 0, h])[:s1, :s2]
        return s + block
    if mask_type == NORM_COMPRESS:
        return np.where(causal_out, -np.inf, s)
    bias = float(slopes[h]) * compressed_alibi_bias(m, mask_type, s1, s2)
    return np.where(causal_out, -np.inf, s + bias)


def _softmax_v(s, v, quant_type, dtype, vpv, p_scale):
    m = np.max(s, axis=1, keepdims=True)
    empty = (m == -np.inf)[:, 0]
    e = np.exp(s - np.where(m == -np.inf, 0.0, m))
    e = np.where(np.isneginf(s), 0.0, e)
    l = e.sum(axis=1, keepdims=True)
    if quant_type == 0:
        o = (e @ v) / np.where(l == 0, 1.0, l)
    else:
        p = to_dtype(e, dtype)
        if quant_type == ONLINE:
            p8 = np.clip(np.rint(p * 127.0), -128, 127)
            o = (p8 @ v) * (vpv / 127.0) / np.where(l == 0, 1.0, l)
        else:
            p8 = np.clip(np.rint(p / p_scale), -128, 127)
            o = (p8 @ v) * vpv / np.where(l == 0, 1.0, l)
    o[empty] = 0.0
    return o
