"""Independent float64 numpy reference of IncreFlashAttention (docs/semantics.md §7, docs/edge-cases.md).

Written straight from the spec, sharing no code with ``ascend_attn.kernels``,
``ascend_attn.torch_ops`` or ``ascend_attn.mindspore``. Loops over batches and query heads,
one query row at a time: slow, but every step can be read against the spec's pseudo-code.

Conventions of this module
--------------------------
* Inputs are numpy arrays (torch tensors are converted; bf16 goes through float32, exactly).
  Query/K/V float values are used exactly (float16 -> float64 is exact); the caller emulates the
  query dtype's rounding points by passing ``round_dtype`` ("float16" -> HALF_AWAY16,
  "bfloat16" -> RNE bf16, "float32" -> RNE fp32, None -> no rounding).
* Non-quant / antiquant softmax arithmetic is float64 (the spec's fp32 with more precision).
* The full-int8 dataflow (scenarios A/B, §7.5) is reproduced operation by operation with
  explicit float16/float32 casts (numpy's float32/float64 -> float16 casts are RNE).
* int8 outputs are returned as float64 arrays holding integers in [-128, 127].
"""
from __future__ import annotations

import math

import numpy as np

from .fa_reference import half_away16, round_to

__all__ = ["fp19", "dequant_value", "trans_quant_param", "quant2", "incre_flash_attention"]

_LAYOUTS = ("BSH", "BSND", "BNSD")


# ---------------------------------------------------------------- small helpers

def _np(x):
    """numpy view of ``x``; torch tensors are detached (bf16 -> float32, exact)."""
    if x is None:
        return None
    if hasattr(x, "detach"):                       # torch.Tensor, without importing torch
        t = x.detach().cpu()
        if str(t.dtype) == "torch.bfloat16":
            t = t.float()
        return t.numpy()
    return np.asarray(x)


