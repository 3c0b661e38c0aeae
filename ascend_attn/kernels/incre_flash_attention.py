"""IncreFlashAttention V2 (int8 scenarios A/B/C) with V4 extensions: device-generic torch.

Decode: one query row per (batch, head). Per batch, the KV cache is streamed in blocks of
``BLOCK_KV`` positions (whole pages when paged), gathered (paged) and converted to float32 block by
block, never as a whole (antiquant is folded out of the blocks); all query heads of one KV head
form one matrix product.

* float / antiquant / scenario C: online softmax in float32 (docs/semantics.md §7.3, §7.4);
* full int8 (scenarios A, B): the exact PromptFlashAttention dataflow of §7.5, which quantises
  probabilities relative to the row's global max, so it takes two passes over K then V.
"""
from __future__ import annotations

import struct

import torch

from .. import native
from ..validation import IFA_OP, IncrePlan, ifa_left_padding, value_error
from .flash_attention import round_half_away_fp16, round_to

# KV positions per streamed block: the block's float32 copy of K and V (a few MiB at most) stays
# in cache between its conversion and its two products. 2048 measured 10-40% slower at 8k-32k
# positions; 512 and 1024 were within noise of each other, and 1024 keeps caches up to 1k
# positions in one block (fewer eager calls per batch).
BLOCK_KV = 1024


# ----------------------------------------------------------------------------- quantisation

def fp19(x: float) -> float:
    """float32 truncated to FP19 (1 sign, 8 exponent, 10 mantissa bits), as the fixpipe does."""
    bits = struct.unpack("<I", struct.pack("<f", x))[0] & 0xFFFFE000
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def dequant_value(t: torch.Tensor, name: str) -> float:
    """The multiplier a dequant scale stands for (§7.7): float32 value or uint64/int64 word."""
    if t.dtype == torch.float32:
        return fp19(float(t.reshape(-1)[0]))
    word = int(t.reshape(-1).view(torch.int64)[0]) & 0xFFFFFFFFFFFFFFFF
    if (word >> 37) & 0x1FF:
        raise value_error(IFA_OP, name, "a dequant word whose offset field (bits 37-45) is 0",
                          f"offset field {(word >> 37) & 0x1FF}")
    return fp19(struct.unpack("<f", struct.pack("<I", word & 0xFFFFFFFF))[0])


