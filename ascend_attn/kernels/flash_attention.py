"""FlashAttention varlen (TND) forward V4 and grad V4: device-generic torch, tiled.

Per sequence ``b`` and block of query rows x block of key rows (docs/semantics.md §2-§6):

* forward: online softmax over key blocks (running max / sum, rescaled accumulator);
* backward: block-wise recompute of the probabilities from the given statistics.

No ``[S1, S2]`` score matrix is ever materialised: temporaries are one block of scores for all
heads, accumulators are O(tokens). Blocks that the sparse mode masks out entirely are skipped
(causal costs about half of full attention). Heads of one GQA group share one matrix product:
queries are laid out ``[N2, S1, G, D]`` so a query block is a ``[N2, rows*G, D]`` view.

Math is float32 (float64 for float64 inputs, a test hook); P and dS are rounded to the input
dtype before their matrix products, outputs are rounded as CANN does (fp16: nearest, ties away
from zero; bf16: nearest even).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..native import flash_attention as native_fa
from ..validation import FlashPlan

FLT_MAX = 3.4028234663852886e38
# Query rows and key rows per block. The score block is N1 * BLOCK_Q * BLOCK_K floats: on CPU
# it should stay cache-sized; on GPUs / NPUs the cost is the number of launched kernels, so
# blocks are much larger there (memory stays O(tokens), just with a larger constant).
# 128 x 256 measured best on CPU (one 2k sequence, N=8, D=128, fp32, 1 thread): forward full
# 175 ms / causal 128 ms against 190 / 165 ms for 128 x 512 (fewer partly masked columns on the
# diagonal), fwd+bwd 597 / 415 ms against 601 / 476 ms.
BLOCK_Q = 128
BLOCK_K = 256
ACCEL_BLOCK_Q = 1024
ACCEL_BLOCK_K = 4096


def block_sizes(device: torch.device) -> tuple[int, int]:
    return (BLOCK_Q, BLOCK_K) if device.type == "cpu" else (ACCEL_BLOCK_Q, ACCEL_BLOCK_K)


# ----------------------------------------------------------------------------- rounding

def round_half_away_fp16(x: torch.Tensor) -> torch.Tensor:
    """float32 -> float16, nearest, ties away from zero (AscendC CAST_ROUND). Exact, vectorised.

    RNE differs only on exact ties that it rounded towards zero; there the other neighbour is
    ``x + (x - rne)``, which is exactly representable in fp16 precisely when x was a tie.
    """
    rne = x.to(torch.float16)
    back = rne.to(x.dtype)
    diff = x - back
    other = x + diff
    tie = (diff != 0) & (other.to(torch.float16).to(x.dtype) == other) & (back.abs() < x.abs())
    return torch.where(tie, other.to(torch.float16), rne)


def round_to(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Round a float32 result into ``dtype`` the way the NPU kernels do (docs/semantics.md §0.5)."""
    if dtype == torch.float16:
        return round_half_away_fp16(x)
    return x.to(dtype)