def _fp16(x) -> np.ndarray:
    """RNE to float16 (directly from the exact float64 value)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(x, dtype=np.float64).astype(np.float16)


def _int8_sat(x) -> np.ndarray:
    """Integer-valued float array -> saturated to [-128, 127]; NaN -> 0 [P]."""
    x = np.asarray(x, dtype=np.float64)
    x = np.where(np.isnan(x), 0.0, x)
    return np.clip(x, -128.0, 127.0)


def _round_half_away(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.copysign(np.floor(np.abs(x) + 0.5), x)   # exact for fp16-grid values


# ---------------------------------------------------------------- §7.7 dequant words

def fp19(x) -> np.ndarray:
    """float32 values truncated to FP19 (1 sign, 8 exponent, 10 mantissa bits), as float64."""
    f = np.array(x, dtype=np.float32)              # a copy, so .view is safe on scalars too
    bits = f.view(np.uint32) & np.uint32(0xFFFFE000)
    return bits.view(np.float32).astype(np.float64)


def dequant_value(t) -> float:
    """The FP19 multiplier a dequant tensor stands for (§7.7, §9e).

    float tensor -> fp19 of its float32 value; uint64/int64 word -> fp19 of the float32 in bits
    0-31 (flag bit 46 and the offset field are ignored here; rejecting a non-zero offset field
    is the validation's job). One element expected.
    """
    a = _np(t)
    if a.size != 1:
        raise ValueError(f"dequant_value: expected one element, got shape {a.shape}")
    a = a.reshape(-1)
    if a.dtype.kind in "iu":
        low_bits = int(a[0]) & 0xFFFFFFFF           # int64 carries the same bits as uint64
        low = np.array([low_bits], dtype=np.uint32).view(np.float32)
        return float(fp19(low)[0])
    return float(fp19(a.astype(np.float32))[0])


def trans_quant_param(scale, offset=None) -> np.ndarray:
    """int64 words like ``torch_npu.npu_trans_quant_param`` (§7.7).

    ``(bits(fp32(scale)) & 0xFFFFE000) | 1 << 46``; with an offset: rounded half-even, clamped to
    [-256, 255], stored as 9-bit two's complement at bits 37-45. Shape = broadcast shape.
    """
    sc = np.asarray(_np(scale), dtype=np.float32)
    if offset is None:
        sc_b = sc
    else:
        off = np.asarray(_np(offset), dtype=np.float64)
        sc_b, off_b = np.broadcast_arrays(sc, off)
    bits = np.array(sc_b, dtype=np.float32).view(np.uint32).astype(np.uint64)
    w = (bits & np.uint64(0xFFFFE000)) | np.uint64(1 << 46)
    if offset is not None:
        o = np.clip(np.rint(off_b), -256, 255)                   # np.rint: half-even
        o = np.where(np.isnan(o), 0, o).astype(np.int64)
        field = (o & 0x1FF).astype(np.uint64) << np.uint64(37)
        w = (w & np.uint64(0x4000FFFFFFFF)) | field
    return np.asarray(w, dtype=np.uint64).view(np.int64).reshape(np.shape(sc_b))


# ---------------------------------------------------------------- §7.6 output quantization

def quant2(o, quant_scale2, quant_offset2=None, head_dim=None, heads_q=None) -> np.ndarray:
    """Output quantization (§7.6). Returns int8 values as float64, shaped like ``o``.

    ``o``: float array ``[..., Nq, D]`` (last two dims query head, feature). If ``heads_q`` and
    ``head_dim`` are given and ``o``'s last two dims differ (e.g. a BSH ``[..., Nq*D]`` row), the
    last axis is split into ``(heads_q, head_dim)`` for the channel index and restored after.

    * one scale element -> per-tensor, AscendQuant in fp16 arithmetic, half-even;
    * ``Nq*D`` elements (any accepted shape, flattened) -> per-channel, channel ``c = h*D + e``,
      two fp32 operations then HALF_AWAY16 then round half away from zero.
    Saturation to [-128, 127]; NaN -> 0. A missing offset is 0.
    """
    o = np.asarray(_np(o), dtype=np.float64)
    orig_shape = o.shape
    if heads_q is not None and head_dim is not None and o.shape[-2:] != (heads_q, head_dim):
        o = o.reshape(o.shape[:-1] + (heads_q, head_dim))
    sc = np.asarray(_np(quant_scale2), dtype=np.float32).reshape(-1)
    off = (np.zeros_like(sc) if quant_offset2 is None
           else np.asarray(_np(quant_offset2), dtype=np.float32).reshape(-1))
    if off.size != sc.size:
        raise ValueError(f"quant2: offset has {off.size} elements, scale {sc.size}")

    with np.errstate(over="ignore", invalid="ignore"):
        if sc.size == 1:
            # AscendQuant (CANN 8.1.RC1): fp16 inputs, fp16 multiply and add, Cast RINT -> int8
            x = _fp16(o)
            y = _fp16(x.astype(np.float64) * np.float64(_fp16(sc[0])))
            y = _fp16(y.astype(np.float64) + np.float64(_fp16(off[0])))
            q = np.rint(y.astype(np.float64))                      # half-even
        else:
            nq, d = o.shape[-2], o.shape[-1]
            if sc.size != nq * d:
                raise ValueError(f"quant2: per-channel scale needs Nq*D = {nq * d} elements, "
                                 f"got {sc.size}")
            sc_c = sc.reshape(nq, d).astype(np.float64)            # c = h*D + e
            off_c = off.reshape(nq, d).astype(np.float64)
            y = (o * sc_c).astype(np.float32)                      # fp32 multiply
            y = (y.astype(np.float64) + off_c).astype(np.float32)  # fp32 add (no FMA)
            q = _round_half_away(half_away16(y))                   # CAST_ROUND fp16, then int
    return _int8_sat(q).reshape(orig_shape)


# ---------------------------------------------------------------- layouts (§7.1)

def _query_bnd(query, layout, num_heads):
    """query in ``layout`` -> ``(B, Nq, D)`` (same dtype)."""
    q = np.asarray(query)
    if layout == "BSH":
        b, s, h = q.shape
        return q.reshape(b, num_heads, h // num_heads)
    if layout == "BSND":
        return q[:, 0, :, :]
    if layout == "BNSD":
        return q[:, :, 0, :]
    raise ValueError(f"incre_flash_attention: input_layout must be one of {_LAYOUTS}, "
                     f"got {layout!r}")


def _out_shape(b, nq, d, layout):
    return {"BSH": (b, 1, nq * d), "BSND": (b, 1, nq, d), "BNSD": (b, nq, 1, d)}[layout]


def _kv_nsd(x, layout, nkv, d):
    """contiguous K or V ``(B, ...)`` in ``layout`` -> ``(B, Nkv, S, D)``."""
    x = np.asarray(x)
    if layout == "BSH":
        b, s, _ = x.shape
        return x.reshape(b, s, nkv, d).transpose(0, 2, 1, 3)
    if layout == "BSND":
        return x.transpose(0, 2, 1, 3)
    return x                                                  # BNSD


def _paged_tokens(cache, table_row, n_blocks, block_size, nkv, d):
    """Gather the first ``n_blocks`` referenced blocks of one batch -> ``(Nkv, n_blocks*bs, D)``."""
    cache = np.asarray(cache)
    parts = []
    for i in range(n_blocks):
        blk = cache[int(table_row[i])]                        # only referenced blocks are read
        if cache.ndim == 3:                                   # (num_blocks, bs, Nkv*D)
            parts.append(blk.reshape(block_size, nkv, d).transpose(1, 0, 2))
        else:                                                 # (num_blocks, Nkv, bs, D)
            parts.append(blk)
    if not parts:
        return np.zeros((nkv, 0, d), dtype=cache.dtype)
    return np.concatenate(parts, axis=1)


# ---------------------------------------------------------------- masks / pse (§7.2)

def _mask_row(mask, b, h, nq):
    """Row of ``atten_mask`` for (b, h), indexed by absolute KV position; True = masked."""
    m = mask
    if m.ndim == 2:                                          # (B, Sm)
        row = m[b]
    elif m.ndim == 3:                                        # (B, 1, Sm)
        row = m[b, 0]
    elif m.ndim == 4:
        bb = b if m.shape[0] > 1 else 0                      # (1, Nq, 1, Sm) broadcasts batch
        hh = h if m.shape[1] > 1 else 0                      # (B, 1, 1, Sm): one row, all heads
        if m.shape[1] not in (1, nq):
            raise ValueError(f"atten_mask: dim 1 must be 1 or Nq={nq}, got shape {m.shape}")
        row = m[bb, hh, 0]
    else:
        raise ValueError(f"atten_mask: unsupported shape {m.shape}")
    return np.asarray(row) != 0


def _pse_row(pse, b, h):
    """``pse_shift[b|0, h, 0, :]`` (absolute KV position)."""
    return pse[b if pse.shape[0] > 1 else 0, h, 0]


# ---------------------------------------------------------------- antiquant (§7.4)

def _antiquant_params(scale, offset, nkv, d):
    """-> (scale_K, offset_K, scale_V, offset_V), each ``(Nkv, 1, D|1)``: kv head g uses ``[g]``."""
    sc = np.asarray(_np(scale), dtype=np.float64)
    off = np.zeros_like(sc) if offset is None else np.asarray(_np(offset), dtype=np.float64)
    if sc.size == 2:                                          # per-tensor (2,)
        sc = np.broadcast_to(sc.reshape(2, 1, 1, 1), (2, nkv, 1, 1))
        off = np.broadcast_to(off.reshape(2, 1, 1, 1), (2, nkv, 1, 1))
    elif sc.size == 2 * nkv * d:                              # (2,Nkv,1,D) / (2,Nkv*D) / (2,Nkv,D)
        sc, off = sc.reshape(2, nkv, 1, d), off.reshape(2, nkv, 1, d)   # [0|1, g*D + e]
    else:
        raise ValueError(f"antiquant_scale: expected 2 or 2*Nkv*D={2 * nkv * d} elements, "
                         f"got shape {sc.shape}")
    return sc[0], off[0], sc[1], off[1]


# ---------------------------------------------------------------- the op

def incre_flash_attention(query, key, value, *, atten_mask=None, actual_seq_lengths=None,
                          pse_shift=None, dequant_scale1=None, quant_scale1=None,
                          dequant_scale2=None, quant_scale2=None, quant_offset2=None,
                          antiquant_scale=None, antiquant_offset=None, block_table=None,
                          num_heads=1, input_layout="BSH", scale_value=1.0,
                          num_key_value_heads=0, block_size=0, kv_padding_size=None,
                          round_dtype=None) -> np.ndarray:
    """Reference IncreFlashAttention (docs/semantics.md §7). Returns float64 in the query's shape.

    ``key``/``value``: an array in ``input_layout``; a list of arrays (tensor-list form, each with
    batch 1 and its own S_b; a one-element list is that array); or, with ``block_table``, a paged
    cache ``(num_blocks, block_size, Nkv*D)`` / ``(num_blocks, Nkv, block_size, D)``.
    ``round_dtype``: rounding emulation of the float path (P before @V and the float output).
    """
    layout = input_layout
    q_arr = _np(query)
    is_int8_query = q_arr.dtype == np.int8
    nq = int(num_heads)
    nkv = int(num_key_value_heads) or nq
    if nq % nkv:
        raise ValueError(f"num_heads {nq} is not a multiple of num_key_value_heads {nkv}")
    group = nq // nkv
    q_bnd = _query_bnd(q_arr, layout, nq)
    bsz, _, d = q_bnd.shape

    # ---- scenario (§7.5)
    int8_out = quant_scale2 is not None
    if is_int8_query:
        if dequant_scale1 is None or quant_scale1 is None or dequant_scale2 is None:
            raise ValueError("int8 query needs dequant_scale1, quant_scale1 and dequant_scale2")
        scenario = "A" if int8_out else "B"
    else:
        if dequant_scale1 is not None or quant_scale1 is not None or dequant_scale2 is not None:
            raise ValueError("dequant_scale1/quant_scale1/dequant_scale2 need an int8 query")
        scenario = "C" if int8_out else "float"

    # ---- per-batch K/V as (Nkv, S_b, D) and the capacity S_b used for the valid range
    paged = block_table is not None
    lengths_given = actual_seq_lengths is not None
    if lengths_given:
        asl = [int(v) for v in np.asarray(_np(actual_seq_lengths)).reshape(-1)]
        asl = asl * bsz if len(asl) == 1 else asl[:bsz]
        if len(asl) < bsz:
            raise ValueError(f"actual_seq_lengths: need 1 or >= B={bsz} values, got {len(asl)}")
    pad = None
    if kv_padding_size is not None and lengths_given:         # ignored without lengths
        pad = max(int(np.asarray(_np(kv_padding_size)).reshape(-1)[0]), 0)

    k_list, v_list, capacity = [], [], []
    if paged:
        if not lengths_given:
            raise ValueError("paged KV needs actual_seq_lengths")
        if pad is not None:
            raise ValueError("kv_padding_size with paged KV is not supported [P §9q]")
        kc, vc = _np(key[0] if isinstance(key, (list, tuple)) else key), \
            _np(value[0] if isinstance(value, (list, tuple)) else value)
        table = np.asarray(_np(block_table))
        bs = int(block_size) or (kc.shape[1] if kc.ndim == 3 else kc.shape[2])
        for b in range(bsz):
            n_blocks = math.ceil(asl[b] / bs)
            k_list.append(_paged_tokens(kc, table[b], n_blocks, bs, nkv, d))
            v_list.append(_paged_tokens(vc, table[b], n_blocks, bs, nkv, d))
            capacity.append(table.shape[1] * bs)
    elif isinstance(key, (list, tuple)) and len(key) > 1:
        if pad is not None:
            raise ValueError("kv_padding_size with a tensor list is not supported [P §9q]")
        if len(key) != bsz or len(value) != bsz:
            raise ValueError(f"tensor list needs B={bsz} tensors, got {len(key)}/{len(value)}")
        for kb, vb in zip(key, value):
            k_list.append(_kv_nsd(_np(kb), layout, nkv, d)[0])
            v_list.append(_kv_nsd(_np(vb), layout, nkv, d)[0])
            capacity.append(k_list[-1].shape[1])
    else:
        kt = _np(key[0] if isinstance(key, (list, tuple)) else key)
        vt = _np(value[0] if isinstance(value, (list, tuple)) else value)
        kt, vt = _kv_nsd(kt, layout, nkv, d), _kv_nsd(vt, layout, nkv, d)
        for b in range(bsz):
            k_list.append(kt[b])
            v_list.append(vt[b])
            capacity.append(kt.shape[2])

    # ---- valid ranges [start_b, end_b) (§7.2)
    ranges = []
    for b in range(bsz):
        length = asl[b] if lengths_given else capacity[b]
        if not 0 <= length <= capacity[b]:
            raise ValueError(f"actual_seq_lengths[{b}]={length} outside [0, {capacity[b]}]")
        if pad is not None:
            end = capacity[b] - pad
            ranges.append((end - length, end))
        else:
            ranges.append((0, length))

    mask = None if atten_mask is None else _np(atten_mask)
    pse = None if pse_shift is None else np.asarray(_np(pse_shift), dtype=np.float64)
    if antiquant_scale is not None:
        aq = _antiquant_params(antiquant_scale, antiquant_offset, nkv, d)

    out = np.zeros((bsz, nq, d), dtype=np.float64)           # o; empty rows keep o = 0
    for b in range(bsz):
        start, end = ranges[b]
        if start < 0 or end <= start:                         # left pad overflow / empty
            continue
        idx = np.arange(start, end)                           # absolute KV positions
        for h in range(nq):
            g = h // group
            keep = np.ones(idx.size, dtype=bool) if mask is None \
                else ~_mask_row(mask, b, h, nq)[start:end]
            if not keep.any():                                # [P] §9f: all masked -> 0
                continue
            k_rows = k_list[b][g, start:end]                  # slice: nothing else is read
            v_rows = v_list[b][g, start:end]
            pse_row = None if pse is None else _pse_row(pse, b, h)[start:end]
            if is_int8_query:
                out[b, h] = _row_int8(q_bnd[b, h], k_rows, v_rows, keep, pse_row, scale_value,
                                      dequant_scale1, quant_scale1, dequant_scale2)
            else:
                q = q_bnd[b, h].astype(np.float64)
                if antiquant_scale is not None:
                    sck, offk, scv, offv = aq
                    kd = (k_rows.astype(np.float64) + offk[g]) * sck[g]
                    vd = (v_rows.astype(np.float64) + offv[g]) * scv[g]
                else:
                    kd, vd = k_rows.astype(np.float64), v_rows.astype(np.float64)
                out[b, h] = _row_float(q, kd, vd, keep, pse_row, scale_value, round_dtype)

    if scenario in ("A", "C"):
        res = quant2(out, quant_scale2, quant_offset2)        # empty rows -> quant2(0)
    elif scenario == "B":
        res = half_away16(out)                                # o is fp32-valued here
    else:
        res = out if round_dtype is None else round_to(out, round_dtype)
    return res.reshape(_out_shape(bsz, nq, d, layout))


def _row_float(q, kd, vd, keep, pse_row, scale, round_dtype):
    """§7.3 for one (b, h): float64 softmax; P rounded to the query dtype before @V."""
    s = (kd @ q) * float(scale)
    if pse_row is not None:
        s = s + pse_row
    m = np.max(s[keep])
    e = np.where(keep, np.exp(np.where(keep, s - m, 0.0)), 0.0)
    l = e.sum()
    p = e if round_dtype is None else round_to(e, round_dtype)
    return (p @ vd) / l


def _row_int8(q, k, v, keep, pse_row, scale, deq1_t, qs1_t, deq2_t):
    """§7.5 full-int8 dataflow for one (b, h); returns the fp32-valued ``o`` as float64."""
    f16, f32 = np.float16, np.float32
    deq1 = f32(dequant_value(deq1_t))                         # FP19 values are exact in fp32
    deq2 = f32(dequant_value(deq2_t))
    qs1 = f16(np.asarray(_np(qs1_t), dtype=np.float32).reshape(-1)[0])
    scale16 = f16(f32(scale))                                 # scale_value -> fp32 -> fp16

    si = k.astype(np.int64) @ q.astype(np.int64)              # exact integer dot products
    sh = (si.astype(f32) * deq1).astype(f16)                  # fp32 product, RNE to fp16
    sh = _fp16(sh.astype(np.float64) * np.float64(scale16))   # fp16 x fp16 (exact), RNE
    if pse_row is not None:
        sh = _fp16(sh.astype(np.float64) + _fp16(pse_row).astype(np.float64))
    m = np.max(sh[keep])
    diff = sh.astype(np.float64) - np.float64(m)              # exact
    eh = _fp16(np.exp(np.where(keep, diff, 0.0)))             # exp, RNE to fp16
    l = f32(0.0)
    for j in range(eh.size):                                  # fp32 sum over kept positions
        if keep[j]:
            l = f32(l + f32(eh[j]))
    p = np.rint(_fp16(eh.astype(np.float64) * np.float64(qs1)).astype(np.float64))
    p8 = np.where(keep, _int8_sat(p), 0.0).astype(np.int64)
    oi = p8 @ v.astype(np.int64)                              # exact integer
    o = (oi.astype(f32) * deq2) / l                           # fp32
    return o.astype(np.float64)