def trans_quant_param(scale: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
    """uint64 quant words (returned as int64) like ``torch_npu.npu_trans_quant_param`` (§7.7)."""
    scale = scale.to(torch.float32)
    if offset is not None:
        scale, offset = torch.broadcast_tensors(scale, offset.to(torch.float32))
    words = (scale.contiguous().view(torch.int32).to(torch.int64) & 0xFFFFE000) | (1 << 46)
    if offset is not None:
        o = torch.round(offset).clamp(-256, 255).to(torch.int64)  # torch.round: half to even
        words = (words & 0x4000FFFFFFFF) | ((o & 0x1FF) << 37)
    return words


def _int8_sat(x: torch.Tensor) -> torch.Tensor:
    """Saturate integral values to int8, NaN -> 0 (§0.5)."""
    return torch.nan_to_num(x, nan=0.0).clamp(-128, 127).to(torch.int8)


def _round_half_away(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


class OutputQuant:
    """quant2 of §7.6: per-tensor (fp16 arithmetic, half-even) or per-channel (fp32, half-away)."""

    def __init__(self, plan: IncrePlan, scale: torch.Tensor, offset: torch.Tensor | None):
        self.channel = plan.quant_channel
        if self.channel:
            shape = (plan.heads_q, plan.head_dim)
            self.scale = scale.to(torch.float32).reshape(shape)
            self.offset = None if offset is None else offset.to(torch.float32).reshape(shape)
        else:
            self.scale = scale.to(torch.float32).reshape(()).half()
            self.offset = None if offset is None else offset.to(torch.float32).reshape(()).half()

    def __call__(self, o: torch.Tensor) -> torch.Tensor:
        """o: float32 ``[..., Nq, D]`` -> int8."""
        if self.channel:
            y = o * self.scale
            if self.offset is not None:
                y = y + self.offset
            return _int8_sat(_round_half_away(round_half_away_fp16(y).float()))
        y = (o.half().float() * self.scale.float()).half()
        if self.offset is not None:
            y = (y.float() + self.offset.float()).half()
        return _int8_sat(torch.round(y.float()))


# ----------------------------------------------------------------------------- KV access

class KVSource:
    """Blocks of batch b's cache as ``[n, Nkv, D]`` (raw dtype) for absolute positions [p0, p1)."""

    def __init__(self, plan: IncrePlan, key, value, block_table):
        self.plan, self.key, self.value, self.block_table = plan, key, value, block_table

    def _seq_view(self, x, b):
        """Batch b of a contiguous-layout K/V as ``[S, Nkv, D]``."""
        p = self.plan
        if p.kv_form == "list":
            x, b = x[b], 0
        if p.layout == "BSH":
            return x[b].view(x.shape[1], p.heads_kv, p.head_dim) if x[b].is_contiguous() else \
                x[b].reshape(x.shape[1], p.heads_kv, p.head_dim)
        if p.layout == "BSND":
            return x[b]
        return x[b].transpose(0, 1)

    def _paged(self, x, b, p0, p1):
        p, bs = self.plan, self.plan.block_size
        pages = self.block_table[b, p0 // bs: -(-p1 // bs)].long()
        blocks = x[pages]  # gather only the pages this block touches
        if p.paged_layout == "BSH":
            rows = blocks.reshape(-1, p.heads_kv, p.head_dim)
        else:
            rows = blocks.transpose(1, 2).reshape(-1, p.heads_kv, p.head_dim)
        first = (p0 // bs) * bs
        return rows[p0 - first: p1 - first]

    def block(self, b, p0, p1):
        if self.plan.kv_form == "paged":
            return self._paged(self.key, b, p0, p1), self._paged(self.value, b, p0, p1)
        return self._seq_view(self.key, b)[p0:p1], self._seq_view(self.value, b)[p0:p1]

    def step(self):
        bs = self.plan.block_size
        return max(bs, BLOCK_KV // bs * bs) if self.plan.kv_form == "paged" else BLOCK_KV


def _antiquant_params(plan: IncrePlan, scale, offset):
    """(scale, offset) for key and value, float32 ``[Nkv, 1, D]`` (per channel) or ``[1, 1, 1]`` (per tensor):
    broadcastable to one batch's ``[Nkv, G, D]`` query rows and output."""
    if scale is None:
        return None
    shape = (plan.heads_kv, 1, plan.head_dim) if plan.antiquant == "channel" else (1, 1, 1)
    s = scale.to(torch.float32).reshape(2, *shape)
    o = None if offset is None else offset.to(torch.float32).reshape(2, *shape)
    return [(s[i], None if o is None else o[i]) for i in (0, 1)]


# ----------------------------------------------------------------------------- the op

def _query_rows(query, plan):
    """query in its layout -> ``[B, Nkv, G, D]``."""
    g = plan.heads_q // plan.heads_kv
    return query.reshape(plan.batch, plan.heads_kv, g, plan.head_dim)


def _mask_rows(mask, plan, b, p0, p1):
    """Kept positions of batch b, ``[Nkv, G, n]`` or ``[1, 1, n]`` (1 in the mask = masked)."""
    g = plan.heads_q // plan.heads_kv
    if plan.mask_heads:
        rows = mask[b if mask.shape[0] > 1 else 0, :, 0, p0:p1]
        return (rows == 0).view(plan.heads_kv, g, p1 - p0)
    return (mask[b].reshape(-1)[p0:p1] == 0).view(1, 1, p1 - p0)


def _pse_rows(pse, plan, b, p0, p1):
    g = plan.heads_q // plan.heads_kv
    return pse[b if pse.shape[0] > 1 else 0, :, 0, p0:p1].view(plan.heads_kv, g, p1 - p0)


def check_device_values(plan: IncrePlan, *, key, block_table=None, atten_mask=None, pse_shift=None,
                        kv_padding_size=None, dequant_scale1=None, dequant_scale2=None, quant_scale1=None,
                        mask_arg: str = "atten_mask"):
    """Checks on tensor *values* that shape validation cannot see (padding size, dequant words,
    referenced pages), run before anything is computed. Every frontend calls this one function.

    Returns ``(plan with left padding applied, (deq1, deq2, quant_scale1) or None)``.
    """
    if plan.left_padding:
        plan = ifa_left_padding(plan, int(kv_padding_size.reshape(-1)[0]))
        for name, t in ((mask_arg, atten_mask), ("pse_shift", pse_shift)):
            if t is not None and t.shape[-1] < max(plan.ends):
                raise value_error(IFA_OP, name, f"a last dimension >= the KV end {max(plan.ends)}", t.shape[-1])
    if plan.kv_form == "paged":
        blocks = key.shape[0]
        for b in range(plan.batch):
            used = block_table[b, : -(-plan.ends[b] // plan.block_size)]
            if used.numel() and (int(used.min()) < 0 or int(used.max()) >= blocks):
                raise value_error(IFA_OP, "block_table", f"entries in [0, {blocks}) for the blocks in use",
                                  f"{used.tolist()} (batch {b})")
    deq = None
    if plan.scenario in ("A", "B"):
        deq = (dequant_value(dequant_scale1, "dequant_scale1"), dequant_value(dequant_scale2, "dequant_scale2"),
               float(quant_scale1.reshape(-1)[0].float()))
    return plan, deq


def incre_flash_attention(query, key, value, plan: IncrePlan, *, atten_mask=None, pse_shift=None,
                          dequant_scale1=None, quant_scale1=None, dequant_scale2=None, quant_scale2=None,
                          quant_offset2=None, antiquant_scale=None, antiquant_offset=None, block_table=None,
                          kv_padding_size=None):
    """Output shaped like ``query`` (its layout), dtype ``plan.out_dtype``.

    Inputs already validated; this reads the device data that validation cannot see (padding
    size, dequant words, referenced pages) and checks it before computing anything.
    """
    plan, deq = check_device_values(plan, key=key, block_table=block_table, atten_mask=atten_mask,
                                    pse_shift=pse_shift, kv_padding_size=kv_padding_size,
                                    dequant_scale1=dequant_scale1, dequant_scale2=dequant_scale2,
                                    quant_scale1=quant_scale1)
    if _use_native(plan, query, key, value):
        kv = lambda x: list(x) if isinstance(x, (list, tuple)) else [x]
        return torch.ops.ascend_attn_cpu.incre_flash_attention(
            query, kv(key), kv(value), atten_mask, pse_shift, antiquant_scale, antiquant_offset, block_table,
            quant_scale2, quant_offset2, plan.layout, plan.kv_form, plan.paged_layout or "", plan.heads_q,
            plan.heads_kv, plan.head_dim, plan.block_size, list(plan.starts), list(plan.ends), plan.mask_heads,
            plan.quant_channel, plan.scale, list(deq) if deq is not None else [])
    quant = OutputQuant(plan, quant_scale2, quant_offset2) if plan.scenario in ("A", "C") else None
    source = KVSource(plan, key, value, block_table)
    antiquant = _antiquant_params(plan, antiquant_scale, antiquant_offset)
    q_rows = _query_rows(query, plan)
    out = torch.empty(plan.batch, plan.heads_q, plan.head_dim, dtype=torch.float32, device=query.device)
    for b in range(plan.batch):
        start, end = plan.starts[b], plan.ends[b]
        if start < 0 or end <= start:
            out[b] = 0.0
            continue
        ctx = (atten_mask, pse_shift, source, b, start, end)
        if plan.scenario in ("A", "B"):
            o, kept = _full_int8_row(q_rows[b], plan, ctx, deq)
        else:
            o, kept = _float_row(q_rows[b], query.dtype, plan, ctx, antiquant)
        out[b] = o.reshape(plan.heads_q, plan.head_dim)
        out[b][~kept.reshape(plan.heads_q)] = 0.0  # all valid positions masked: 0 [P] §9f
    if quant is not None:
        result = quant(out)
    else:
        result = round_to(out, torch.float16 if plan.scenario == "B" else query.dtype)
    return result.reshape(query.shape)


def _use_native(plan: IncrePlan, query, key, value) -> bool:
    """CPU tensors run the native kernel (``csrc/cpu/incre_flash_attention.cpp``) when
    :func:`ascend_attn.native.use_native` says so."""
    kv = list(key) + list(value) if isinstance(key, (list, tuple)) else [key, value]
    return native.use_native("incre_flash_attention", query, *kv)


def _float_row(q, qdtype, plan, ctx, antiquant):
    """Online softmax over KV blocks for one batch: ``[Nkv, G, D]`` float32 and kept-any ``[Nkv, G]``.

    Antiquant ``x = (x8 + offset) * scale`` (per channel or per tensor) is folded out of the blocks,
    so each int8 block is only converted, never dequantised element by element:
    ``q . k = (q * sk) . k8 + (q * sk) . ok`` and ``sum_j p_j v_j = sv * (sum_j p_j v8_j + ov * sum_j p_j)``
    (the same values in exact arithmetic; float32 rounding differs in the last bits).
    """
    mask, pse, source, b, start, end = ctx
    g = plan.heads_q // plan.heads_kv
    qf = q.to(torch.float32)  # [Nkv, G, D]
    k_bias = v_scale = v_offset = None
    if antiquant:
        (k_scale, k_offset), (v_scale, v_offset) = antiquant
        qf = qf * k_scale
        k_bias = None if k_offset is None else (qf * k_offset).sum(-1, keepdim=True)  # [Nkv, G, 1]
    m = torch.full((plan.heads_kv, g, 1), -torch.inf, device=q.device)
    l = torch.zeros_like(m)
    p_sum = torch.zeros_like(m) if v_offset is not None else None  # sum of the rounded P (V's offset term)
    acc = torch.zeros(plan.heads_kv, g, plan.head_dim, device=q.device)
    step = source.step()
    for p0 in range(start, end, step):
        p1 = min(end, p0 + step)
        k, v = source.block(b, p0, p1)
        s = torch.bmm(qf, k.to(torch.float32).permute(1, 2, 0))  # [Nkv, G, n]
        if k_bias is not None:
            s.add_(k_bias)
        s.mul_(plan.scale)
        if pse is not None:
            s = s + _pse_rows(pse, plan, b, p0, p1).to(torch.float32)
        if mask is not None:
            s = s.masked_fill(~_mask_rows(mask, plan, b, p0, p1), -torch.inf)
        m_new = torch.maximum(m, s.amax(-1, keepdim=True))
        m_safe = torch.where(m_new == -torch.inf, 0.0, m_new)
        alpha = torch.exp(m - m_safe)
        e = s.sub_(m_safe).exp_()
        l = l * alpha + e.sum(-1, keepdim=True)
        p = e if qdtype == torch.float32 else round_to(e, qdtype).to(torch.float32)
        if p_sum is not None:
            p_sum = p_sum * alpha + p.sum(-1, keepdim=True)
        acc.mul_(alpha).baddbmm_(p, v.to(torch.float32).permute(1, 0, 2))
        m = m_new
    if v_offset is not None:
        acc.add_(v_offset * p_sum)
    if v_scale is not None:
        acc.mul_(v_scale)
    # "Fully masked" means no position was kept (m never rose above -inf), not l == 0: a NaN in
    # the query or an attended key row makes m and l NaN, and that NaN must reach the output.
    kept = m != -torch.inf
    return acc / torch.where(kept, l, 1.0), kept


def _full_int8_row(q, plan, ctx, deq):
    """Scenario A/B dataflow of §7.5 for one batch (two passes: scores, then P.V)."""
    mask, pse, source, b, start, end = ctx
    deq1, deq2, qs1 = deq
    scale16 = float(torch.tensor(plan.scale, dtype=torch.float32).half())  # fp16_rne(scale)
    qs1_16 = float(torch.tensor(qs1, dtype=torch.float32).half())
    qf = q.to(torch.float32)
    step = min(source.step(), 1024)  # int8 dot products of <= 1024 terms stay exact in float32
    scores, keeps = [], []
    for p0 in range(start, end, step):
        p1 = min(end, p0 + step)
        k, _ = source.block(b, p0, p1)
        si = torch.bmm(qf, k.to(torch.float32).permute(1, 2, 0))  # exact integers
        sh = (si * deq1).half().float()
        sh = (sh * scale16).half().float()
        if pse is not None:
            sh = (sh.double() + _pse_rows(pse, plan, b, p0, p1).double()).half().float()
        keep = torch.ones_like(sh, dtype=torch.bool) if mask is None else _mask_rows(mask, plan, b, p0, p1).expand_as(sh)
        scores.append(sh)
        keeps.append(keep)
    sh, keep = torch.cat(scores, -1), torch.cat(keeps, -1)
    m = sh.masked_fill(~keep, -torch.inf).amax(-1, keepdim=True)
    kept = m != -torch.inf  # NaN (from a NaN pse) counts as kept and propagates
    eh = torch.exp(sh - torch.where(kept, m, 0.0)).half().float().masked_fill(~keep, 0.0)
    l = eh.sum(-1, keepdim=True)
    p8 = _int8_sat(torch.round((eh * qs1_16).half().float())).to(torch.float32)
    oi = torch.zeros(plan.heads_kv, q.shape[1], plan.head_dim, dtype=torch.float64, device=q.device)
    for p0 in range(start, end, step):
        p1 = min(end, p0 + step)
        _, v = source.block(b, p0, p1)
        oi += torch.bmm(p8[..., p0 - start: p1 - start], v.to(torch.float32).permute(1, 0, 2)).double()
    o = (oi.float() * deq2) / torch.where(kept, l, 1.0)
    return o, kept
