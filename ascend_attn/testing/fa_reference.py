"""Independent float64 numpy reference of the TND FlashAttention ops (docs/semantics.md §2-§6, docs/edge-cases.md).

Written straight from the spec, sharing no code with ``ascend_attn.kernels`` or
``ascend_attn.torch_ops``. Loops over sequences and heads on whole ``[S1_b, S2_b]`` score
matrices: slow, but every step can be read against the spec's pseudo-code.

Length arguments named ``seq_lens_*`` are per-sequence lengths (see :func:`seq_lengths`);
``actual_seq_*`` are the op's cumulative arrays (no leading 0).
"""
from __future__ import annotations

import numpy as np

from .reference import ntd_to_tnd, tnd_to_ntd

FLT_MAX = 3.4028234663852886e38
LANES = 8


# ---------------------------------------------------------------- rounding (§0.5)

def half_away16(x) -> np.ndarray:
    """Nearest fp16 value, ties away from zero (AscendC CAST_ROUND), as float64.

    Applied to the exact input value (float32 or float64, no intermediate float32 rounding).
    ``|x| >= 65520`` (65504 + half an ulp, a tie that goes away) -> ±inf; NaN passes through.
    """
    x = np.asarray(x, dtype=np.float64)
    a = np.abs(x)
    with np.errstate(over="ignore", invalid="ignore"):
        h = a.astype(np.float16)                         # RNE, only to find the bracketing pair
        lo = np.where(h.astype(np.float64) <= a, h, np.nextafter(h, np.float16(0)))
        hi = np.nextafter(lo, np.float16(np.inf))
        lo64, hi64 = lo.astype(np.float64), hi.astype(np.float64)
        mag = np.where(a >= (lo64 + hi64) / 2, hi64, lo64)  # midpoint is exact in float64
        mag = np.where(a >= 65520.0, np.inf, mag)
    return np.copysign(mag, x)


def _bf16_rne(x) -> np.ndarray:
    """float -> float32 (RNE) -> bfloat16 (RNE on the bit pattern), as float64."""
    f = np.atleast_1d(np.asarray(x, dtype=np.float64).astype(np.float32))
    bits = f.view(np.uint32).astype(np.uint64)          # uint64: the carry must not wrap
    # add 0x7FFF plus the kept LSB: > half rounds up, exact half rounds to the even neighbour;
    # a carry out of the mantissa bumps the exponent (max finite -> inf), as IEEE wants
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).astype(np.uint32)
    out = np.where(np.isnan(f), f, rounded.view(np.float32)).astype(np.float64)
    return out.reshape(np.shape(x))


def round_to(x, dtype_name) -> np.ndarray:
    """Round float values to ``dtype_name``'s grid (float32/bfloat16: RNE, float16: HALF_AWAY16)."""
    if dtype_name == "float32":
        return np.asarray(x, dtype=np.float64).astype(np.float32).astype(np.float64)
    if dtype_name == "float16":
        return half_away16(x)
    if dtype_name == "bfloat16":
        return _bf16_rne(x)
    raise ValueError(f"round_to: unknown dtype {dtype_name!r}")


# ---------------------------------------------------------------- lengths (§0.2)

def seq_lengths(cumulative) -> list[int]:
    """FA cumulative lengths without leading 0 -> per-sequence lengths.

    ``[2,5,9] -> [2,3,4]``; negative differences (a trailing run of zeros) clamp to 0 as CANN does:
    ``[2,5,9,0,0] -> [2,3,4,0,0]``.
    """
    v = [int(c) for c in np.asarray(cumulative).reshape(-1)]
    return [max(cur - prev, 0) for prev, cur in zip([0] + v[:-1], v)]


def _starts(lens) -> list[int]:
    """First row of every sequence (oq_b / ok_b)."""
    return [int(s) for s in np.concatenate([[0], np.cumsum(lens)[:-1]])] if len(lens) else []


def _first(idx) -> int:
    """q_start_idx / kv_start_idx: int, list or 1-D array (element 0), None -> 0."""
    if idx is None:
        return 0
    arr = np.asarray(idx).reshape(-1)
    return int(arr[0]) if arr.size else 0


# ---------------------------------------------------------------- masks (§4)

