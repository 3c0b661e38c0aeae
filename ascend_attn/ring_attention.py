"""Ring (context-parallel) attention over ``torch.distributed`` with ring-flash-attention's API.

Every rank of the process group keeps its shard of the queries; the key/value shards travel
around the ring (rank ``r`` sends to ``r + 1`` and receives from ``r - 1``, batched point-to-point
ops ``dist.P2POp`` + ``dist.batch_isend_irecv``). The next exchange is posted before the current
block is computed, so communication overlaps computation. Nothing is backend specific beyond the
process group: gloo (CPU tensors), nccl (CUDA tensors) and hccl (NPU tensors) all work.

Functions (ring-flash-attention's names, arguments and returns):

* :func:`ring_flash_attn_varlen_func` — **contiguous** shards: rank ``r`` holds the ``r``-th
  contiguous piece of every packed sequence (ring-flash-attention: ``seq.chunk(world)[r]``, local
  ``cu_seqlens = global // world``). Pieces may differ in length between ranks (the ranks exchange
  their ``cu_seqlens`` once per call; every rank lists the same sequences). Causal: key blocks of
  later ranks are skipped, the own block is causal, earlier blocks are full (as
  ring-flash-attention; rank ``r`` does ``r + 1`` of ``world`` blocks).
* :func:`zigzag_ring_flash_attn_varlen_func` — **zigzag** shards: each sequence of global length
  ``L`` (``L % (2 * world) == 0``) is cut into ``2 * world`` chunks and rank ``r`` holds chunk
  ``r`` followed by chunk ``2*world - 1 - r``, so every rank has the same local ``cu_seqlens``
  (checked) and the same causal work at every step (:func:`zigzag_shard` / :func:`zigzag_unshard`).
* :func:`ring_flash_attn_func` / :func:`zigzag_ring_flash_attn_func` — the same on
  ``(batch, seqlen_local, nheads, headdim)`` tensors (each batch row one sequence split along
  ``seqlen``); the LSE is ``(batch, nheads, seqlen_local)``.

Semantics are those of flash-attn on the full (unsharded) sequences, self-attention: ``causal``,
``window_size`` (left, right) and ``alibi_slopes`` (``(nheads,)`` or ``(batch, nheads)``,
``-slope * |i - j|``) act on GLOBAL positions, and dropout keep bits are the hash
:func:`ascend_attn.flash_attn_interface.dropout_keep` of (seed, sequence, head, global query
position, global key position), the seed drawn on rank 0 of the group from torch's default
generator and broadcast: a ring run equals ``flash_attn_varlen_func`` on the full sequences under
the same ``torch.manual_seed``.

Building blocks (``docs/semantics.md`` §8.4): each ring step's (query segment, key segment) pairs are
planned by :func:`ascend_attn.flash_attn_interface.plan_blocks` (trimmed to rows that see a key,
mapped onto :func:`ascend_attn.flash_attention_varlen_score`, blocks entirely in the future or
outside the window skipped); partials merge through :func:`ascend_attn.ring_attention_update`
(TND layout when ``D % 64 == 0``, otherwise the same data viewed as SBH ``[T, 1, N*D]``),
accumulating the output in float32 and rounding once at the end. Empty partials get weight 0
without NaN; rows that saw no key anywhere give out 0 and LSE ``-inf``. Backward:
:func:`ascend_attn.flash_attention_unpadding_score_grad` per block with the FINAL merged
statistics and output; ``dq`` accumulates locally, ``dk``/``dv`` travel around the ring with their
K/V block (float32 accumulators) and arrive back at the block's owner after ``world`` hops.

``deterministic`` has no effect (the reduction order is fixed). ``return_attn_probs`` returns
``(out, lse, None)`` (natural-log LSE ``(nheads, total_q_local)`` for varlen). Without an
initialized ``torch.distributed`` and ``group=None`` a call is single-process attention.
"""
from __future__ import annotations

import math
import operator
from typing import Sequence

import torch
import torch.distributed as dist

from . import flash_attn_interface as FA
from . import validation as V

__all__ = ["ring_flash_attn_varlen_func", "zigzag_ring_flash_attn_varlen_func", "ring_flash_attn_func",
           "zigzag_ring_flash_attn_func", "ring_flash_attn_varlen_qkvpacked_func",
           "ring_flash_attn_varlen_kvpacked_func", "zigzag_ring_flash_attn_varlen_qkvpacked_func",
           "zigzag_ring_flash_attn_varlen_kvpacked_func", "zigzag_shard", "zigzag_unshard", "contiguous_shard",
           "contiguous_unshard"]

