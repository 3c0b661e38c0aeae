"""Ring (context-parallel) attention over ``torch.distributed``: ``ring_flash_attn_varlen_func``.

Every rank of the process group keeps its shard of the queries; the key/value shards travel
around the ring (rank ``r`` sends to ``r + 1`` and receives from ``r - 1``, batched point-to-point
ops ``dist.P2POp`` + ``dist.batch_isend_irecv``). The next exchange is posted before the current
block is computed, so communication overlaps computation. Nothing is backend specific beyond the
process group: gloo (CPU tensors), nccl (CUDA tensors) and hccl (NPU tensors) all work.

Building blocks (``docs/semantics.md`` §8.4):

* partials: :func:`ascend_attn.flash_attention_varlen_score` (TND, softmax statistics in TND
  layout), bottom-right causal = ``sparse_mode=3`` with the canonical compressed mask;
* merging: :func:`ascend_attn.ring_attention_update` (TND layout when ``D % 64 == 0``, otherwise
  the same data viewed as SBH ``[T, 1, N*D]`` with statistics ``[1, N, T, 8]``), accumulating the
  output in float32 and rounding once at the end. Empty partials (rows that saw no key) get weight
  0 without NaN (their max is replaced by the other side's max and their sum by 0); rows that saw
  no key anywhere give out 0 and LSE ``-inf``;
* backward: :func:`ascend_attn.flash_attention_unpadding_score_grad` per block, given the FINAL
  merged statistics and output (so each block's P is the global probability). ``dq`` accumulates
  locally; ``dk``/``dv`` travel around the ring with their K/V block (float32 accumulators) and
  arrive back at the block's owner after ``world`` hops.

Split rule (what each rank holds; ``cu_seqlens`` passed to the function describes the LOCAL
shard, cumulative with a leading 0, as in flash-attn):

* ``causal=False``: any split. Rank ``r`` may hold any subset of the rows of every sequence
  (contiguous or zigzag), local lengths may differ between ranks (the ranks exchange their
  ``cu_seqlens`` once per call); every rank must list the same number of sequences.
* ``causal=True``: the load-balanced **zigzag** split. Each packed sequence of global length
  ``L`` (``L % (2 * world) == 0``) is cut into ``2 * world`` equal chunks of ``c = L / (2*world)``
  rows; rank ``r`` holds chunk ``r`` followed by chunk ``2*world - 1 - r`` (``2c`` rows), and the
  local shards of the sequences are packed in sequence order. Every rank therefore has the same
  local ``cu_seqlens`` (``L_b / world`` per sequence); this is checked. With it, ring step ``s``
  (K/V from rank ``src = (r - s) % world``) is: ``s = 0``: causal attention of the local shard on
  itself; ``src < r``: all local queries against the FRONT chunk of every K/V sequence (the back
  chunk lies entirely in the future and is skipped); ``src > r``: only the BACK query chunk of
  every sequence against the whole K/V shard (the front query chunk sees nothing and is not
  merged). Every rank does the same amount of work at every step.
  :func:`zigzag_shard` / :func:`zigzag_unshard` convert packed TND tensors (and the LSE, with
  ``dim=1``) between the global and the zigzag layout. With ``world == 1`` the whole sequence is
  local and any length is accepted.

Supported: causal and non-causal, ``window_size=(-1, -1)``, GQA (``N % Nkv == 0``), float16,
bfloat16 and float32, ``return_attn_probs`` (``(out, lse [N, total_q_local], None)``, natural-log
LSE), ``deterministic`` (no effect: the reduction order is fixed). Not supported (``ValueError``):
other windows, ``alibi_slopes``, ``dropout_p > 0``.
"""
from __future__ import annotations

import math
import operator
from typing import Sequence

import torch
import torch.distributed as dist

__all__ = ["ring_flash_attn_varlen_func", "zigzag_shard", "zigzag_unshard"]

OP = "ring_flash_attn_varlen_func"
FLT_MAX = 3.4028234663852886e38
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_KV_TAG, _DKV_TAG = 101, 102


def _value_error(arg, supported, got, op=OP):
    return ValueError(f"{op}: {arg} only supports {supported}, but got {got}")


def _type_error(arg, supported, got, op=OP):
    return TypeError(f"{op}: {arg} only supports {supported}, but got {got}")