def keep_mask(b, s1, s2, seq_lens_q, seq_lens_kv, sparse_mode, pre_tokens, next_tokens,
              atten_mask=None, prefix=None) -> np.ndarray:
    """bool ``[s1, s2]`` for sequence ``b`` (``s1 = S1_b``, ``s2 = S2_b``), True = kept.

    ``atten_mask`` 1/True = masked. Full masks (modes 0, 1) are read in the local
    ``[max S1, max S2]`` form or the global ``[Σ S1, Σ S2]`` form; compressed masks (other modes)
    only select the index rule. Bounds are evaluated with Python ints (exact, no int64 wrap).
    """
    if atten_mask is None:                      # "no mask => full attention" for every mode
        return np.ones((s1, s2), dtype=bool)
    i = np.arange(s1)[:, None]
    j = np.arange(s2)[None, :]
    d = j - i
    delta = s2 - s1
    pre, nxt = int(pre_tokens), int(next_tokens)
    # clamp band limits into [-(s1+1), s2+1]: same result, and no overflow for huge pre/next
    clamp = lambda v: min(max(v, -(s1 + 1)), s2 + 1)  # noqa: E731

    if sparse_mode in (0, 1):
        mask = np.asarray(atten_mask)
        if mask.shape == (max(seq_lens_q), max(seq_lens_kv)):    # local form wins on a tie
            block = mask[:s1, :s2]
        else:
            oq, ok = sum(seq_lens_q[:b]), sum(seq_lens_kv[:b])
            block = mask[oq:oq + s1, ok:ok + s2]
        keep = block == 0
        if sparse_mode == 0:                    # band with origin top-left
            keep = keep & (d >= clamp(-pre)) & (d <= clamp(nxt))
        return keep
    if sparse_mode == 2:
        return d <= 0
    if sparse_mode == 3:
        return d <= delta
    if sparse_mode == 4:                        # band with origin bottom-right
        return (d >= clamp(delta - pre)) & (d <= clamp(delta + nxt))
    if sparse_mode == 6:
        return (d <= delta) | (j < int(prefix[b]))
    nonempty = [bb for bb, length in enumerate(seq_lens_q) if length > 0]
    if sparse_mode == 7:
        return d <= (clamp(delta + nxt) if b == nonempty[-1] else delta)
    if sparse_mode == 8:
        return d <= (clamp(s2 - max(s1 - nxt, 0)) if b == nonempty[0] else 0)
    raise ValueError(f"keep_mask: unsupported sparse_mode {sparse_mode}")


# ---------------------------------------------------------------- PSE / ALiBi (§5)

def pse_bias(b, h, s1, s2, seq_lens_q, seq_lens_kv, n1, pse, pse_type,
             q_start_idx=0, kv_start_idx=0) -> np.ndarray | None:
    """float64 ``[s1, s2]`` bias of sequence ``b``, head ``h`` (``None`` without pse).

    pse_type 0/1: external pse, 1-D packed ``[N1, S1_b, S2_b]`` blocks, 1-D broadcast
    ``[N1, 1, S2_b]`` rows, or 4-D ALiBi-compressed ``[B|1, N1, 1024, max S2]``.
    pse_type 2/3: slopes ``[N1]`` or ``[B, N1]``; bias ``-slope*|Δ|`` / ``-slope*sqrt(|Δ|)``.
    """
    if pse is None:
        return None
    pse = np.asarray(pse, dtype=np.float64)
    i = np.arange(s1)[:, None]
    j = np.arange(s2)[None, :]

    if pse_type in (2, 3):
        slope = pse[h] if pse.ndim == 1 else pse[b, h]
        shift = _first(kv_start_idx) - _first(q_start_idx)   # Δ = (j+kv0) - (i+q0), local i, j
        dist = np.abs((j - i) + shift).astype(np.float64)
        return -slope * (dist if pse_type == 2 else np.sqrt(dist))

    if pse.ndim == 4:
        # last 1024 rows of a Toeplitz [S_ref, S_ref] pse; value depends on i - j only.
        comp = pse[b if pse.shape[0] > 1 else 0, h]          # [1024, S_ref]
        s_ref = max(seq_lens_kv)
        diff = np.broadcast_to(i - j, (s1, s2))
        lower = comp[1023, np.clip(s_ref - 1 - diff, 0, s_ref - 1)]   # i >= j: row 1023
        upper = comp[np.clip(1023 + diff, 0, 1023), s_ref - 1]        # i < j: last column
        # j - i > 1023 is not representable in the compressed form: NaN makes misuse visible
        return np.where(diff >= 0, lower, np.where(diff >= -1023, upper, np.nan))

    flat = pse.reshape(-1)
    areas = [q * k for q, k in zip(seq_lens_q, seq_lens_kv)]
    if flat.size == n1 * sum(areas):                           # packed full form
        start = n1 * sum(areas[:b]) + h * s1 * s2
        return flat[start:start + s1 * s2].reshape(s1, s2).copy()
    start = n1 * sum(seq_lens_kv[:b]) + h * s2                 # broadcast-over-rows form
    return np.broadcast_to(flat[start:start + s2], (s1, s2)).copy()