OP = "ring_flash_attn_varlen_func"
FLT_MAX = 3.4028234663852886e38
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_KV_TAG, _DKV_TAG = 101, 102


# ----------------------------------------------------------------------------- zigzag split

def _split_lengths(op, cu_seqlens, world, pieces, rank=None, x=None, dim=0):
    """Global lengths of a shard helper's ``cu_seqlens`` after its checks: ``rank``/``world``
    valid, every length divisible by ``pieces`` and (with ``x``) the rows present."""
    cu = V.cu_seqlens_list(op, "cu_seqlens", cu_seqlens)
    if not (isinstance(world, int) and world >= 1 and (rank is None or isinstance(rank, int) and 0 <= rank < world)):
        raise V.value_error(op, "rank/world", "0 <= rank < world", (rank, world))
    lens = V.lengths_of(cu)
    if any(L % pieces for L in lens):
        name = "world" if pieces == world else "2 * world"
        raise V.value_error(op, "cu_seqlens", f"sequence lengths divisible by {name} = {pieces}", lens)
    if x is not None and cu[-1] > x.shape[dim]:
        raise V.value_error(op, "cu_seqlens", f"a total length <= x.shape[{dim}] = {x.shape[dim]}", cu[-1])
    return cu, lens


def _shard_count(op, shards, world):
    world = len(shards) if world is None else world
    if len(shards) != world or world < 1:
        raise V.value_error(op, "shards", f"one shard per rank ({world})", len(shards))
    return world