def _cu_list(cu_seqlens, arg="cu_seqlens", op=OP) -> list[int]:
    """Host list of a cumulative length array with a leading 0 (list, tuple or 1-D int tensor)."""
    if isinstance(cu_seqlens, torch.Tensor):
        if cu_seqlens.dim() != 1 or cu_seqlens.dtype.is_floating_point or cu_seqlens.dtype in (
                torch.bool, torch.complex64, torch.complex128):
            raise _type_error(arg, "a 1-D integer tensor, list or tuple", f"{cu_seqlens.dtype} "
                              f"tensor of shape {tuple(cu_seqlens.shape)}", op)
        values = [int(x) for x in cu_seqlens.tolist()]
    elif isinstance(cu_seqlens, (list, tuple)):
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in cu_seqlens):
            raise _type_error(arg, "a 1-D integer tensor, list or tuple", repr(cu_seqlens), op)
        values = [int(x) for x in cu_seqlens]
    else:
        raise _type_error(arg, "a 1-D integer tensor, list or tuple", type(cu_seqlens).__name__, op)
    if len(values) < 2 or values[0] != 0 or any(b < a for a, b in zip(values, values[1:])):
        raise _value_error(arg, "a non-decreasing cumulative array with a leading 0 and at least one sequence",
                           values, op)
    return values


def _lengths(cu: Sequence[int]) -> list[int]:
    return [b - a for a, b in zip(cu, cu[1:])]


# ----------------------------------------------------------------------------- zigzag split

