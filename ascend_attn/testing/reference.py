"""float64 numpy references of the ops (docs/semantics.md), for tests and the demo."""
from __future__ import annotations

import numpy as np


def ntd_to_tnd(stats: np.ndarray, seq_lens) -> np.ndarray:
    """[T, N, 8] holding NTD data (per-sequence [N, S_b, 8] blocks) -> true TND data."""
    t_total, n, lanes = stats.shape
    flat = stats.reshape(-1)
    out = np.zeros_like(stats)
    row = 0
    for length in seq_lens:
        block = flat[row * n * lanes:(row + length) * n * lanes].reshape(n, length, lanes)
        out[row:row + length] = block.transpose(1, 0, 2)
        row += length
    return out


def tnd_to_ntd(stats: np.ndarray, seq_lens) -> np.ndarray:
    """Inverse of :func:`ntd_to_tnd`."""
    t_total, n, lanes = stats.shape
    flat = np.zeros(stats.size, dtype=stats.dtype)
    row = 0
    for length in seq_lens:
        flat[row * n * lanes:(row + length) * n * lanes] = stats[row:row + length].transpose(1, 0, 2).reshape(-1)
        row += length
    return flat.reshape(stats.shape)


def ring_attention_update(prev_out, prev_max, prev_sum, cur_out, cur_max, cur_sum,
                          actual_seq_qlen=None, input_layout="SBH", input_softmax_layout=""):
    """RingAttentionUpdate in float64 (docs/semantics.md §1). Returns (out, max, sum) as float64.

    Per-lane statistics; attention weights from lane 0.
    """
    prev_out, cur_out = np.asarray(prev_out, np.float64), np.asarray(cur_out, np.float64)
    stats = [np.asarray(x, np.float64) for x in (prev_max, prev_sum, cur_max, cur_sum)]
    pm, ps, cm, cs = stats
    m = np.maximum(pm, cm)
    sp = ps * np.exp(pm - m)
    sc = cs * np.exp(cm - m)
    s = sp + sc
    with np.errstate(invalid="ignore", divide="ignore"):
        wp, wc = sp / s, sc / s
    if input_layout == "SBH":
        seq_len, batch, hidden = prev_out.shape
        heads = pm.shape[1]
        dim = hidden // heads
        out = np.empty_like(prev_out)
        for b in range(batch):
            for h in range(heads):
                cols = slice(h * dim, (h + 1) * dim)
                out[:, b, cols] = (prev_out[:, b, cols] * wp[b, h, :, 0:1]
                                   + cur_out[:, b, cols] * wc[b, h, :, 0:1])
        return out, m, s
    # TND: bring the weights into (token, head) order first
    if input_softmax_layout in ("", "SBH"):
        offsets = list(actual_seq_qlen)
        lens = [b - a for a, b in zip(offsets, offsets[1:])]
        wp, wc = ntd_to_tnd(wp, lens), ntd_to_tnd(wc, lens)
    out = prev_out * wp[..., 0:1] + cur_out * wc[..., 0:1]
    return out, m, s


def partial_attention(q, k, v, scale):
    """Plain softmax attention of one block of keys: (out, max, sum), float64.

    q ``[Sq, N, D]``, k/v ``[Sk, N, D]``; out ``[Sq, N, D]``, max/sum ``[N, Sq]``.
    """
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    z = np.einsum("qnd,knd->nqk", q, k) * scale
    m = z.max(axis=-1)
    e = np.exp(z - m[..., None])
    s = e.sum(axis=-1)
    out = np.einsum("nqk,knd->qnd", e, v) / s.T[..., None]
    return out, m, s
