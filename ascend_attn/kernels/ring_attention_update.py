"""RingAttentionUpdate fallback: device-generic torch code (CPU, CUDA, NPU tensors alike).

Formula (docs/semantics.md §1), per query row, in float32::

    m  = max(prev_max, cur_max)
    sp = prev_sum * exp(prev_max - m);   sc = cur_sum * exp(cur_max - m);   s = sp + sc
    out = fp32(prev_attn) * (sp / s) + fp32(cur_attn) * (sc / s)     # rounded RNE to attn dtype

``m`` and ``s`` are computed on every one of the 8 lanes; the attention weights use lane 0.

The work streams over query rows in chunks (``rows_per_chunk``) so that the temporaries are a
small multiple of one chunk, never of the whole tensor.
"""
from __future__ import annotations

import torch

from .. import native
from ..validation import RingUpdatePlan

# Elements of attention output handled per chunk (1 MiB of fp32 temporaries): big enough that the per-op overhead of
# eager torch is amortised, small enough that the fp32 temporaries stay in cache.
CHUNK_ELEMENTS = 1 << 18


def _merge_stats(pm, ps, cm, cs):
    """New (max, sum) and the two weights, elementwise in float32."""
    m = torch.maximum(pm, cm)
    sp = ps * torch.exp(pm - m)
    sc = cs * torch.exp(cm - m)
    s = sp + sc
    return m, s, sp / s, sc / s


def _blend(out, prev, cur, wp, wc):
    """out = fp32(prev) * wp + fp32(cur) * wc: two separately rounded products, one add."""
    acc = torch.mul(prev, wp)  # mixed-dtype mul upcasts prev exactly to float32
    acc.add_(torch.mul(cur, wc))
    out.copy_(acc)  # round-to-nearest-even into the attention dtype


def _rows_per_chunk(row_elems: int) -> int:
    return max(1, CHUNK_ELEMENTS // max(1, row_elems))


def ring_attention_update(prev_attn_out, prev_softmax_max, prev_softmax_sum,
                          cur_attn_out, cur_softmax_max, cur_softmax_sum,
                          plan: RingUpdatePlan):
    """Inputs already validated (see ``validation.check_ring_attention_update``).

    SBH: attn ``[S, B, H]``, stats ``[B, N, S, 8]``. TND: attn ``[T, N, D]``, stats ``[T, N, 8]``
    holding NTD or TND data per ``plan.stats_layout``. Returns new tensors of the input shapes.

    CPU tensors run the native kernel (one fused pass, ``csrc/cpu/ring_attention_update.cpp``) when
    :func:`ascend_attn.native.use_native` says so; the torch code below is the device-generic path.
    """
    if native.use_native("ring_attention_update", prev_attn_out, prev_softmax_max, prev_softmax_sum,
                         cur_attn_out, cur_softmax_max, cur_softmax_sum):
        return torch.ops.ascend_attn_cpu.ring_attention_update(
            prev_attn_out, prev_softmax_max, prev_softmax_sum, cur_attn_out, cur_softmax_max, cur_softmax_sum,
            plan.layout, plan.stats_layout, plan.num_heads, plan.head_dim, list(plan.seq_offsets or ()))
    out = torch.empty(prev_attn_out.shape, dtype=prev_attn_out.dtype, device=prev_attn_out.device)
    new_max = torch.empty(prev_softmax_max.shape, dtype=torch.float32, device=prev_softmax_max.device)
    new_sum = torch.empty_like(new_max)
    n, d = plan.num_heads, plan.head_dim
    stats = (prev_softmax_max, prev_softmax_sum, cur_softmax_max, cur_softmax_sum)

    if plan.layout == "SBH":
        s_len, batch = prev_attn_out.shape[0], prev_attn_out.shape[1]
        step = _rows_per_chunk(batch * n * d)
        for s0 in range(0, s_len, step):
            s1 = min(s_len, s0 + step)
            m, s, wp, wc = _merge_stats(*(x[:, :, s0:s1] for x in stats))  # [B, N, c, 8]
            new_max[:, :, s0:s1] = m
            new_sum[:, :, s0:s1] = s
            # lane-0 weights of rows (b, n, s) -> [c, B, N, 1] against attn [c, B, N, D]
            wp0 = wp[..., 0].permute(2, 0, 1).unsqueeze(-1)
            wc0 = wc[..., 0].permute(2, 0, 1).unsqueeze(-1)
            rows = (s1 - s0, batch, n, d)
            _blend(out[s0:s1].view(rows), prev_attn_out[s0:s1].reshape(rows),
                   cur_attn_out[s0:s1].reshape(rows), wp0, wc0)
        return out, new_max, new_sum

    total = prev_attn_out.shape[0]
    step = _rows_per_chunk(n * d)
    if plan.stats_layout == "NTD":
        offsets = torch.tensor(plan.seq_offsets, dtype=torch.int64, device=prev_attn_out.device)
        heads = torch.arange(n, device=prev_attn_out.device)
        flat = [x.reshape(-1, 8) for x in stats]  # rows of the flat NTD data
    for t0 in range(0, total, step):
        t1 = min(total, t0 + step)
        # New statistics are elementwise per lane, whatever the layout of the rows.
        m, s, wp, wc = _merge_stats(*(x[t0:t1] for x in stats))
        new_max[t0:t1] = m
        new_sum[t0:t1] = s
        if plan.stats_layout == "NTD":
            # Token t of sequence b (rows offsets[b]..offsets[b+1]) and head h has its
            # statistics at flat row offsets[b]*N + h*S_b + (t - offsets[b]).
            tok = torch.arange(t0, t1, device=prev_attn_out.device)
            seq = torch.searchsorted(offsets[1:], tok, right=True)
            start = offsets[seq]
            length = offsets[seq + 1] - start
            rows = (start * n + tok - start).unsqueeze(1) + heads.unsqueeze(0) * length.unsqueeze(1)
            _, _, wp, wc = _merge_stats(*(f[rows, 0] for f in flat))  # [c, N]
            wp, wc = wp.unsqueeze(-1), wc.unsqueeze(-1)
        else:
            wp, wc = wp[..., :1], wc[..., :1]  # [c, N, 1]
        _blend(out[t0:t1], prev_attn_out[t0:t1], cur_attn_out[t0:t1], wp, wc)
    return out, new_max, new_sum