def zigzag_shard(x: torch.Tensor, cu_seqlens, rank: int, world: int, dim: int = 0):
    """Rank ``rank``'s zigzag shard of a packed tensor (rows along ``dim``, default TND ``dim=0``).

    Each sequence ``b`` of ``cu_seqlens`` (global, cumulative with a leading 0) has a length
    ``L_b`` divisible by ``2 * world``; it is cut into ``2 * world`` chunks and the rank keeps
    chunks ``rank`` and ``2*world - 1 - rank``. Rows beyond ``cu_seqlens[-1]`` are dropped.
    Returns ``(shard, local_cu_seqlens)``; ``local_cu_seqlens`` is an int32 tensor on ``x.device``
    (lengths ``L_b / world``), the same on every rank.
    """
    op = "zigzag_shard"
    cu = _cu_list(cu_seqlens, op=op)
    if not (isinstance(world, int) and world >= 1 and isinstance(rank, int) and 0 <= rank < world):
        raise _value_error("rank/world", "0 <= rank < world", (rank, world), op)
    lens = _lengths(cu)
    if any(L % (2 * world) for L in lens):
        raise _value_error("cu_seqlens", f"sequence lengths divisible by 2 * world = {2 * world}", lens, op)
    if cu[-1] > x.shape[dim]:
        raise _value_error("cu_seqlens", f"a total length <= x.shape[{dim}] = {x.shape[dim]}", cu[-1], op)
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
    cu = _cu_list(cu_seqlens, op=op)
    world = len(shards) if world is None else world
    if len(shards) != world or world < 1:
        raise _value_error("shards", f"one shard per rank ({world})", len(shards), op)
    lens = _lengths(cu)
    if any(L % (2 * world) for L in lens):
        raise _value_error("cu_seqlens", f"sequence lengths divisible by 2 * world = {2 * world}", lens, op)
    local_total = sum(L // world for L in lens)
    for s in shards:
        if s.shape[dim] != local_total:
            raise _value_error("shards", f"{local_total} rows along dim {dim}", s.shape[dim], op)
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
            raise _value_error("group", "a process group of an initialized torch.distributed", group)
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

    def all_cu(self, cu: list[int], device) -> list[list[int]]:
        """Every rank's local cu_seqlens (two small all_gathers)."""
        if self.world == 1:
            return [cu]
        n = torch.tensor([len(cu)], dtype=torch.int64, device=device)
        ns = [torch.empty_like(n) for _ in range(self.world)]
        dist.all_gather(ns, n, group=self.group)
        counts = [int(x.item()) for x in ns]
        if len(set(counts)) != 1:
            raise _value_error("cu_seqlens", "the same number of sequences on every rank",
                               f"{[c - 1 for c in counts]} sequences per rank")
        t = torch.tensor(cu, dtype=torch.int64, device=device)
        ts = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(ts, t, group=self.group)
        return [[int(v) for v in x.tolist()] for x in ts]


def _wait(reqs):
    for r in reqs or ():
        r.wait()


# ----------------------------------------------------------------------------- blocks

_MASKS: dict = {}


def _causal_mask(device):
    key = str(device)
    if key not in _MASKS:
        from .testing.samples import compressed_mask
        _MASKS[key] = compressed_mask(3).to(device)
    return _MASKS[key]


def _fa(q, k, v, seq_q, seq_kv, scale, causal):
    """One partial: (out, max, sum) with TND statistics [T, N, 8]."""
    from .torch_ops import flash_attention_varlen_score
    kwargs = dict(atten_mask=_causal_mask(q.device), sparse_mode=3) if causal else {}
    return flash_attention_varlen_score(q, k, v, q.shape[1], seq_q, seq_kv, scale_value=scale,
                                        softmax_out_layout="same_as_input", **kwargs)


def _fa_grad(q, k, v, dy, seq_q, seq_kv, mx, sm, out, scale, causal):
    from .torch_ops import flash_attention_unpadding_score_grad
    kwargs = dict(atten_mask=_causal_mask(q.device), sparse_mode=3) if causal else {}
    dq, dk, dv, _ = flash_attention_unpadding_score_grad(q, k, v, dy, q.shape[1], seq_q, seq_kv, mx, sm, out,
                                                         scale_value=scale, softmax_in_layout="same_as_input",
                                                         **kwargs)
    return dq, dk, dv


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


class _Halves:
    """Row indices of the front / back zigzag chunk of every local sequence."""

    def __init__(self, cu, device):
        front, back, half = [], [], [0]
        for start, L in zip(cu, _lengths(cu)):
            c = L // 2
            front.append(torch.arange(start, start + c))
            back.append(torch.arange(start + c, start + L))
            half.append(half[-1] + c)
        self.front = torch.cat(front).to(device)
        self.back = torch.cat(back).to(device)
        self.seq = half[1:]  # FA convention: cumulative, no leading 0


# ----------------------------------------------------------------------------- forward / backward

def _ring_forward(q, k, v, cu, all_cu, scale, causal, ring):
    T, N, D = q.shape
    Nkv = k.shape[1]
    n = cu[-1]
    seq = cu[1:]
    rank, world = ring.rank, ring.world
    halves = _Halves(cu, q.device) if causal and world > 1 else None
    kv = torch.stack([k[:n], v[:n]])  # [2, n, Nkv, D]: the block that travels
    acc = None
    for step in range(world):
        src = (rank - step) % world
        reqs = nxt = None
        if step + 1 < world:  # post the next exchange before computing on this block
            nxt = kv.new_empty((2, all_cu[(rank - step - 1) % world][-1], Nkv, D))
            reqs = ring.exchange(kv, nxt, _KV_TAG)
        kb, vb = kv[0], kv[1]
        rows = None
        if not causal:
            part = _fa(q, kb, vb, seq, all_cu[src][1:], scale, False)
        elif step == 0:
            part = _fa(q, kb, vb, seq, seq, scale, True)
        elif src < rank:  # K/V front chunks are in the past of every local query; back chunks skipped
            part = _fa(q, kb.index_select(0, halves.front), vb.index_select(0, halves.front), seq, halves.seq,
                       scale, False)
        else:  # only the back query chunks see this K/V (entirely in their past)
            rows = halves.back
            part = _fa(q.index_select(0, rows), kb, vb, halves.seq, seq, scale, False)
        if acc is None:
            acc = (part[0].to(torch.float32), part[1], part[2])
        elif rows is None:
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


def _ring_backward(dout, q, k, v, out, mx, sm, cu, all_cu, scale, causal, ring):
    T, N, D = q.shape
    Nkv = k.shape[1]
    n = cu[-1]
    seq = cu[1:]
    rank, world = ring.rank, ring.world
    halves = _Halves(cu, q.device) if causal and world > 1 else None
    f32 = torch.float32
    dq = torch.zeros((T, N, D), dtype=f32, device=q.device)
    kv = torch.stack([k[:n], v[:n]])
    dkv_reqs = dkv_recv = None
    for step in range(world):
        src = (rank - step) % world
        reqs = nxt = None
        if step + 1 < world:
            nxt = kv.new_empty((2, all_cu[(rank - step - 1) % world][-1], Nkv, D))
            reqs = ring.exchange(kv, nxt, _KV_TAG)
        kb, vb = kv[0], kv[1]
        dkv = torch.zeros((2,) + tuple(kb.shape), dtype=f32, device=q.device)
        if not causal:
            g = _fa_grad(q, kb, vb, dout, seq, all_cu[src][1:], mx, sm, out, scale, False)
            dq += g[0]
            dkv[0] += g[1]
            dkv[1] += g[2]
        elif step == 0:
            g = _fa_grad(q, kb, vb, dout, seq, seq, mx, sm, out, scale, True)
            dq += g[0]
            dkv[0] += g[1]
            dkv[1] += g[2]
        elif src < rank:
            f = halves.front
            g = _fa_grad(q, kb.index_select(0, f), vb.index_select(0, f), dout, seq, halves.seq, mx, sm, out,
                         scale, False)
            dq += g[0]
            dkv[0].index_add_(0, f, g[1].to(f32))
            dkv[1].index_add_(0, f, g[2].to(f32))
        else:
            b = halves.back
            g = _fa_grad(q.index_select(0, b), kb, vb, dout.index_select(0, b), halves.seq, seq,
                         mx.index_select(0, b), sm.index_select(0, b), out.index_select(0, b), scale, False)
            dq.index_add_(0, b, g[0].to(f32))
            dkv[0] += g[1]
            dkv[1] += g[2]
        if world > 1:
            if step > 0:  # accumulator of this block from the ranks it visited before
                _wait(dkv_reqs)
                dkv += dkv_recv
            # pass it on with the block; at the last step it reaches the block's owner
            dkv_recv = torch.empty((2, all_cu[(rank - step - 1) % world][-1], Nkv, D), dtype=f32,
                                   device=q.device)
            dkv_reqs = ring.exchange(dkv, dkv_recv, _DKV_TAG)
        _wait(reqs)
        if nxt is not None:
            kv = nxt
    if world > 1:
        _wait(dkv_reqs)
        dkv = dkv_recv
    dk = torch.zeros_like(k)
    dv = torch.zeros_like(v)
    dk[:n] = dkv[0].to(k.dtype)
    dv[:n] = dkv[1].to(v.dtype)
    return dq.to(q.dtype), dk, dv


class _RingFlashAttnVarlen(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, cu, all_cu, scale, causal, ring):
        out, lse, mx, sm = _ring_forward(q, k, v, cu, all_cu, scale, causal, ring)
        ctx.save_for_backward(q, k, v, out, mx, sm)
        ctx.meta = (cu, all_cu, scale, causal, ring)
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        q, k, v, out, mx, sm = ctx.saved_tensors
        cu, all_cu, scale, causal, ring = ctx.meta
        if dout is None:
            dout = torch.zeros_like(out)
        dq, dk, dv = _ring_backward(dout.contiguous(), q, k, v, out, mx, sm, cu, all_cu, scale, causal, ring)
        return dq, dk, dv, None, None, None, None, None


# ----------------------------------------------------------------------------- public function

def _check(q, k, v, cu_seqlens, max_seqlen, dropout_p, softmax_scale, window_size, alibi_slopes):
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise _type_error(name, "a torch.Tensor", type(t).__name__)
        if t.dtype not in _FLOAT_DTYPES:
            raise _type_error(f"{name} dtype", "float16, bfloat16 or float32", t.dtype)
        if t.dim() != 3:
            raise _value_error(f"{name}", "3-D [total, heads, head_dim] (TND) tensors", tuple(t.shape))
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise _type_error("k/v dtype", f"the dtype of q ({q.dtype})", (k.dtype, v.dtype))
    if k.shape != v.shape:
        raise _value_error("v shape", f"the shape of k {tuple(k.shape)}", tuple(v.shape))
    if k.shape[2] != q.shape[2]:
        raise _value_error("k head_dim", f"the head_dim of q ({q.shape[2]})", k.shape[2])
    if k.shape[1] == 0 or q.shape[1] % k.shape[1]:
        raise _value_error("k heads", f"a divisor of the q heads ({q.shape[1]})", k.shape[1])
    if k.device != q.device or v.device != q.device:
        raise _value_error("k/v device", f"the device of q ({q.device})", (k.device, v.device))
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, (int, float)) or dropout_p != 0:
        raise _value_error("dropout_p", "0.0", dropout_p)
    try:
        window = tuple(int(w) for w in window_size)
    except (TypeError, ValueError):
        window = None
    if window != (-1, -1):
        raise _value_error("window_size", "(-1, -1)", tuple(window_size) if window is not None else window_size)
    if alibi_slopes is not None:
        raise _value_error("alibi_slopes", "None", f"a {type(alibi_slopes).__name__}")
    if softmax_scale is not None and (isinstance(softmax_scale, bool) or not isinstance(softmax_scale, (int, float))):
        raise _type_error("softmax_scale", "None or a float", type(softmax_scale).__name__)
    cu = _cu_list(cu_seqlens)
    if cu[-1] > q.shape[0] or cu[-1] > k.shape[0]:
        raise _value_error("cu_seqlens", f"a total length <= the rows of q ({q.shape[0]}) and k ({k.shape[0]})",
                           cu[-1])
    longest = max(_lengths(cu))
    try:
        max_len = None if isinstance(max_seqlen, bool) else operator.index(max_seqlen)
    except TypeError:
        max_len = None
    if max_len is None or max_len < longest:
        raise _value_error("max_seqlen", f"an int >= the longest local sequence ({longest})", max_seqlen)
    return cu