def zigzag_shard(x: torch.Tensor, cu_seqlens, rank: int, world: int, dim: int = 0):
    """Rank ``rank``'s zigzag shard of a packed tensor (rows along ``dim``, default TND ``dim=0``).

    Each sequence ``b`` of ``cu_seqlens`` (global, cumulative with a leading 0) has a length
    ``L_b`` divisible by ``2 * world``; it is cut into ``2 * world`` chunks and the rank keeps
    chunks ``rank`` and ``2*world - 1 - rank``. Rows beyond ``cu_seqlens[-1]`` are dropped.
    Returns ``(shard, local_cu_seqlens)``; ``local_cu_seqlens`` is an int32 tensor on ``x.device``
    (lengths ``L_b / world``), the same on every rank.
    """
    cu, lens = _split_lengths("zigzag_shard", cu_seqlens, world, 2 * world, rank, x, dim)
    pieces = []
    for start, L in zip(cu, lens):
        c = L // (2 * world)
        pieces.append(x.narrow(dim, start + rank * c, c))
        pieces.append(x.narrow(dim, start + (2 * world - 1 - rank) * c, c))
    local = [0]
    for L in lens:
        local.append(local[-1] + L // world)
    return torch.cat(pieces, dim=dim), torch.tensor(local, dtype=torch.int32, device=x.device)


def zigzag_unshard(shards: Sequence[torch.Tensor], cu_seqlens, world: int | None = None, dim: int = 0):
    """Inverse of :func:`zigzag_shard`: the packed global tensor from the ``world`` rank shards.

    ``cu_seqlens`` is the GLOBAL cumulative array (leading 0). Returns a tensor with
    ``cu_seqlens[-1]`` rows along ``dim``.
    """
    op = "zigzag_unshard"
    world = _shard_count(op, shards, world)
    cu, lens = _split_lengths(op, cu_seqlens, world, 2 * world)
    local_total = sum(L // world for L in lens)
    for s in shards:
        if s.shape[dim] != local_total:
            raise V.value_error(op, "shards", f"{local_total} rows along dim {dim}", s.shape[dim])
    pieces = []
    off = 0  # offset of the current sequence inside every shard
    for L in lens:
        c = L // (2 * world)
        chunks = [None] * (2 * world)
        for r, s in enumerate(shards):
            chunks[r] = s.narrow(dim, off, c)
            chunks[2 * world - 1 - r] = s.narrow(dim, off + c, c)
        pieces.extend(chunks)
        off += 2 * c
    if not pieces:
        return shards[0].narrow(dim, 0, 0)
    return torch.cat(pieces, dim=dim)


def contiguous_shard(x: torch.Tensor, cu_seqlens, rank: int, world: int, dim: int = 0):
    """Rank ``rank``'s contiguous shard of a packed tensor (rows along ``dim``): the ``rank``-th of
    ``world`` equal pieces of every sequence of ``cu_seqlens`` (global, leading 0; lengths divisible
    by ``world``). Returns ``(shard, local_cu_seqlens)`` (int32 tensor, ``global // world``)."""
    cu, lens = _split_lengths("contiguous_shard", cu_seqlens, world, world, rank, x, dim)
    pieces = [x.narrow(dim, start + rank * (L // world), L // world) for start, L in zip(cu, lens)]
    local = [c // world for c in cu]
    shard = torch.cat(pieces, dim=dim) if pieces else x.narrow(dim, 0, 0)
    return shard, torch.tensor(local, dtype=torch.int32, device=x.device)


def contiguous_unshard(shards: Sequence[torch.Tensor], cu_seqlens, world: int | None = None, dim: int = 0):
    """Inverse of :func:`contiguous_shard` (``cu_seqlens`` global)."""
    op = "contiguous_unshard"
    world = _shard_count(op, shards, world)
    cu, lens = _split_lengths(op, cu_seqlens, world, world)
    pieces = []
    for start, L in zip(cu, lens):
        pieces.extend(s.narrow(dim, start // world, L // world) for s in shards)
    return torch.cat(pieces, dim=dim) if pieces else shards[0].narrow(dim, 0, 0)


# ----------------------------------------------------------------------------- communication

class _Ring:
    """Ring neighbours of this rank inside ``group`` (global ranks for the P2P ops)."""

    def __init__(self, group):
        self.group = group
        if dist.is_available() and dist.is_initialized():
            self.rank = dist.get_rank(group)
            self.world = dist.get_world_size(group)
        elif group is None:
            self.rank, self.world = 0, 1  # no process group: plain single-process attention
        else:
            raise V.value_error(OP, "group", "a process group of an initialized torch.distributed", group)
        if self.world > 1:
            self.next = self._global((self.rank + 1) % self.world)
            self.prev = self._global((self.rank - 1) % self.world)

    def _global(self, r):
        if self.group is None or self.group is dist.group.WORLD:
            return r
        return dist.get_global_rank(self.group, r)

    def exchange(self, send: torch.Tensor, recv: torch.Tensor, tag: int):
        """Post (send to next, receive from prev) as one batch; returns the requests."""
        ops = [dist.P2POp(dist.isend, send, self.next, self.group, tag),
               dist.P2POp(dist.irecv, recv, self.prev, self.group, tag)]
        return dist.batch_isend_irecv(ops)

    def all_cu(self, cu: list[int], device, op=OP, arg="cu_seqlens") -> list[list[int]]:
        """Every rank's local cu_seqlens (two small all_gathers)."""
        if self.world == 1:
            return [cu]
        n = torch.tensor([len(cu)], dtype=torch.int64, device=device)
        ns = [torch.empty_like(n) for _ in range(self.world)]
        dist.all_gather(ns, n, group=self.group)
        counts = [int(x.item()) for x in ns]
        if len(set(counts)) != 1:
            raise V.value_error(op, arg, "the same number of sequences on every rank",
                                f"{[c - 1 for c in counts]} sequences per rank")
        t = torch.tensor(cu, dtype=torch.int64, device=device)
        ts = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(ts, t, group=self.group)
        return [[int(v) for v in x.tolist()] for x in ts]


    def seed(self, device) -> int:
        """A dropout seed drawn on rank 0 of the group and shared by every rank."""
        value = torch.tensor([FA.draw_seed()], dtype=torch.int64, device=device)
        if self.world > 1:
            dist.broadcast(value, src=self._global(0), group=self.group)
        return int(value.item())


def _wait(reqs):
    for r in reqs or ():
        r.wait()



# ----------------------------------------------------------------------------- merging partials

def _rau(po, pm, ps, co, cm, cs):
    """RingAttentionUpdate on TND data [T, N, D] / [T, N, 8] (SBH view when D % 64 != 0)."""
    from .torch_ops import ring_attention_update
    T, N, D = po.shape
    if D % 64 == 0 and D <= 768 and N <= 256:
        return ring_attention_update(po, pm, ps, co, cm, cs, actual_seq_qlen=[0, T], input_layout="TND",
                                     input_softmax_layout="TND")

    def sbh(x):
        return x.reshape(T, 1, N * D)

    def st(x):
        return x.permute(1, 0, 2).unsqueeze(0).contiguous()  # [T, N, 8] -> [1, N, T, 8]

    o, m, s = ring_attention_update(sbh(po), st(pm), st(ps), sbh(co), st(cm), st(cs), input_layout="SBH")
    return o.reshape(T, N, D), m[0].permute(1, 0, 2).contiguous(), s[0].permute(1, 0, 2).contiguous()


def _empty(mx, sm):
    """Rows (lanes) of a partial that saw no key: FA marks them max -FLT_MAX / sum +FLT_MAX; rows
    beyond the declared lengths carry sum 0."""
    return (mx <= -FLT_MAX) | (sm <= 0) | torch.isinf(sm)


def _merge(acc, part):
    """Merge partial ``part`` into ``acc`` (both (out fp32, max, sum)), handling empty partials."""
    out, mx, sm = acc
    c_out, c_mx, c_sm = part
    if out.shape[0] == 0:
        return acc
    c_out = c_out.to(torch.float32)
    pe, ce = _empty(mx, sm), _empty(c_mx, c_sm)
    both = pe & ce
    zero, one = torch.zeros_like(sm), torch.ones_like(sm)
    # one side empty: it gets the other side's max and sum 0 -> weight exactly 0, no NaN
    p_mx, p_sm = torch.where(pe, c_mx, mx), torch.where(pe, zero, sm)
    q_mx, q_sm = torch.where(ce, mx, c_mx), torch.where(ce, zero, c_sm)
    # both empty: any finite stats (outputs are 0), restored to the empty marker afterwards
    p_mx, p_sm = torch.where(both, zero, p_mx), torch.where(both, one, p_sm)
    q_mx, q_sm = torch.where(both, zero, q_mx), torch.where(both, one, q_sm)
    out = torch.where(pe[..., :1], torch.zeros_like(out), out)
    c_out = torch.where(ce[..., :1], torch.zeros_like(c_out), c_out)
    o, m, s = _rau(out, p_mx, p_sm, c_out, q_mx, q_sm)
    m = torch.where(both, torch.full_like(m, -FLT_MAX), m)
    s = torch.where(both, torch.full_like(s, FLT_MAX), s)
    return o, m, s



# ----------------------------------------------------------------------------- shards as segments

def _segments(layout, all_cu, world):
    """Per rank, the :class:`~ascend_attn.flash_attn_interface.Segment` list of its local rows:
    positions are global positions inside each sequence (self-attention: queries and keys share
    them)."""
    out = []
    for r in range(world):
        cu = all_cu[r]
        segs = []
        for b in range(len(cu) - 1):
            row, n = cu[b], cu[b + 1] - cu[b]
            if layout == "zigzag" and world > 1:
                c = n // 2
                segs.append(FA.Segment(b, row, r * c, r * c, c))
                segs.append(FA.Segment(b, row + c, (2 * world - 1 - r) * c, (2 * world - 1 - r) * c, c))
            else:  # contiguous: after the pieces of the lower ranks
                pos = sum(all_cu[p][b + 1] - all_cu[p][b] for p in range(r))
                segs.append(FA.Segment(b, row, pos, pos, n))
        out.append(segs)
    return out


class _Plan:
    """What every ring step computes: the block calls of (local queries, K/V block of ``src``)."""

    def __init__(self, q, all_cu, layout, ring, window, alibi_slopes, dropout):
        self.segs = _segments(layout, all_cu, ring.world)
        self.rank, self.world = ring.rank, ring.world
        self.n_heads, self.total_q, self.device = q.shape[1], q.shape[0], q.device
        self.all_cu, self.window, self.alibi, self.dropout = all_cu, window, alibi_slopes, dropout

    def calls(self, src):
        pairs = [(qs, ks) for qs in self.segs[self.rank] for ks in self.segs[src] if qs.seq == ks.seq]
        return FA.plan_blocks(pairs, n_heads=self.n_heads, total_q=self.total_q, total_k=self.all_cu[src][-1],
                              window=self.window, alibi_slopes=self.alibi, dropout=self.dropout, device=self.device)


# ----------------------------------------------------------------------------- forward / backward

def _empty_acc(q):
    T, N, _ = q.shape
    return (torch.zeros(q.shape, dtype=torch.float32, device=q.device),
            torch.full((T, N, 8), -FLT_MAX, device=q.device), torch.full((T, N, 8), FLT_MAX, device=q.device))


def _ring_forward(q, k, v, plan, scale, ring):
    n = plan.all_cu[ring.rank][-1]
    Nkv, D = k.shape[1], k.shape[2]
    kv = torch.stack([k[:n], v[:n]])  # [2, n, Nkv, D]: the block that travels
    acc = _empty_acc(q)
    for step in range(ring.world):
        src = (ring.rank - step) % ring.world
        reqs = nxt = None
        if step + 1 < ring.world:  # post the next exchange before computing on this block
            nxt = kv.new_empty((2, plan.all_cu[(ring.rank - step - 1) % ring.world][-1], Nkv, D))
            reqs = ring.exchange(kv, nxt, _KV_TAG)
        for call in plan.calls(src):
            part = call.forward(q, kv[0], kv[1], scale)
            rows = call.q_rows
            if rows is None:
                acc = _merge(acc, part)
            elif rows.numel():
                sub = _merge(tuple(a.index_select(0, rows) for a in acc), part)
                for a, x in zip(acc, sub):
                    a.index_copy_(0, rows, x)
        _wait(reqs)
        if nxt is not None:
            kv = nxt
    out, mx, sm = acc
    empty = _empty(mx, sm)
    empty[n:] = True  # rows beyond cu_seqlens[-1]
    mx = torch.where(empty, torch.full_like(mx, -FLT_MAX), mx)
    sm = torch.where(empty, torch.full_like(sm, FLT_MAX), sm)
    out = torch.where(empty[..., :1], torch.zeros_like(out), out).to(q.dtype)
    lse = torch.where(empty[..., 0], torch.full_like(mx[..., 0], -math.inf), mx[..., 0] + torch.log(sm[..., 0]))
    return out, lse.t().contiguous(), mx.contiguous(), sm.contiguous()


def _ring_backward(dout, q, k, v, out, mx, sm, plan, scale, ring):
    n = plan.all_cu[ring.rank][-1]
    Nkv, D = k.shape[1], k.shape[2]
    f32 = torch.float32
    dq = torch.zeros(q.shape, dtype=f32, device=q.device)
    kv = torch.stack([k[:n], v[:n]])
    dkv_reqs = dkv_recv = None
    for step in range(ring.world):
        src = (ring.rank - step) % ring.world
        reqs = nxt = None
        if step + 1 < ring.world:
            nxt = kv.new_empty((2, plan.all_cu[(ring.rank - step - 1) % ring.world][-1], Nkv, D))
            reqs = ring.exchange(kv, nxt, _KV_TAG)
        dkv = torch.zeros(kv.shape, dtype=f32, device=q.device)
        FA.add_block_grads(plan.calls(src), q, kv[0], kv[1], dout, out, mx, sm, scale, dq, dkv[0], dkv[1])
        if ring.world > 1:
            if step > 0:  # accumulator of this block from the ranks it visited before
                _wait(dkv_reqs)
                dkv += dkv_recv
            # pass it on with the block; at the last step it reaches the block's owner
            dkv_recv = torch.empty((2, plan.all_cu[(ring.rank - step - 1) % ring.world][-1], Nkv, D), dtype=f32,
                                   device=q.device)
            dkv_reqs = ring.exchange(dkv, dkv_recv, _DKV_TAG)
        _wait(reqs)
        if nxt is not None:
            kv = nxt
    if ring.world > 1:
        _wait(dkv_reqs)
        dkv = dkv_recv
    dk = torch.zeros_like(k)
    dv = torch.zeros_like(v)
    dk[:n] = dkv[0].to(k.dtype)
    dv[:n] = dkv[1].to(v.dtype)
    return dq.to(q.dtype), dk, dv


class _RingFlashAttnVarlen(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, plan, scale, ring):
        out, lse, mx, sm = _ring_forward(q, k, v, plan, scale, ring)
        ctx.save_for_backward(q, k, v, out, mx, sm)
        ctx.meta = (plan, scale, ring)
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        q, k, v, out, mx, sm = ctx.saved_tensors
        plan, scale, ring = ctx.meta
        if dout is None:
            dout = torch.zeros_like(out)
        dq, dk, dv = _ring_backward(dout.contiguous(), q, k, v, out, mx, sm, plan, scale, ring)
        return dq, dk, dv, None, None, None


# ----------------------------------------------------------------------------- checks and entry

def _check_tensors(op, names, q, k, v, rank, form):
    for key, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise V.type_error(op, names[key], f"a torch.Tensor {form}", type(t).__name__)
        if t.dtype not in _FLOAT_DTYPES:
            raise V.type_error(op, names[key], "dtype float16, bfloat16 or float32", t.dtype)
        if t.dim() != rank:
            raise V.value_error(op, names[key], f"{rank}-D tensors {form}", tuple(t.shape))
    for key, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise V.type_error(op, names[key], f"the dtype of {names['q']} ({q.dtype})", t.dtype)
        if t.device != q.device:
            raise V.value_error(op, names[key], f"the device of {names['q']} ({q.device})", t.device)
    if k.shape[-1] != q.shape[-1]:
        raise V.value_error(op, names["k"], f"the head_dim of {names['q']} ({q.shape[-1]})", k.shape[-1])
    if k.shape[-2] == 0 or q.shape[-2] % k.shape[-2]:
        raise V.value_error(op, names["k"], f"a head count dividing the {names['q']} heads ({q.shape[-2]})",
                            k.shape[-2])
    if k.shape != v.shape:
        raise V.value_error(op, names["v"], f"the shape of {names['k']} {tuple(k.shape)}", tuple(v.shape))


def _check_options(op, dropout_p, softmax_scale, window_size, causal):
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, (int, float)) or not 0 <= dropout_p < 1:
        raise V.value_error(op, "dropout_p", "a float in [0, 1)", dropout_p)
    if softmax_scale is not None and (isinstance(softmax_scale, bool) or not isinstance(softmax_scale, (int, float))):
        raise V.type_error(op, "softmax_scale", "None or a float", type(softmax_scale).__name__)
    return FA.window_pair(op, window_size, bool(causal))


def _run(op, layout, q, k, v, cu, lengths_arg, dropout_p, softmax_scale, causal, window_size, alibi_slopes, group):
    """Shared body of the four public functions: TND q/k/v, local cu (checked); returns (out, lse)."""
    window = _check_options(op, dropout_p, softmax_scale, window_size, causal)
    alibi = FA.check_alibi(op, alibi_slopes, q.shape[1], len(cu) - 1, q.device)
    scale = q.shape[-1] ** -0.5 if softmax_scale is None else float(softmax_scale)
    ring = _Ring(group)
    all_cu = ring.all_cu(cu, q.device, op, lengths_arg)
    if layout == "zigzag" and ring.world > 1:
        if any(c != cu for c in all_cu):
            raise V.value_error(op, lengths_arg, "the same local lengths on every rank (zigzag shards: chunks r and "
                                "2*world-1-r of every sequence)", [V.lengths_of(c) for c in all_cu])
        if any(L % 2 for L in V.lengths_of(cu)):
            raise V.value_error(op, lengths_arg, "even local sequence lengths (zigzag shards: two equal chunks per "
                                "sequence, global lengths divisible by 2 * world)", V.lengths_of(cu))
    dropout = (ring.seed(q.device), 1.0 - float(dropout_p)) if dropout_p > 0 else None
    plan = _Plan(q, all_cu, layout, ring, window, alibi, dropout)
    return _RingFlashAttnVarlen.apply(q.contiguous(), k.contiguous(), v.contiguous(), plan, scale, ring)


def _varlen(op, layout, names, q, k, v, cu_seqlens, max_seqlen, dropout_p, softmax_scale, causal, window_size,
            alibi_slopes, return_attn_probs, group):
    _check_tensors(op, names, q, k, v, 3, "(total_local, nheads, headdim)")
    cu = V.cu_seqlens_list(op, "cu_seqlens", cu_seqlens)
    if cu[-1] > q.shape[0] or cu[-1] > k.shape[0]:
        raise V.value_error(op, "cu_seqlens", f"a total length <= the rows of {names['q']} ({q.shape[0]}) and "
                            f"{names['k']} ({k.shape[0]})", cu[-1])
    longest = max(V.lengths_of(cu))
    try:
        max_len = None if isinstance(max_seqlen, bool) else operator.index(max_seqlen)
    except TypeError:
        max_len = None
    if max_len is None or max_len < longest:
        raise V.value_error(op, "max_seqlen", f"an int >= the longest local sequence ({longest})", max_seqlen)
    out, lse = _run(op, layout, q, k, v, cu, "cu_seqlens", dropout_p, softmax_scale, causal, window_size,
                    alibi_slopes, group)
    return (out, lse, None) if return_attn_probs else out


def _batched(op, layout, q, k, v, dropout_p, softmax_scale, causal, window_size, alibi_slopes, return_attn_probs,
             group):
    names = dict(q="q", k="k", v="v")
    _check_tensors(op, names, q, k, v, 4, "(batch_size, seqlen_local, nheads, headdim)")
    batch, s, n, d = q.shape
    if k.shape[:2] != q.shape[:2]:
        raise V.value_error(op, "k", f"(batch_size, seqlen_local) of q {tuple(q.shape[:2])}", tuple(k.shape[:2]))
    cu = [i * s for i in range(batch + 1)]
    out, lse = _run(op, layout, q.reshape(batch * s, n, d), k.reshape(batch * s, *k.shape[2:]),
                    v.reshape(batch * s, *v.shape[2:]), cu, "q", dropout_p, softmax_scale, causal, window_size,
                    alibi_slopes, group)
    out = out.view(batch, s, n, d)
    return (out, lse.view(n, batch, s).transpose(0, 1).contiguous(), None) if return_attn_probs else out


_QKV = dict(q="q", k="k", v="v")


def ring_flash_attn_varlen_func(q, k, v, cu_seqlens, max_seqlen, dropout_p=0.0, softmax_scale=None, causal=False,
                                window_size=(-1, -1), alibi_slopes=None, deterministic=False,
                                return_attn_probs=False, group=None):
    """Ring attention over CONTIGUOUS shards (ring-flash-attention's ``ring_flash_attn_varlen_func``).

    q ``(total_q_local, nheads, headdim)``, k/v ``(total_local, nheads_k, headdim)`` (GQA:
    ``nheads % nheads_k == 0``), float16 / bfloat16 / float32. ``cu_seqlens``: LOCAL cumulative
    lengths with a leading 0 (tensor or list), shared by q and k/v; rank ``r`` holds the ``r``-th
    contiguous piece of every sequence. ``max_seqlen``: the longest local sequence (or more), only
    validated. ``window_size``, ``alibi_slopes`` (``(nheads,)`` / ``(batch, nheads)`` fp32) and
    ``dropout_p`` act on global positions (module docstring). Returns ``out`` (q's shape and
    dtype), or ``(out, lse (nheads, total_q_local) fp32, None)`` with ``return_attn_probs``.
    Differentiable w.r.t. q, k, v; every rank of ``group`` must call it (and its backward).
    """
    return _varlen("ring_flash_attn_varlen_func", "contiguous", _QKV, q, k, v, cu_seqlens, max_seqlen, dropout_p,
                   softmax_scale, causal, window_size, alibi_slopes, return_attn_probs, group)


def zigzag_ring_flash_attn_varlen_func(q, k, v, cu_seqlens, max_seqlen, dropout_p=0.0, softmax_scale=None,
                                       causal=False, window_size=(-1, -1), alibi_slopes=None, deterministic=False,
                                       return_attn_probs=False, group=None):
    """As :func:`ring_flash_attn_varlen_func` over ZIGZAG shards (:func:`zigzag_shard`): every rank
    has the same local ``cu_seqlens`` (global // world) with even lengths, else ``ValueError``."""
    return _varlen("zigzag_ring_flash_attn_varlen_func", "zigzag", _QKV, q, k, v, cu_seqlens, max_seqlen, dropout_p,
                   softmax_scale, causal, window_size, alibi_slopes, return_attn_probs, group)


def ring_flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                         alibi_slopes=None, deterministic=False, return_attn_probs=False, group=None):
    """Ring attention of ``(batch_size, seqlen_local, nheads, headdim)`` contiguous shards (rank
    ``r`` holds positions ``[r * seqlen_local, (r + 1) * seqlen_local)`` of every batch row; local
    lengths may differ between ranks). Returns out, or ``(out, lse (batch_size, nheads,
    seqlen_local), None)`` with ``return_attn_probs``."""
    return _batched("ring_flash_attn_func", "contiguous", q, k, v, dropout_p, softmax_scale, causal, window_size,
                    alibi_slopes, return_attn_probs, group)


def zigzag_ring_flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                alibi_slopes=None, deterministic=False, return_attn_probs=False, group=None):
    """As :func:`ring_flash_attn_func` over zigzag shards along ``seqlen`` (chunks ``r`` and
    ``2*world-1-r`` of ``2*world``): ``seqlen_local`` even and equal on every rank."""
    return _batched("zigzag_ring_flash_attn_func", "zigzag", q, k, v, dropout_p, softmax_scale, causal, window_size,
                    alibi_slopes, return_attn_probs, group)


def _unpack(op, name, packed, count, form):
    if not isinstance(packed, torch.Tensor) or packed.dim() != 4 or packed.shape[1] != count:
        raise V.value_error(op, name, f"4-D tensors {form}",
                            tuple(packed.shape) if isinstance(packed, torch.Tensor) else type(packed).__name__)
    return packed.unbind(1)


def ring_flash_attn_varlen_qkvpacked_func(qkv, cu_seqlens, max_seqlen, dropout_p=0.0, softmax_scale=None,
                                          causal=False, window_size=(-1, -1), alibi_slopes=None, deterministic=False,
                                          return_attn_probs=False, group=None):
    """:func:`ring_flash_attn_varlen_func` on qkv ``(total_local, 3, nheads, headdim)``."""
    op = "ring_flash_attn_varlen_qkvpacked_func"
    q, k, v = _unpack(op, "qkv", qkv, 3, "(total_local, 3, nheads, headdim)")
    return _varlen(op, "contiguous", dict(q="qkv", k="qkv", v="qkv"), q, k, v, cu_seqlens, max_seqlen, dropout_p,
                   softmax_scale, causal, window_size, alibi_slopes, return_attn_probs, group)


def ring_flash_attn_varlen_kvpacked_func(q, kv, cu_seqlens, max_seqlen, dropout_p=0.0, softmax_scale=None,
                                         causal=False, window_size=(-1, -1), alibi_slopes=None, deterministic=False,
                                         return_attn_probs=False, group=None):
    """:func:`ring_flash_attn_varlen_func` with kv ``(total_local, 2, nheads_k, headdim)``."""
    op = "ring_flash_attn_varlen_kvpacked_func"
    k, v = _unpack(op, "kv", kv, 2, "(total_local, 2, nheads_k, headdim)")
    return _varlen(op, "contiguous", dict(q="q", k="kv", v="kv"), q, k, v, cu_seqlens, max_seqlen, dropout_p,
                   softmax_scale, causal, window_size, alibi_slopes, return_attn_probs, group)


def zigzag_ring_flash_attn_varlen_qkvpacked_func(qkv, cu_seqlens, max_seqlen, dropout_p=0.0, softmax_scale=None,
                                                 causal=False, window_size=(-1, -1), alibi_slopes=None,
                                                 deterministic=False, return_attn_probs=False, group=None):
    """:func:`zigzag_ring_flash_attn_varlen_func` on qkv ``(total_local, 3, nheads, headdim)``."""
    op = "zigzag_ring_flash_attn_varlen_qkvpacked_func"
    q, k, v = _unpack(op, "qkv", qkv, 3, "(total_local, 3, nheads, headdim)")
    return _varlen(op, "zigzag", dict(q="qkv", k="qkv", v="qkv"), q, k, v, cu_seqlens, max_seqlen, dropout_p,
                   softmax_scale, causal, window_size, alibi_slopes, return_attn_probs, group)


def zigzag_ring_flash_attn_varlen_kvpacked_func(q, kv, cu_seqlens, max_seqlen, dropout_p=0.0, softmax_scale=None,
                                                causal=False, window_size=(-1, -1), alibi_slopes=None,
                                                deterministic=False, return_attn_probs=False, group=None):
    """:func:`zigzag_ring_flash_attn_varlen_func` with kv ``(total_local, 2, nheads_k, headdim)``."""
    op = "zigzag_ring_flash_attn_varlen_kvpacked_func"
    k, v = _unpack(op, "kv", kv, 2, "(total_local, 2, nheads_k, headdim)")
    return _varlen(op, "zigzag", dict(q="q", k="kv", v="kv"), q, k, v, cu_seqlens, max_seqlen, dropout_p,
                   softmax_scale, causal, window_size, alibi_slopes, return_attn_probs, group)