def round_in(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Values cast to the input dtype before a matrix product, kept in the compute dtype."""
    if dtype in (torch.float16, torch.bfloat16):
        return round_to(x, dtype).to(x.dtype)
    return x


# ----------------------------------------------------------------------------- per-sequence view

@dataclass
class Sequence:
    """Sequence ``b`` of the packed batch: rows ``[oq, oq+s1)`` of q, ``[ok, ok+s2)`` of k/v."""

    b: int
    oq: int
    ok: int
    s1: int
    s2: int
    drop_base: int  # element offset of this sequence's [N1, S1, S2] block in drop_mask / full pse
    row_base: int  # offset of this sequence's [N1, 1, S2] rows in the broadcast pse form


def sequences(plan: FlashPlan):
    oq = ok = drop = row = 0
    for b, (s1, s2) in enumerate(zip(plan.seq_q, plan.seq_kv)):
        yield Sequence(b, oq, ok, s1, s2, drop, row)
        oq, ok = oq + s1, ok + s2
        drop += plan.heads_q * s1 * s2
        row += plan.heads_q * s2


def band_limits(plan: FlashPlan, seq: Sequence, has_mask: bool):
    """``(lo, hi, prefix)`` of the index part of the keep rule of sequence ``seq`` (semantics.md §4):
    keep when ``lo <= j - i <= hi`` or ``j < prefix``; None = unbounded / no prefix."""
    lo = hi = prefix = None
    if not has_mask:
        return lo, hi, prefix  # no mask: full attention in every mode
    mode, delta = plan.sparse_mode, seq.s2 - seq.s1
    pre, nxt = plan.pre_tokens, plan.next_tokens
    if mode == 0:
        lo, hi = -pre, nxt
    elif mode == 2:
        hi = 0
    elif mode in (3, 6):
        hi = delta
    elif mode == 4:
        lo, hi = delta - pre, delta + nxt
    elif mode == 7:
        hi = delta + nxt if seq.b == plan.last_active else delta
    elif mode == 8:
        hi = seq.s2 - max(seq.s1 - nxt, 0) if seq.b == plan.first_active else 0
    if mode == 6:
        prefix = plan.prefix[seq.b]
    return lo, hi, prefix


class KeepRule:
    """Which (i, j) of one sequence are kept (docs/semantics.md §4), block by block.

    keep(i, j) = (lo <= j - i <= hi  or  j < prefix)  and  not mask[i, j]; a bound of None is
    unbounded. ``block`` answers None (nothing kept: skip), True (all kept) or a bool tensor.
    """

    def __init__(self, plan: FlashPlan, seq: Sequence, atten_mask: torch.Tensor | None):
        self.lo, self.hi, self.prefix = band_limits(plan, seq, atten_mask is not None)
        self.mask = None
        if atten_mask is None:
            return
        if plan.mask_form == "local":
            self.mask = atten_mask[: seq.s1, : seq.s2]
        elif plan.mask_form == "global":
            self.mask = atten_mask[seq.oq: seq.oq + seq.s1, seq.ok: seq.ok + seq.s2]

    def _band(self, i0, i1, j0, j1):
        """None / True / False(=partial) for the band part of the rule on a block."""
        lo = -(1 << 62) if self.lo is None else self.lo
        hi = (1 << 62) if self.hi is None else self.hi
        if lo > hi or i1 - 1 + hi < j0 or i0 + lo > j1 - 1:
            return None
        if i1 - 1 + lo <= j0 and i0 + hi >= j1 - 1:
            return True
        return False

    def block(self, i0: int, i1: int, j0: int, j1: int, device):
        band = self._band(i0, i1, j0, j1)
        if self.prefix is not None and j0 < self.prefix:
            band = True if (band is True or j1 <= self.prefix) else False
        if band is None:
            return None
        keep = True
        if band is False:
            i = torch.arange(i0, i1, device=device).unsqueeze(1)
            j = torch.arange(j0, j1, device=device).unsqueeze(0)
            d = j - i
            keep = torch.ones(i1 - i0, j1 - j0, dtype=torch.bool, device=device)
            if self.lo is not None:
                keep &= d >= self.lo
            if self.hi is not None:
                keep &= d <= self.hi
            if self.prefix is not None:
                keep |= j < self.prefix
        if self.mask is not None:
            kept = self.mask[i0:i1, j0:j1] == 0
            if not bool(kept.any()):
                return None
            if keep is True:
                keep = True if bool(kept.all()) else kept
            else:
                keep = keep & kept
                if not bool(keep.any()):
                    return None
        return keep


class Bias:
    """pse of one sequence, block by block, shaped ``[N2, rows, G, cols]`` (docs/semantics.md §5)."""

    def __init__(self, plan: FlashPlan, seq: Sequence, pse: torch.Tensor | None, cdtype):
        self.plan, self.seq, self.form, self.cdtype = plan, seq, plan.pse_form, cdtype
        n1, g = plan.heads_q, plan.heads_q // plan.heads_kv
        self.shape_heads = (plan.heads_kv, g)
        if self.form is None:
            return
        if self.form == "slopes":
            slopes = pse if pse.dim() == 1 else pse[seq.b]
            self.slopes = slopes.to(cdtype).view(plan.heads_kv, 1, g, 1)
        elif self.form == "full":
            self.table = pse[seq.drop_base: seq.drop_base + n1 * seq.s1 * seq.s2].view(n1, seq.s1, seq.s2)
        elif self.form == "row":
            self.table = pse[seq.row_base: seq.row_base + n1 * seq.s2].view(n1, 1, seq.s2)
        elif self.form == "alibi":
            comp = pse[seq.b if pse.shape[0] > 1 else 0]  # [N1, 1024, S_ref]
            s_ref = comp.shape[-1]
            # Toeplitz values by k = i - j: k >= 0 from the last row, k < 0 from the last column.
            neg = comp[:, :-1, s_ref - 1]  # k = -1023 .. -1
            pos = comp[:, -1, :].flip(-1)  # k = 0 .. s_ref - 1
            self.toeplitz = torch.cat([neg, pos], dim=1).to(cdtype)  # index k + 1023
            self.k_offset = comp.shape[1] - 1

    def _heads(self, x):  # [N1, r, c] -> [N2, r, G, c]
        n2, g = self.shape_heads
        return x.view(n2, g, x.shape[1], x.shape[2]).permute(0, 2, 1, 3)

    def block(self, i0, i1, j0, j1):
        if self.form is None:
            return None
        device = self.slopes.device if self.form == "slopes" else (
            self.toeplitz.device if self.form == "alibi" else self.table.device)
        if self.form in ("full", "row"):
            rows = slice(i0, i1) if self.form == "full" else slice(0, 1)
            return self._heads(self.table[:, rows, j0:j1].to(self.cdtype))
        i = torch.arange(i0, i1, device=device).unsqueeze(1)
        j = torch.arange(j0, j1, device=device).unsqueeze(0)
        if self.form == "alibi":
            k = (i - j + self.k_offset).clamp(0, self.toeplitz.shape[1] - 1)
            return self._heads(self.toeplitz[:, k])
        dist = ((j + self.plan.kv_start) - (i + self.plan.q_start)).abs().to(self.cdtype)
        if self.plan.pse_type == 3:
            dist = dist.sqrt()
        return -self.slopes * dist.view(1, i1 - i0, 1, j1 - j0)


def dropout_block(plan: FlashPlan, seq: Sequence, drop_mask, i0, i1, j0, j1, cdtype):
    """keep bits / keep_prob of a block, ``[N2, rows, G, cols]`` (LSB-first, 1 = keep; §6)."""
    n2, g = plan.heads_kv, plan.heads_q // plan.heads_kv
    device = drop_mask.device
    heads = torch.arange(plan.heads_q, device=device).view(n2, 1, g, 1)
    i = torch.arange(i0, i1, device=device).view(1, -1, 1, 1)
    j = torch.arange(j0, j1, device=device).view(1, 1, 1, -1)
    e = seq.drop_base + (heads * seq.s1 + i) * seq.s2 + j
    bits = (drop_mask[e >> 3].to(torch.int32) >> (e & 7).to(torch.int32)) & 1
    return bits.to(cdtype) / plan.keep_prob


# ----------------------------------------------------------------------------- statistics layout

def stats_rows(stats: torch.Tensor, plan: FlashPlan, seq: Sequence) -> torch.Tensor:
    """Lane 0 of a sequence's statistics as ``[N2, S1, G]`` (NTD or TND data, §0.3)."""
    n1, n2 = plan.heads_q, plan.heads_kv
    g = n1 // n2
    if plan.softmax_layout == "TND":
        rows = stats[seq.oq: seq.oq + seq.s1, :, 0]  # [S1, N1]
        return rows.reshape(seq.s1, n2, g).permute(1, 0, 2)
    flat = stats.reshape(-1, 8)[seq.oq * n1: (seq.oq + seq.s1) * n1, 0]  # [N1 * S1] head-major
    return flat.view(n2, g, seq.s1).permute(0, 2, 1)


def write_stats(out: torch.Tensor, rows: torch.Tensor, plan: FlashPlan, seq: Sequence) -> None:
    """Write ``[N2, S1, G]`` rows into the ``[T1, N1, 8]`` output in the plan's layout."""
    n1 = plan.heads_q
    if plan.softmax_layout == "TND":
        out[seq.oq: seq.oq + seq.s1] = rows.permute(1, 0, 2).reshape(seq.s1, n1, 1)
    else:
        flat = out.view(-1, 8)[seq.oq * n1: (seq.oq + seq.s1) * n1]
        flat.copy_(rows.permute(0, 2, 1).reshape(-1, 1).expand(-1, 8))


def _grouped(x: torch.Tensor, n2: int, cdtype) -> torch.Tensor:
    """[S, N1, D] -> [N2, S, G, D] in the compute dtype (contiguous). May be a view of ``x``:
    never modify the result in place."""
    s, n1, d = x.shape
    return x.to(cdtype).view(s, n2, n1 // n2, d).permute(1, 0, 2, 3).contiguous()


def _ungroup(x: torch.Tensor, rows: int) -> torch.Tensor:
    """[N2, rows*G, D] -> [rows, N1, D]."""
    n2, rg, d = x.shape
    return x.view(n2, rows, rg // rows, d).permute(1, 0, 2, 3).reshape(rows, -1, d)


def _column_blocks(x: torch.Tensor, cdtype, block_k: int) -> list[torch.Tensor]:
    """[S, N2, D] -> one contiguous ``[N2, D, cols]`` tensor per block of ``block_k`` rows: the
    right-hand side of plain NN block products. Separate blocks, not slices of one ``[N2, D, S]``
    tensor, because a power-of-two row stride slows CPU BLAS by up to a third (cache aliasing)."""
    return [x[j0: j0 + block_k].to(cdtype).permute(1, 2, 0).contiguous() for j0 in range(0, x.shape[0], block_k)]


def _compute_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _scores(plan, bias, qs, kt, i0, i1, j0, j1, g, hook=None):
    """Scaled scores of a block with pse, ``[N2, rows, G, cols]``. ``qs`` is the query block
    already multiplied by ``scale`` (one pass over q instead of one over every score block), so
    pse_type 1's ``(s + pse) * scale`` is computed as ``s * scale + pse * scale``. ``kt`` is the
    key block transposed, ``[N2, D, cols]`` (a plain NN product: 15-50% faster on CPU BLAS than
    multiplying by a transposed view).
    ``hook.scores(s, i0, i1, j0, j1)`` (forward ``hooks``) may rewrite the block before pse."""
    s = torch.bmm(qs, kt).view(qs.shape[0], i1 - i0, g, j1 - j0)
    if hook is not None:
        s = hook.scores(s, i0, i1, j0, j1)
    pse = bias.block(i0, i1, j0, j1)
    if pse is not None:
        s.add_(pse * plan.scale if plan.pse_type == 1 else pse)
    return s


# ----------------------------------------------------------------------------- forward

def flash_attention_forward(query, key, value, plan: FlashPlan, *, pse=None, drop_mask=None,
                            atten_mask=None, hooks=None):
    """TND forward. query ``[T1, N1, D]``, key/value ``[T2, N2, D]``.

    Returns ``(attention_out [T1, N1, D] (query dtype), softmax_max, softmax_sum [T1, N1, 8] fp32)``;
    statistics in NTD or TND data layout per the plan; rows past the sequences are 0.
    ``hooks`` (ATB SelfAttention): ``hooks(seq)`` -> None or an object whose ``scores(s, i0, i1, j0, j1)``
    rewrites a scaled score block ``[N2, rows, G, cols]`` before pse and ``probs(p, i0, i1, j0, j1)`` a
    rounded probability block ``[N2, rows*G, cols]`` before ``P @ V``.
    On CPU the native kernel runs instead where it is built and covers the call (not float64, no
    ``hooks``): ``ascend_attn.native.flash_attention``.
    """
    if native_fa.supported(native_fa.FORWARD_OP, query, key, value, hooks=hooks):
        return native_fa.forward(query, key, value, plan, pse=pse, drop_mask=drop_mask, atten_mask=atten_mask)
    dtype, device = query.dtype, query.device
    cdtype = _compute_dtype(dtype)
    n2, g = plan.heads_kv, plan.heads_q // plan.heads_kv
    drop_mask = None if drop_mask is None else drop_mask.reshape(-1)  # any shape, read flat (§6)
    block_q, block_k = block_sizes(device)
    out = torch.zeros(query.shape, dtype=dtype, device=device)
    smax = torch.zeros(query.shape[0], query.shape[1], 8, dtype=torch.float32, device=device)
    ssum = torch.zeros_like(smax)
    for seq in sequences(plan):
        if seq.s1 == 0:
            continue
        # [N2, S1, G, D], scaled; never in place: _grouped may return a view of the caller's query
        q = _grouped(query[seq.oq: seq.oq + seq.s1], n2, cdtype) * plan.scale
        kts = _column_blocks(key[seq.ok: seq.ok + seq.s2], cdtype, block_k)  # [N2, D, cols] per block
        v = value[seq.ok: seq.ok + seq.s2].to(cdtype).permute(1, 0, 2).contiguous()  # [N2, S2, D]
        rule, bias = KeepRule(plan, seq, atten_mask), Bias(plan, seq, pse, cdtype)
        hook = None if hooks is None else hooks(seq)
        m_rows, l_rows = [], []
        for i0 in range(0, seq.s1, block_q):
            i1 = min(seq.s1, i0 + block_q)
            qb = q[:, i0:i1].reshape(n2, (i1 - i0) * g, -1)
            m = torch.full((n2, i1 - i0, g, 1), -torch.inf, dtype=cdtype, device=device)
            l = torch.zeros_like(m)
            acc = torch.zeros(n2, (i1 - i0) * g, q.shape[-1], dtype=cdtype, device=device)
            for j0 in range(0, seq.s2, block_k):
                j1 = min(seq.s2, j0 + block_k)
                keep = rule.block(i0, i1, j0, j1, device)
                if keep is None:
                    continue
                z = _scores(plan, bias, qb, kts[j0 // block_k], i0, i1, j0, j1, g, hook)
                if keep is not True:
                    z.masked_fill_(~keep.view(1, i1 - i0, 1, j1 - j0), -torch.inf)
                m_new = torch.maximum(m, z.amax(-1, keepdim=True))
                m_safe = torch.where(m_new == -torch.inf, 0.0, m_new)  # rows with nothing kept yet
                alpha = torch.exp(m - m_safe)
                e = z.sub_(m_safe).exp_()  # in place: the score block is the largest temporary
                l = l * alpha + e.sum(-1, keepdim=True)
                if plan.dropout:
                    e.mul_(dropout_block(plan, seq, drop_mask, i0, i1, j0, j1, cdtype))
                p = round_in(e, dtype).view(n2, (i1 - i0) * g, j1 - j0)
                if hook is not None:
                    p = hook.probs(p, i0, i1, j0, j1)
                acc.mul_(alpha.view(n2, -1, 1)).baddbmm_(p, v[:, j0:j1])  # in place: no new [rows, D] block
                m = m_new
            empty = l == 0
            o = torch.where(empty.view(n2, -1, 1), 0.0, acc / torch.where(empty, 1.0, l).view(n2, -1, 1))
            out[seq.oq + i0: seq.oq + i1] = round_to(_ungroup(o, i1 - i0), dtype)
            m_rows.append(torch.where(empty, -FLT_MAX, m).squeeze(-1))
            l_rows.append(torch.where(empty, FLT_MAX, l).squeeze(-1))
        write_stats(smax, torch.cat(m_rows, dim=1).float(), plan, seq)
        write_stats(ssum, torch.cat(l_rows, dim=1).float(), plan, seq)
    return out, smax, ssum


# ----------------------------------------------------------------------------- backward

def flash_attention_backward(query, key, value, dy, softmax_max, softmax_sum, attention_in,
                             plan: FlashPlan, *, pse=None, drop_mask=None, atten_mask=None):
    """TND grad. Returns ``(dq, dk, dv)`` shaped and typed like query / key / value.

    P is recomputed from the given statistics (lane 0); ``D = rowsum(dy * attention_in)``.
    On CPU the native kernel runs instead where it is built (not for float64).
    """
    if native_fa.supported(native_fa.GRAD_OP, query, key, value):
        return native_fa.backward(query, key, value, dy, softmax_max, softmax_sum, attention_in, plan, pse=pse,
                                  drop_mask=drop_mask, atten_mask=atten_mask)
    dtype, device = query.dtype, query.device
    cdtype = _compute_dtype(dtype)
    n2, g = plan.heads_kv, plan.heads_q // plan.heads_kv
    drop_mask = None if drop_mask is None else drop_mask.reshape(-1)
    block_q, block_k = block_sizes(device)
    dq = torch.zeros(query.shape, dtype=dtype, device=device)
    dk = torch.zeros(key.shape, dtype=dtype, device=device)
    dv = torch.zeros(value.shape, dtype=dtype, device=device)
    for seq in sequences(plan):
        if seq.s1 == 0 or seq.s2 == 0:
            continue
        rows = slice(seq.oq, seq.oq + seq.s1)
        q, do, oin = (_grouped(x[rows], n2, cdtype) for x in (query, dy, attention_in))
        q = q * plan.scale  # scaled once (not in place: may view the caller's query); dk = dS^T (Q * scale)
        # K as [N2, S2, D] (dq = dS K) and as [N2, D, cols] blocks (scores); V as [N2, D, cols] blocks
        # (dP = dO V^T); dK / dV accumulated as [N2, D, cols] blocks: every product is a plain NN one
        k = key[seq.ok: seq.ok + seq.s2].to(cdtype).permute(1, 0, 2).contiguous()
        kts = _column_blocks(key[seq.ok: seq.ok + seq.s2], cdtype, block_k)
        vts = _column_blocks(value[seq.ok: seq.ok + seq.s2], cdtype, block_k)
        m_all = stats_rows(softmax_max, plan, seq).to(cdtype)  # [N2, S1, G]
        l_all = stats_rows(softmax_sum, plan, seq).to(cdtype)
        dk_acc = [torch.zeros_like(b) for b in kts]
        dv_acc = [torch.zeros_like(b) for b in vts]
        rule, bias = KeepRule(plan, seq, atten_mask), Bias(plan, seq, pse, cdtype)
        for i0 in range(0, seq.s1, block_q):
            i1 = min(seq.s1, i0 + block_q)
            r = (i1 - i0) * g
            qb = q[:, i0:i1].reshape(n2, r, -1)
            dob = do[:, i0:i1].reshape(n2, r, -1)
            qbt, dobt = qb.transpose(1, 2).contiguous(), dob.transpose(1, 2).contiguous()
            delta = (dob * oin[:, i0:i1].reshape(n2, r, -1)).sum(-1).view(n2, i1 - i0, g, 1)
            m = m_all[:, i0:i1].unsqueeze(-1)
            l = l_all[:, i0:i1].unsqueeze(-1)
            dq_acc = torch.zeros_like(qb)
            for j0 in range(0, seq.s2, block_k):
                j1 = min(seq.s2, j0 + block_k)
                keep = rule.block(i0, i1, j0, j1, device)
                if keep is None:
                    continue
                z = _scores(plan, bias, qb, kts[j0 // block_k], i0, i1, j0, j1, g)
                p = z.sub_(m).exp_().div_(l)  # in place on the score block
                if keep is not True:
                    p.masked_fill_(~keep.view(1, i1 - i0, 1, j1 - j0), 0.0)
                dp = torch.bmm(dob, vts[j0 // block_k]).view_as(p)
                if plan.dropout:
                    bits = dropout_block(plan, seq, drop_mask, i0, i1, j0, j1, cdtype)
                    dp.mul_(bits)
                    pd = p * bits
                else:
                    pd = p
                ds = round_in(dp.sub_(delta).mul_(p), dtype).view(n2, r, j1 - j0)
                pd = round_in(pd, dtype).view(n2, r, j1 - j0)
                dq_acc += torch.bmm(ds, k[:, j0:j1])
                dk_acc[j0 // block_k].baddbmm_(qbt, ds)
                dv_acc[j0 // block_k].baddbmm_(dobt, pd)
            dq[seq.oq + i0: seq.oq + i1] = round_to(_ungroup(dq_acc * plan.scale, i1 - i0), dtype)
        dk[seq.ok: seq.ok + seq.s2] = round_to(torch.cat(dk_acc, -1).permute(2, 0, 1), dtype)
        dv[seq.ok: seq.ok + seq.s2] = round_to(torch.cat(dv_acc, -1).permute(2, 0, 1), dtype)
    return dq, dk, dv