# ---------------------------------------------------------------- dropout (§6)

def dropout_keep(b, h, s1, s2, seq_lens_q, seq_lens_kv, n1, drop_mask) -> np.ndarray:
    """float64 ``[s1, s2]`` keep bits (1 = keep) of sequence ``b``, head ``h``; LSB-first bytes."""
    bits = np.unpackbits(np.asarray(drop_mask, dtype=np.uint8).reshape(-1), bitorder="little")
    start = n1 * sum(q * k for q, k in zip(seq_lens_q[:b], seq_lens_kv[:b])) + h * s1 * s2
    return bits[start:start + s1 * s2].reshape(s1, s2).astype(np.float64)


# ---------------------------------------------------------------- shared per-(b, h) setup

def _blocks(query, key, head_num, actual_seq_qlen, actual_seq_kvlen, *, pse, drop_mask,
            atten_mask, prefix, scale_value, keep_prob, pre_tokens, next_tokens, sparse_mode,
            pse_type, q_start_idx, kv_start_idx):
    """Yield ``(h, g, rows_q, rows_kv, z, keep, drop)`` for every sequence with S1_b > 0.

    ``z`` are the scaled scores incl. pse ``[S1_b, S2_b]``; ``drop`` = dropbit / keep_prob or None.
    """
    lq, lk = seq_lengths(actual_seq_qlen), seq_lengths(actual_seq_kvlen)
    oq, ok = _starts(lq), _starts(lk)
    group = head_num // key.shape[1]
    for b, (s1, s2) in enumerate(zip(lq, lk)):
        if s1 == 0:                             # produces nothing, its kv rows get no gradient
            continue
        rows_q, rows_kv = slice(oq[b], oq[b] + s1), slice(ok[b], ok[b] + s2)
        keep = keep_mask(b, s1, s2, lq, lk, sparse_mode, pre_tokens, next_tokens,
                         atten_mask, prefix)
        for h in range(head_num):
            g = h // group                      # GQA: contiguous groups of query heads
            z = query[rows_q, h] @ key[rows_kv, g].T
            bias = pse_bias(b, h, s1, s2, lq, lk, head_num, pse, pse_type,
                            q_start_idx, kv_start_idx)
            if bias is None:
                z = z * scale_value
            elif pse_type == 1:                 # add-then-scale
                z = (z + bias) * scale_value
            else:                               # 0, 2, 3: scale-then-add
                z = z * scale_value + bias
            drop = None
            if drop_mask is not None:           # active whenever given, even keep_prob == 1
                drop = dropout_keep(b, h, s1, s2, lq, lk, head_num, drop_mask) / keep_prob
            yield h, g, rows_q, rows_kv, z, keep, drop


def _rounder(round_dtype):
    """round_in / round_out of §0.5: only fp16/bf16 runs round; fp32 runs are exact here."""
    if round_dtype in ("float16", "bfloat16"):
        return lambda x: round_to(x, round_dtype)
    return lambda x: x


# ---------------------------------------------------------------- forward (§2)