def ring_flash_attn_varlen_func(q, k, v, cu_seqlens, max_seqlen, dropout_p=0.0, softmax_scale=None, causal=False,
                                window_size=(-1, -1), alibi_slopes=None, deterministic=False,
                                return_attn_probs=False, group=None):
    """Ring (context-parallel) varlen attention over ``torch.distributed`` (flash-attn signature).

    Args:
        q: ``[total_q_local, N, D]`` local query shard (TND), float16 / bfloat16 / float32.
        k, v: ``[total_k_local, Nkv, D]`` local key/value shards (``N % Nkv == 0``, GQA).
        cu_seqlens: LOCAL cumulative sequence lengths with a leading 0 (int32/int64 tensor or
            list), shared by q and k/v. ``causal=True`` requires the zigzag split (module
            docstring, :func:`zigzag_shard`); ``causal=False`` accepts any split.
        max_seqlen: the longest LOCAL sequence (or more); only validated.
        softmax_scale: default ``1/sqrt(D)``. ``causal``: bottom-right causal (self-attention).
        window_size, alibi_slopes, dropout_p: only ``(-1, -1)``, ``None``, ``0.0`` (else ValueError).
        deterministic: accepted, no effect (the reduction order is fixed).
        return_attn_probs: also return the natural-log LSE ``[N, total_q_local]`` (float32).
        group: the process group (default: the world group). Without an initialized
            ``torch.distributed`` and ``group=None`` the call is single-process attention.

    Returns ``out [total_q_local, N, D]`` (q dtype), or ``(out, lse, None)`` with
    ``return_attn_probs``. Rows with no visible key: out 0, LSE ``-inf``, zero gradients.
    Differentiable with respect to q, k and v; every rank of the group must call it (and its
    backward) together.
    """
    cu = _check(q, k, v, cu_seqlens, max_seqlen, dropout_p, softmax_scale, window_size, alibi_slopes)
    scale = 1.0 / math.sqrt(q.shape[2]) if softmax_scale is None else float(softmax_scale)
    ring = _Ring(group)
    all_cu = ring.all_cu(cu, q.device)
    causal = bool(causal)
    if causal and ring.world > 1:
        if any(c != cu for c in all_cu):
            raise _value_error("cu_seqlens", "the same local cu_seqlens on every rank with causal=True "
                               "(zigzag split)", all_cu)
        if any(L % 2 for L in _lengths(cu)):
            raise _value_error("cu_seqlens", "even local sequence lengths with causal=True (zigzag split: two "
                               "chunks per sequence)", _lengths(cu))
    out, lse = _RingFlashAttnVarlen.apply(q.contiguous(), k.contiguous(), v.contiguous(), cu, all_cu, scale,
                                          causal, ring)
    if return_attn_probs:
        return out, lse, None
    return out