def flash_attention_forward(query, key, value, head_num, actual_seq_qlen, actual_seq_kvlen, *,
                            pse=None, drop_mask=None, atten_mask=None, prefix=None,
                            scale_value=1.0, keep_prob=1.0, pre_tokens=2147483647,
                            next_tokens=2147483647, sparse_mode=0, pse_type=1, q_start_idx=0,
                            kv_start_idx=0, softmax_out_layout="", round_dtype=None):
    """TND forward. query ``[T1,N1,D]``, key/value ``[T2,N2,D]``.

    Returns float64 ``(out [T1,N1,D], softmax_max [T1,N1,8], softmax_sum [T1,N1,8])``; the stats
    hold NTD data for ``softmax_out_layout=""`` and TND data for ``"same_as_input"``.
    """
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (query, key, value))
    rnd = _rounder(round_dtype)
    t1, n1, _ = q.shape
    out = np.zeros_like(q)
    smax = np.zeros((t1, n1))
    ssum = np.zeros((t1, n1))
    for h, g, rq, rk, z, keep, drop in _blocks(
            q, k, head_num, actual_seq_qlen, actual_seq_kvlen, pse=pse, drop_mask=drop_mask,
            atten_mask=atten_mask, prefix=prefix, scale_value=scale_value, keep_prob=keep_prob,
            pre_tokens=pre_tokens, next_tokens=next_tokens, sparse_mode=sparse_mode,
            pse_type=pse_type, q_start_idx=q_start_idx, kv_start_idx=kv_start_idx):
        empty = ~keep.any(axis=1)               # no kept key (incl. S2_b == 0)
        m = np.max(np.where(keep, z, -np.inf), axis=1, initial=-np.inf)
        m[empty] = 0.0                          # placeholder, avoids inf - inf below
        e = np.zeros_like(z)
        e[keep] = np.exp(z[keep] - np.broadcast_to(m[:, None], z.shape)[keep])  # kept only
        l = e.sum(axis=1)                       # undropped sum; dropout scales the numerator only
        ed = e * drop if drop is not None else e
        l_div = np.where(empty, 1.0, l)
        o = (rnd(ed) @ v[rk, g]) / l_div[:, None]
        o[empty] = 0.0                          # §9a invalid-row convention
        m[empty], l[empty] = -FLT_MAX, FLT_MAX
        out[rq, h] = rnd(o)
        smax[rq, h], ssum[rq, h] = m, l

    lanes = [np.repeat(s[..., None], LANES, axis=2) for s in (smax, ssum)]
    if softmax_out_layout == "":                # NTD data; tail beyond Σ S1_b·N1·8 stays 0
        lanes = [tnd_to_ntd(s, seq_lengths(actual_seq_qlen)) for s in lanes]
    return out, lanes[0], lanes[1]


# ---------------------------------------------------------------- backward (§3)

def flash_attention_backward(query, key, value, dy, head_num, actual_seq_qlen, actual_seq_kvlen,
                             softmax_max, softmax_sum, attention_in, *, pse=None, drop_mask=None,
                             atten_mask=None, prefix=None, scale_value=1.0, keep_prob=1.0,
                             pre_tokens=2147483647, next_tokens=2147483647, sparse_mode=0,
                             pse_type=1, q_start_idx=0, kv_start_idx=0, softmax_in_layout="",
                             round_dtype=None):
    """TND backward from the given stats (``[T1,N1,8]``, lane 0) and forward output.

    Returns float64 ``(dq [T1,N1,D], dk [T2,N2,D], dv [T2,N2,D])``.
    """
    q, k, v, do_all, o_all = (np.asarray(x, dtype=np.float64)
                              for x in (query, key, value, dy, attention_in))
    stats = [np.asarray(s, dtype=np.float64) for s in (softmax_max, softmax_sum)]
    if softmax_in_layout == "":                 # NTD data -> index by (token, head)
        stats = [ntd_to_tnd(s, seq_lengths(actual_seq_qlen)) for s in stats]
    smax, ssum = (s[..., 0] for s in stats)
    rnd = _rounder(round_dtype)
    dq = np.zeros_like(q)
    dk_acc = np.zeros_like(k)                   # summed over the G query heads, rounded at the end
    dv_acc = np.zeros_like(v)
    for h, g, rq, rk, z, keep, drop in _blocks(
            q, k, head_num, actual_seq_qlen, actual_seq_kvlen, pse=pse, drop_mask=drop_mask,
            atten_mask=atten_mask, prefix=prefix, scale_value=scale_value, keep_prob=keep_prob,
            pre_tokens=pre_tokens, next_tokens=next_tokens, sparse_mode=sparse_mode,
            pse_type=pse_type, q_start_idx=q_start_idx, kv_start_idx=kv_start_idx):
        # masked positions and empty rows get P = 0 exactly (never exp(-FLT_MAX - ...))
        row_max = np.broadcast_to(smax[rq, h][:, None], z.shape)
        row_sum = np.broadcast_to(ssum[rq, h][:, None], z.shape)
        p_full = np.zeros_like(z)
        p_full[keep] = np.exp(z[keep] - row_max[keep]) / row_sum[keep]
        d_o, o_in = do_all[rq, h], o_all[rq, h]
        dp = d_o @ v[rk, g].T
        dpd = dp * drop if drop is not None else dp
        dr = (d_o * o_in).sum(axis=1)           # uses attention_in, not P·dP
        dz = p_full * (dpd - dr[:, None])
        ds = rnd(dz)
        pd = rnd(p_full * drop if drop is not None else p_full)
        dq[rq, h] = rnd((ds @ k[rk, g]) * scale_value)   # scale after the matmul
        dk_acc[rk, g] += (ds.T @ q[rq, h]) * scale_value
        dv_acc[rk, g] += pd.T @ d_o
    return dq, rnd(dk_acc), rnd(dv_acc)
