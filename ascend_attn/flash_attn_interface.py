"""flash-attn 2.x compatible API on the Ascend ops (docs/semantics.md §8).

Users migrating from GPUs replace ``from flash_attn import ...`` with
``from ascend_attn import ...`` (or opt in to the import alias of
:mod:`ascend_attn.compat.flash_attn`): same names, argument order, defaults and returns as
flash-attn 2.x's ``flash_attn_interface``, errors naming the caller's arguments.

Mapping (§8.2): ``cu_seqlens`` (leading 0) -> cumulative lengths without the 0; causal is
bottom-right aligned; windows, causal masks and ALiBi are expressed per *block* (a query range
against a key range at known positions, :func:`plan_blocks`): each block is trimmed to the query
rows that see a key and the keys some row sees, then mapped onto the FA op (no mask, sparse_mode 3
or the sparse_mode 4 band with the canonical compressed mask; generated ALiBi ``pse_type=2`` with
the block's position offset). Blocks with the same mapping share one op call. Rows that see no key
at all are not passed to the op (CANN rejects them): out 0, LSE -inf, zero gradients.

Dropout keep bits are a hash of ``(seed, sequence, head, query index, key index)``
(:func:`dropout_keep`), so the ring layer and ``return_attn_probs`` see the same bits as the op
call; the seed is drawn from torch's default generator (``torch.manual_seed`` reproduces a run).

The varlen core (every function here but ``flash_attn_with_kvcache``) is the op pair
``ascend_attn::flash_attn_varlen_forward`` / ``flash_attn_varlen_backward`` (bottom of this module):
the planning above runs in their real kernels on host lengths, so under torch.compile ``cu_seqlens``
are data (README, torch.compile); the public functions check what needs no length values and draw
the dropout seed.

``softcap`` (``score = softcap * tanh(score / softcap)`` before masking and ALiBi) has no FA-op
form: it runs as float32 torch code per sequence in query chunks of :data:`SOFTCAP_CHUNK` rows,
recomputed in the backward (``torch.utils.checkpoint``): O(chunk * S_k * N) memory, about 2-3x the
time of the fused path. ``return_attn_probs`` with ``dropout_p > 0`` builds ``S_dmask`` the same
way (O(B * N * Sq * Sk), for tests, as in flash-attn).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

from . import validation as V
from .kernels.masks import canonical_compressed_mask

INF_TOKENS = 2147483647
FWD = "flash_attn_varlen_func"
S_DMASK_ROUND = 128  # flash-attn's S_dmask is (B, N, round_up(Sq, 128), round_up(Sk, 128))
SOFTCAP_CHUNK = 256  # query rows per recomputed chunk of the softcap path
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


# ----------------------------------------------------------------------------- argument checks

def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_tensor(op, name, x, rank, form):
    """A float tensor of the given rank; ``form`` describes the expected layout."""
    if not isinstance(x, torch.Tensor):
        raise V.type_error(op, name, f"a torch.Tensor {form}", type(x).__name__)
    if x.dim() != rank:
        raise V.value_error(op, name, f"{rank}-D tensors {form}", f"shape {V.quote(tuple(x.shape))}")
    if x.dtype not in _FLOAT_DTYPES:
        raise V.type_error(op, name, "dtype float16, bfloat16 or float32", V.dtype_name(x.dtype))


def _check_same(op, names, q, k, v):
    """k/v against q: dtype, device, head_dim, head count (GQA); k and v of one shape."""
    for key, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise V.type_error(op, names[key], f"the dtype of {names['q']} ({V.dtype_name(q.dtype)})",
                               V.dtype_name(t.dtype))
        if t.device != q.device:
            raise V.value_error(op, names[key], f"the device of {names['q']} ({q.device})", t.device)
    if k.shape[-1] != q.shape[-1]:
        raise V.value_error(op, names["k"], f"the head_dim of {names['q']} ({q.shape[-1]})", k.shape[-1])
    if k.shape[-2] == 0 or q.shape[-2] % k.shape[-2]:
        raise V.value_error(op, names["k"], f"a head count dividing the {q.shape[-2]} query heads", k.shape[-2])
    if k.shape != v.shape:
        raise V.value_error(op, names["v"], f"the shape of {names['k']} {V.quote(tuple(k.shape))}",
                            V.quote(tuple(v.shape)))


def window_pair(op, window_size, causal):
    """(left, right) of a flash-attn window: tuple, list or 2-element tensor of ints; any negative
    side is unbounded (-1); ``causal`` forces right = 0."""
    if isinstance(window_size, torch.Tensor):
        values = window_size.tolist() if window_size.dim() == 1 and not window_size.dtype.is_floating_point else None
    elif isinstance(window_size, (tuple, list)):
        values = list(window_size)
    else:
        values = None
    if values is None or len(values) != 2 or not all(V._is_integer(w) and not isinstance(w, bool) for w in values):
        shown = V.quote(tuple(window_size)) if isinstance(window_size, (tuple, list)) else repr(window_size)
        raise V.value_error(op, "window_size", "a pair (left, right) of ints, negative = unbounded", shown)
    left, right = (int(w) if w >= 0 else -1 for w in values)
    return left, (0 if causal else right)


def _check_scalars(op, dropout_p, softmax_scale, softcap):
    if not _is_number(dropout_p) or not 0.0 <= dropout_p < 1.0:
        raise V.value_error(op, "dropout_p", "a float in [0, 1)", repr(dropout_p))
    if softmax_scale is not None and not _is_number(softmax_scale):
        raise V.type_error(op, "softmax_scale", "None or a float", type(softmax_scale).__name__)
    if not _is_number(softcap):
        raise V.type_error(op, "softcap", "a float (<= 0 disables it)", type(softcap).__name__)


def check_alibi(op, alibi_slopes, n_heads, batch, device):
    if alibi_slopes is None:
        return None
    if not isinstance(alibi_slopes, torch.Tensor):
        raise V.type_error(op, "alibi_slopes", "None or a float32 tensor", type(alibi_slopes).__name__)
    if alibi_slopes.dtype != torch.float32:
        raise V.type_error(op, "alibi_slopes", "dtype float32", V.dtype_name(alibi_slopes.dtype))
    if tuple(alibi_slopes.shape) not in ((n_heads,), (batch, n_heads)):
        raise V.value_error(op, "alibi_slopes", f"shape (nheads,) = [{n_heads}] or (batch_size, nheads) = "
                            f"[{batch}, {n_heads}]", V.quote(tuple(alibi_slopes.shape)))
    if alibi_slopes.device != device:
        raise V.value_error(op, "alibi_slopes", f"the device of q ({device})", alibi_slopes.device)
    return alibi_slopes


def _check_max(op, name, limit, lengths):
    if isinstance(limit, bool) or not V._is_integer(limit):
        raise V.type_error(op, name, "an int", type(limit).__name__)
    if lengths and limit < max(lengths):
        raise V.value_error(op, name, f"a value >= the longest sequence ({max(lengths)})", limit)


# ----------------------------------------------------------------------------- dropout keep bits

_MIX1 = 0xBF58476D1CE4E5B9 - (1 << 64)  # splitmix64 finaliser constants as signed int64
_MIX2 = 0x94D049BB133111EB - (1 << 64)
_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)


def _mix(x: torch.Tensor) -> torch.Tensor:
    """splitmix64 finaliser on int64 tensors (wrapping multiply, logical right shifts)."""
    x = x ^ ((x >> 30) & ((1 << 34) - 1))
    x = x * _MIX1
    x = x ^ ((x >> 27) & ((1 << 37) - 1))
    x = x * _MIX2
    return x ^ ((x >> 31) & ((1 << 33) - 1))


def dropout_keep(seed: int, seq: int, n_heads: int, rows: torch.Tensor, cols: torch.Tensor,
                 keep_prob: float) -> torch.Tensor:
    """Keep bits ``[n_heads, len(rows), len(cols)]`` (True = kept) of sequence ``seq``.

    A pure function of ``(seed, seq, head, row, col)``: row/col are the query/key indices inside
    the sequence (global positions for the ring layer), so every split of the work draws the
    same bits. Bernoulli(keep_prob) with 24-bit resolution.
    """
    device = rows.device
    start = (seed + seq * _GOLDEN + (1 << 63)) % (1 << 64) - (1 << 63)  # wrapped to int64
    base = _mix(torch.tensor([start], dtype=torch.int64, device=device))
    heads = _mix(base + torch.arange(n_heads, dtype=torch.int64, device=device) * _GOLDEN)
    per_row = _mix(heads[:, None] + rows.to(torch.int64)[None, :] * _MIX2)
    col_keys = cols.to(torch.int64)[None, :] * _GOLDEN
    threshold = int(round(keep_prob * (1 << 24)))
    keep = torch.empty((n_heads, rows.numel(), cols.numel()), dtype=torch.bool, device=device)
    for h in range(n_heads):  # one head at a time: int64 temporaries of [rows, cols] only
        x = _mix(per_row[h, :, None] + col_keys)
        keep[h] = ((x >> 40) & ((1 << 24) - 1)) < threshold
    return keep


def _pack_bits(keep: torch.Tensor) -> torch.Tensor:
    """Bool keep bits packed LSB-first into uint8 (the op's drop_mask layout, §6)."""
    flat = keep.reshape(-1).to(torch.uint8)
    flat = torch.cat([flat, flat.new_zeros((-flat.numel()) % 8)]).view(-1, 8)
    weights = (2 ** torch.arange(8, device=flat.device)).to(torch.uint8)
    return (flat * weights).sum(-1, dtype=torch.uint8)


def draw_seed() -> int:
    """A dropout seed from torch's default generator."""
    return int(torch.randint(0, 2 ** 62, (1,)).item())


# ----------------------------------------------------------------------------- blocks

class Segment(NamedTuple):
    """Rows of one sequence inside a TND tensor."""
    seq: int      # sequence index (ALiBi row, dropout stream)
    row: int      # first row in the TND tensor
    pos: int      # position of the first row (queries in key positions: i + S_k - S_q)
    index: int    # index of the first row inside its sequence (dropout bits, S_dmask)
    length: int


class BlockCall(NamedTuple):
    """One FA op call: gathered rows (None = the whole tensor in order), lengths, op arguments."""
    q_rows: torch.Tensor | None
    k_rows: torch.Tensor | None
    seq_q: list
    seq_k: list
    kwargs: dict

    def _take(self, x, rows):
        return x if rows is None else x.index_select(0, rows)

    def forward(self, q, k, v, scale):
        """(out, softmax_max, softmax_sum) of the gathered rows, TND statistics [T, N, 8]."""
        from .torch_ops import flash_attention_varlen_score
        return flash_attention_varlen_score(self._take(q, self.q_rows), self._take(k, self.k_rows),
                                            self._take(v, self.k_rows), q.shape[1], self.seq_q, self.seq_k,
                                            scale_value=scale, softmax_out_layout="same_as_input", **self.kwargs)

    def backward(self, q, k, v, dout, out, mx, sm, scale):
        """(dq, dk, dv) of the gathered rows given the FINAL statistics of the query rows."""
        from .torch_ops import flash_attention_unpadding_score_grad
        r = self.q_rows
        dq, dk, dv, _ = flash_attention_unpadding_score_grad(
            self._take(q, r), self._take(k, self.k_rows), self._take(v, self.k_rows), self._take(dout, r),
            q.shape[1], self.seq_q, self.seq_k, self._take(mx, r), self._take(sm, r), self._take(out, r),
            scale_value=scale, softmax_in_layout="same_as_input", **self.kwargs)
        return dq, dk, dv


def _ranges(starts_lengths, device, total):
    """Row indices of concatenated ranges, or None if they are exactly ``range(total)``."""
    expect = 0
    for start, n in starts_lengths:
        if start != expect:
            break
        expect += n
    else:
        if expect == total:
            return None
    pieces = [torch.arange(s, s + n, device=device) for s, n in starts_lengths]
    return torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.long, device=device)


def plan_blocks(pairs, *, n_heads, total_q, total_k, window, alibi_slopes=None, dropout=None, device=None,
                drop_masks=None):
    """FA op calls computing every (query segment, key segment) pair of ``pairs``.

    ``window`` = (left, right) in positions (-1 = unbounded; causal = right 0): key position p_k
    is kept for query position p_q iff ``-left <= p_k - p_q <= right``. ``alibi_slopes`` ``[N]`` or
    ``[B, N]`` adds ``-slope * |p_k - p_q|``. ``dropout`` = (seed, keep_prob) or None;
    ``drop_masks``: the calls' packed keep bits of an earlier plan of the same arguments, concatenated
    (taken instead of hashing them again). Each pair is
    trimmed to the rows that see a key (empty pairs vanish); a query row occurs at most once per
    call. Returns a list of :class:`BlockCall`.
    """
    left, right = window
    groups: dict = {}
    for qs, ks in pairs:
        if qs.length == 0 or ks.length == 0:
            continue
        d0 = ks.pos - qs.pos  # p_k - p_q at i = j = 0
        lo = -math.inf if left < 0 else -left - d0  # kept iff lo <= j - i <= hi
        hi = math.inf if right < 0 else right - d0
        i0, i1 = max(0, -hi), min(qs.length, ks.length - lo)
        if i0 >= i1:
            continue
        i0, i1 = int(i0), int(i1)
        j0, j1 = int(max(0, i0 + lo)), int(min(ks.length, i1 + hi))
        s1, s2, shift = i1 - i0, j1 - j0, j0 - i0
        lo, hi = lo - shift, hi - shift
        delta = s2 - s1
        if lo <= -(s1 - 1) and hi >= s2 - 1:
            mode = (0, INF_TOKENS, INF_TOKENS)
        elif lo <= -(s1 - 1) and hi == delta:
            mode = (3, INF_TOKENS, INF_TOKENS)
        else:
            mode = (4, int(min(INF_TOKENS, delta - lo)), int(min(INF_TOKENS, hi - delta)))
        offset = (qs.pos + i0) - (ks.pos + j0) if alibi_slopes is not None else None
        key = (mode, offset)
        member = [qs.seq, qs.row + i0, s1, [(ks.row + j0, s2)], qs.index + i0, ks.index + j0]
        calls = groups.setdefault(key, [{}])
        mergeable = mode[0] == 0 and alibi_slopes is None and dropout is None
        for members in calls:
            same = members.get((member[1], s1))
            if same is None:
                members[(member[1], s1)] = member
                break
            if mergeable:  # full attention is position-free: one member with both key ranges
                same[3].extend(member[3])
                break
        else:
            calls.append({(member[1], s1): member})
    out = []
    for ((sparse, pre, nxt), offset), calls in groups.items():
        for members in calls:
            ms = list(members.values())
            kw = dict(sparse_mode=sparse)
            if sparse:
                kw.update(atten_mask=canonical_compressed_mask(4, device), pre_tokens=pre, next_tokens=nxt)
            if alibi_slopes is not None:
                slopes = alibi_slopes if alibi_slopes.dim() == 1 else alibi_slopes[[m[0] for m in ms]]
                kw.update(pse=slopes.contiguous(), pse_type=2, q_start_idx=[offset], kv_start_idx=[0])
            if dropout is not None:
                seed, keep_prob = dropout
                if drop_masks is None:
                    bits = [dropout_keep(seed, m[0], n_heads, torch.arange(m[4], m[4] + m[2], device=device),
                                         torch.arange(m[5], m[5] + m[3][0][1], device=device), keep_prob).reshape(-1)
                            for m in ms]
                    mask = _pack_bits(torch.cat(bits))
                else:
                    size = -(-n_heads * sum(m[2] * m[3][0][1] for m in ms) // 8)
                    mask, drop_masks = drop_masks[:size], drop_masks[size:]
                kw.update(drop_mask=mask, keep_prob=keep_prob)
            seq_q, seq_k, tq, tk = [], [], 0, 0
            for m in ms:
                tq += m[2]
                tk += sum(n for _, n in m[3])
                seq_q.append(tq)
                seq_k.append(tk)
            q_rows = _ranges([(m[1], m[2]) for m in ms], device, total_q)
            k_rows = _ranges([r for m in ms for r in m[3]], device, total_k)
            out.append(BlockCall(q_rows, k_rows, seq_q, seq_k, kw))
    return out


def _pairs(seq_q, seq_k):
    """flash-attn's bottom-right alignment: query i of sequence b sits at key position
    i + S_k - S_q; one (query, key) segment pair per sequence."""
    pairs, rq, rk = [], 0, 0
    for b, (s1, s2) in enumerate(zip(seq_q, seq_k)):
        pairs.append((Segment(b, rq, s2 - s1, 0, s1), Segment(b, rk, 0, 0, s2)))
        rq += s1
        rk += s2
    return pairs


# ----------------------------------------------------------------------------- dense float32 path

def _dense_probs(qb, kb, *, scale, softcap, window, slopes, q_pos, k_pos):
    """Softmax probabilities [N, R, C] (fp32) and LSE [N, R] of query rows ``qb`` [R, N, D] against
    keys ``kb`` [C, Nkv, D] at positions ``q_pos`` / ``k_pos``. Rows with no key: P 0, LSE -inf."""
    n = qb.shape[1]
    kf = kb.float().repeat_interleave(n // kb.shape[1], dim=1)
    s = torch.einsum("rhd,chd->hrc", qb.float(), kf) * scale
    if softcap > 0:
        s = torch.tanh(s / softcap) * softcap
    rel = k_pos[None, :] - q_pos[:, None]  # [R, C]
    keep = torch.ones_like(rel, dtype=torch.bool)
    left, right = window
    if left >= 0:
        keep &= rel >= -left
    if right >= 0:
        keep &= rel <= right
    if slopes is not None:
        s = s - slopes.view(-1, 1, 1) * rel.abs().float()
    s = s.masked_fill(~keep, -math.inf)
    lse = torch.logsumexp(s, dim=-1)
    p = torch.exp(s - torch.where(torch.isinf(lse), torch.zeros_like(lse), lse)[..., None])
    return p, lse


def _dense_chunk(qb, kb, vb, q_pos, k_pos, rows, seq, opts):
    """Attention of one chunk of query rows (checkpointed unit of the softcap path)."""
    p, lse = _dense_probs(qb, kb, scale=opts["scale"], softcap=opts["softcap"], window=opts["window"],
                          slopes=opts["slopes"][seq] if opts["slopes"] is not None else None, q_pos=q_pos, k_pos=k_pos)
    if opts["dropout"] is not None:
        seed, keep_prob = opts["dropout"]
        keep = dropout_keep(seed, seq, p.shape[0], rows, torch.arange(kb.shape[0], device=kb.device), keep_prob)
        p = p * keep / keep_prob
    vf = vb.float().repeat_interleave(p.shape[0] // vb.shape[1], dim=1)
    return torch.einsum("hrc,chd->rhd", p, vf), lse


def _dense_attention(q, k, v, seq_q, seq_k, *, scale, softcap, window, alibi_slopes, dropout):
    """Float32 torch attention per sequence (softcap path); (out [Tq, N, D], lse [Tq, N])."""
    from torch.utils.checkpoint import checkpoint
    n = q.shape[1]
    slopes = None
    if alibi_slopes is not None:
        slopes = alibi_slopes.view(1, n).expand(len(seq_q), n) if alibi_slopes.dim() == 1 else alibi_slopes
    opts = dict(scale=scale, softcap=softcap, window=window, slopes=slopes, dropout=dropout)
    outs, lses, rq, rk = [], [], 0, 0
    for b, (s1, s2) in enumerate(zip(seq_q, seq_k)):
        kb, vb = k[rk:rk + s2], v[rk:rk + s2]
        k_pos = torch.arange(s2, device=q.device)
        for c in range(0, s1, SOFTCAP_CHUNK):
            rows = torch.arange(c, min(s1, c + SOFTCAP_CHUNK), device=q.device)
            o, lse = checkpoint(_dense_chunk, q[rq + c: rq + c + rows.numel()], kb, vb, rows + (s2 - s1), k_pos,
                                rows, b, opts, use_reentrant=False)
            outs.append(o)
            lses.append(lse.t())
        rq += s1
        rk += s2
    tail = q.shape[0] - rq
    outs.append(q.new_zeros((tail,) + tuple(q.shape[1:]), dtype=torch.float32))
    lses.append(torch.full((tail, n), -math.inf, device=q.device))
    return torch.cat(outs).to(q.dtype), torch.cat(lses)


def _s_dmask(q, k, seq_q, seq_k, max_q, max_k, *, scale, softcap, window, alibi_slopes, dropout):
    """flash-attn's S_dmask: softmax probabilities (B, N, round128(max_q), round128(max_k)),
    negated where dropout dropped the entry; masked and padding entries 0."""
    n = q.shape[1]
    rup = lambda x: -(-x // S_DMASK_ROUND) * S_DMASK_ROUND
    out = torch.zeros(len(seq_q), n, rup(max_q), rup(max_k), dtype=q.dtype, device=q.device)
    seed, keep_prob = dropout
    rq = rk = 0
    with torch.no_grad():
        for b, (s1, s2) in enumerate(zip(seq_q, seq_k)):
            slopes = None if alibi_slopes is None else (alibi_slopes if alibi_slopes.dim() == 1 else alibi_slopes[b])
            rows, cols = torch.arange(s1, device=q.device), torch.arange(s2, device=q.device)
            p, _ = _dense_probs(q[rq:rq + s1], k[rk:rk + s2], scale=scale, softcap=softcap, window=window,
                                slopes=slopes, q_pos=rows + (s2 - s1), k_pos=cols)
            keep = dropout_keep(seed, b, n, rows, cols, keep_prob)
            out[b, :, :s1, :s2] = torch.where(keep, p, -p).to(q.dtype)
            rq += s1
            rk += s2
    return out


# ----------------------------------------------------------------------------- core (host lengths)

def _dropout(dropout_p, seed):
    """(seed, keep_prob) of the keep bits, or None without dropout; ``seed`` an int or a 1-element tensor."""
    return (int(seed), 1.0 - float(dropout_p)) if dropout_p > 0 else None


def _block_calls(q, k, seq_q, seq_k, window, alibi_slopes, dropout, drop_masks=None):
    """The FA op calls of packed sequences (one (query, key) segment pair per sequence)."""
    return plan_blocks(_pairs(seq_q, seq_k), n_heads=q.shape[1], total_q=q.shape[0], total_k=k.shape[0],
                       window=window, alibi_slopes=alibi_slopes, dropout=dropout, device=q.device,
                       drop_masks=drop_masks)


def _attention(op, q, k, v, seq_q, seq_k, *, dropout_p, softmax_scale, causal, window_size, softcap,
               alibi_slopes, seed=None, return_probs=False, max_q=0, max_k=0):
    """TND attention of packed sequences on host lengths (inputs already checked). ``seed``: the dropout
    seed (drawn here when None).

    Returns ``(out [Tq, N, D], lse [Tq, N] natural log, S_dmask or None, stats)``: ``stats`` the op
    calls' ``(softmax_max, softmax_sum)`` ``[Tq, N, 8]`` (each query row is in at most one call; rows in
    none hold zeros) and their packed dropout keep bits (uint8, concatenated; empty without dropout),
    what :func:`_attention_backward` needs; None on the softcap path.
    """
    window = window_pair(op, window_size, causal)
    scale = float(softmax_scale) if softmax_scale is not None else q.shape[-1] ** -0.5
    dropout = _dropout(dropout_p, draw_seed() if seed is None and dropout_p > 0 else seed)
    stats = None
    if softcap > 0:
        out, lse = _dense_attention(q, k, v, seq_q, seq_k, scale=scale, softcap=float(softcap), window=window,
                                    alibi_slopes=alibi_slopes, dropout=dropout)
    else:
        out = q.new_zeros(q.shape)
        lse = torch.full((q.shape[0], q.shape[1]), -math.inf, dtype=torch.float32, device=q.device)
        mx = torch.zeros((q.shape[0], q.shape[1], 8), dtype=torch.float32, device=q.device)
        sm = torch.zeros_like(mx)
        calls = _block_calls(q, k, seq_q, seq_k, window, alibi_slopes, dropout)
        for call in calls:
            o, smax, ssum = call.forward(q, k, v, scale)
            call_lse = smax[..., 0] + torch.log(ssum[..., 0])
            if call.q_rows is None:
                out, lse, mx, sm = o, call_lse, smax, ssum
            else:
                out, lse, mx, sm = (x.index_copy(0, call.q_rows, y)
                                    for x, y in ((out, o), (lse, call_lse), (mx, smax), (sm, ssum)))
        masks = [c.kwargs["drop_mask"] for c in calls if "drop_mask" in c.kwargs]
        stats = (mx, sm, torch.cat(masks) if masks else torch.zeros(0, dtype=torch.uint8, device=q.device))
    s_dmask = None
    if return_probs and dropout is not None:
        s_dmask = _s_dmask(q.detach(), k.detach(), seq_q, seq_k, max_q, max_k, scale=scale,
                           softcap=max(float(softcap), 0.0), window=window, alibi_slopes=alibi_slopes,
                           dropout=dropout)
    return out, lse, s_dmask, stats


def add_block_grads(calls, q, k, v, dout, out, mx, sm, scale, dq, dk, dv):
    """Add each :class:`BlockCall`'s (dq, dk, dv) to the float32 accumulators ``dq`` / ``dk`` / ``dv``
    (shapes of q / k / v) at the call's rows; ``mx`` / ``sm`` the final statistics of the query rows."""
    for call in calls:
        grads = call.backward(q, k, v, dout, out, mx, sm, scale)
        for acc, g, rows in zip((dq, dk, dv), grads, (call.q_rows, call.k_rows, call.k_rows)):
            if rows is None:
                acc += g
            else:
                acc.index_add_(0, rows, g.to(acc.dtype))


class _AutogradInKernel:
    """Custom-op kernels run below the autograd dispatch keys; the softcap backward differentiates its
    recomputation, so inside this block those keys are dispatched again (and grad mode is on)."""

    def __enter__(self):
        C = torch._C
        exclude = C._dispatch_tls_local_exclude_set()
        for key in (C.DispatchKey.AutogradFunctionality, C.DispatchKey.AutogradOther,
                    C.DispatchKey.AutogradNestedTensor, C.DispatchKey.ADInplaceOrView):
            exclude = exclude.remove(key)
        self._guards = (C._ForceDispatchKeyGuard(C._dispatch_tls_local_include_set(), exclude), torch.enable_grad())
        for g in self._guards:
            g.__enter__()

    def __exit__(self, *exc):
        for g in reversed(self._guards):
            g.__exit__(*exc)


def _attention_backward(dout, q, k, v, out, stats, seq_q, seq_k, *, scale, window, softcap, alibi_slopes, dropout):
    """(dq, dk, dv) of :func:`_attention` (lse not differentiated): the same block plan, each call's FA
    grad op given the saved ``stats`` (statistics and keep bits); the softcap path differentiates its
    recomputation."""
    if softcap > 0:
        with _AutogradInKernel():
            leaves = [t.detach().requires_grad_() for t in (q, k, v)]
            o, _ = _dense_attention(*leaves, seq_q, seq_k, scale=scale, softcap=softcap, window=window,
                                    alibi_slopes=alibi_slopes, dropout=dropout)
            return torch.autograd.grad(o, leaves, dout, allow_unused=True, materialize_grads=True)
    dq, dk, dv = (torch.zeros(t.shape, dtype=torch.float32, device=t.device) for t in (q, k, v))
    mx, sm, drop_masks = stats
    calls = _block_calls(q, k, seq_q, seq_k, window, alibi_slopes, dropout, drop_masks if dropout else None)
    add_block_grads(calls, q, k, v, dout, out, mx, sm, scale, dq, dk, dv)
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


# Argument names as each public function spells them (errors raised inside the ops name the caller's).
_VARLEN_NAMES = dict(q="q", k="k", v="v", cu_q="cu_seqlens_q", cu_k="cu_seqlens_k", max_q="max_seqlen_q",
                     max_k="max_seqlen_k")
_CALLER_NAMES = {
    "flash_attn_varlen_func": _VARLEN_NAMES,
    "flash_attn_varlen_kvpacked_func": dict(_VARLEN_NAMES, k="kv", v="kv"),
    "flash_attn_varlen_qkvpacked_func": dict(q="qkv", k="qkv", v="qkv", cu_q="cu_seqlens", cu_k="cu_seqlens",
                                             max_q="max_seqlen", max_k="max_seqlen"),
    "flash_attn_func": _VARLEN_NAMES,
    "flash_attn_kvpacked_func": dict(_VARLEN_NAMES, k="kv", v="kv"),
    "flash_attn_qkvpacked_func": dict(_VARLEN_NAMES, q="qkv", k="qkv", v="qkv"),
}


def _host_lengths(a: dict):
    """The host checks of the varlen op's lengths (values known): (seq_q, seq_k, key rows of the pages or None)."""
    op, names = a["caller"], _CALLER_NAMES[a["caller"]]
    q, k, block_table = a["q"], a["k"], a["block_table"]
    cu_q = V.cu_seqlens_list(op, names["cu_q"], a["cu_seqlens_q"])
    cu_k = V.cu_seqlens_list(op, names["cu_k"], a["cu_seqlens_k"])
    seq_q = [y - x for x, y in zip(cu_q, cu_q[1:])]
    seq_k = [y - x for x, y in zip(cu_k, cu_k[1:])]
    if cu_q[-1] > q.shape[0]:
        raise V.value_error(op, names["cu_q"], f"a total length <= the {q.shape[0]} rows of {names['q']}", cu_q[-1])
    if block_table is None and cu_k[-1] > k.shape[0]:
        raise V.value_error(op, names["cu_k"], f"a total length <= the {k.shape[0]} rows of {names['k']}", cu_k[-1])
    if "max_seqlen_q" in a:  # the forward op (the backward op repeats the checks it needs)
        _check_max(op, names["max_q"], a["max_seqlen_q"], seq_q)
        _check_max(op, names["max_k"], a["max_seqlen_k"], seq_k)
    rows = None
    if block_table is not None:
        rows = _page_rows(op, block_table, k.shape[0], k.shape[1], [0] * len(seq_k), seq_k, names["cu_k"])
    return seq_q, seq_k, rows


def _gather_pages(k, v, rows):
    return (k, v) if rows is None else (k.flatten(0, 1).index_select(0, rows), v.flatten(0, 1).index_select(0, rows))


def _varlen(op, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale,
            causal, window_size, softcap, alibi_slopes, return_attn_probs, block_table=None):
    """flash_attn_varlen_func and its packed forms (``op``: the caller, whose argument names the errors use): the checks
    that need no length values, then ``ascend_attn::flash_attn_varlen_forward``."""
    paged = block_table is not None
    names = _CALLER_NAMES[op]
    _check_tensor(op, names["q"], q, 3, "(total_q, nheads, headdim)")
    if paged:
        _check_tensor(op, names["k"], k, 4, "(num_blocks, page_block_size, nheads_k, headdim) with block_table")
        _check_tensor(op, names["v"], v, 4, "(num_blocks, page_block_size, nheads_k, headdim) with block_table")
    else:
        _check_tensor(op, names["k"], k, 3, "(total_k, nheads_k, headdim)")
        _check_tensor(op, names["v"], v, 3, "(total_k, nheads_k, headdim)")
    _check_same(op, names, q, k, v)
    _check_scalars(op, dropout_p, softmax_scale, softcap)
    left, right = window_pair(op, window_size, causal)
    cu = []
    for name, x in ((names["cu_q"], cu_seqlens_q), (names["cu_k"], cu_seqlens_k)):
        if isinstance(x, torch.Tensor) and (x.dim() != 1 or x.dtype.is_floating_point or x.dtype == torch.bool):
            raise V.type_error(op, name, "a 1-D integer tensor (batch_size + 1,)",
                               f"{V.dtype_name(x.dtype)} tensor of shape {V.quote(tuple(x.shape))}")
        cu.append(lengths_tensor(op, name, x))
    if cu[0].shape[0] != cu[1].shape[0]:
        raise V.value_error(op, names["cu_k"], f"batch_size + 1 = {cu[0].shape[0]} entries like {names['cu_q']}",
                            f"{cu[1].shape[0]} entries")
    limits = []
    for name, limit in ((names["max_q"], max_seqlen_q), (names["max_k"], max_seqlen_k)):
        if isinstance(limit, bool) or not V._is_integer(limit):
            raise V.type_error(op, name, "an int", type(limit).__name__)
        limits.append(limit if isinstance(limit, torch.SymInt) else int(limit))  # numpy ints too
    alibi = check_alibi(op, alibi_slopes, q.shape[1], cu[0].shape[0] - 1, q.device)
    scale = float(softmax_scale) if softmax_scale is not None else q.shape[-1] ** -0.5
    seed = torch.randint(0, 2 ** 62, (1,)) if dropout_p > 0 else None  # the draws of draw_seed()
    out, lse, _, _, _, s_dmask = flash_attn_varlen_forward_op(
        q, k, v, cu[0], cu[1], *limits, float(dropout_p), scale, left, right, float(softcap),
        alibi, seed, block_table, bool(return_attn_probs), op)
    if return_attn_probs:
        return out, lse.transpose(0, 1).contiguous(), s_dmask if dropout_p > 0 else None
    return out


def _batched(op, q, k, v, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
             return_attn_probs):
    """flash_attn_func and its packed forms on (batch, seqlen, nheads, headdim) tensors: the varlen op on
    equal lengths."""
    names = _CALLER_NAMES[op]
    _check_tensor(op, names["q"], q, 4, "(batch_size, seqlen_q, nheads, headdim)")
    _check_tensor(op, names["k"], k, 4, "(batch_size, seqlen_k, nheads_k, headdim)")
    _check_tensor(op, names["v"], v, 4, "(batch_size, seqlen_k, nheads_k, headdim)")
    _check_same(op, names, q, k, v)
    batch, sq, n, d = q.shape
    if k.shape[0] != batch:
        raise V.value_error(op, names["k"], f"the batch size of {names['q']} ({batch})", k.shape[0])
    sk = k.shape[1]
    steps = torch.arange(batch + 1, dtype=torch.int64)
    res = _varlen(op, q.reshape(batch * sq, n, d), k.reshape(batch * sk, *k.shape[2:]),
                  v.reshape(batch * sk, *v.shape[2:]), steps * sq, steps * sk, sq, sk, dropout_p, softmax_scale,
                  causal, window_size, softcap, alibi_slopes, return_attn_probs)
    if return_attn_probs:
        out, lse, s_dmask = res
        return out.view(batch, sq, n, d), lse.view(n, batch, sq).transpose(0, 1).contiguous(), s_dmask
    return res.view(batch, sq, n, d)


def _page_rows(op, block_table, num_blocks, page, starts, ends, length_name):
    """Rows of the flattened pages (num_blocks * page) holding positions [starts[b], ends[b]) of
    each sequence, after checking block_table (RuntimeError if the table is too short)."""
    if not isinstance(block_table, torch.Tensor) or block_table.dim() != 2 or block_table.dtype.is_floating_point:
        raise V.type_error(op, "block_table", "a 2-D integer tensor (batch_size, max_num_blocks_per_seq)",
                           repr(block_table) if not isinstance(block_table, torch.Tensor)
                           else f"{V.dtype_name(block_table.dtype)} tensor of shape {V.quote(tuple(block_table.shape))}")
    if block_table.shape[0] != len(ends):
        raise V.value_error(op, "block_table", f"batch_size = {len(ends)} rows", block_table.shape[0])
    capacity = block_table.shape[1] * page
    for b, end in enumerate(ends):
        if end > capacity:
            raise RuntimeError(f"{op}: block_table only supports sequences of up to max_num_blocks_per_seq * "
                               f"page_block_size = {block_table.shape[1]} * {page} = {capacity} tokens, but "
                               f"sequence {b} needs {end} (from {length_name})")
    table = block_table.detach().to("cpu", torch.int64)
    used = [table[b, : -(-end // page)] for b, end in enumerate(ends)]
    if used and any(u.numel() for u in used):
        flat = torch.cat(used)
        if int(flat.min()) < 0 or int(flat.max()) >= num_blocks:
            raise V.value_error(op, "block_table", f"block indices in [0, num_blocks = {num_blocks}) for the used "
                                "entries", f"values in [{int(flat.min())}, {int(flat.max())}]")
    pieces = []
    for b, (start, end) in enumerate(zip(starts, ends)):
        pos = torch.arange(start, end)
        pieces.append(table[b, pos // page] * page + pos % page)
    rows = torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.int64)
    return rows.to(block_table.device)


# ----------------------------------------------------------------------------- public functions

def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                           softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                           deterministic=False, return_attn_probs=False, block_table=None):
    """flash-attn's varlen attention. q ``(total_q, nheads, headdim)``, k/v ``(total_k, nheads_k,
    headdim)`` (or pages ``(num_blocks, page_block_size, nheads_k, headdim)`` with ``block_table
    (batch_size, max_num_blocks_per_seq)``, forward only); ``cu_seqlens_*`` ``(batch_size + 1,)``
    with a leading 0. ``window_size`` (left, right) tuple, list or tensor; ``softcap > 0`` caps the
    scaled scores; ``alibi_slopes`` fp32 ``(nheads,)`` or ``(batch_size, nheads)``.

    Returns out ``(total_q, nheads, headdim)``, or with ``return_attn_probs``
    ``(out, softmax_lse (nheads, total_q), S_dmask)``: ``S_dmask`` ``(batch_size, nheads,
    round128(max_seqlen_q), round128(max_seqlen_k))`` softmax probabilities, negative where dropped,
    when ``dropout_p > 0``, else None. ``deterministic`` has no effect (always deterministic).
    """
    return _varlen("flash_attn_varlen_func", q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                   dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes, return_attn_probs, block_table)


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                    alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """flash-attn's batched attention. q ``(batch_size, seqlen_q, nheads, headdim)``, k/v
    ``(batch_size, seqlen_k, nheads_k, headdim)``. Returns out ``(batch_size, seqlen_q, nheads,
    headdim)``, or ``(out, softmax_lse (batch_size, nheads, seqlen_q), S_dmask)`` with
    ``return_attn_probs`` (S_dmask as in :func:`flash_attn_varlen_func`)."""
    return _batched("flash_attn_func", q, k, v, dropout_p, softmax_scale, causal, window_size, softcap,
                    alibi_slopes, return_attn_probs)


def _unpack(op, name, packed, rank, count, form):
    """Views of the ``count`` tensors stacked at dim ``rank - 3`` of a packed tensor."""
    _check_tensor(op, name, packed, rank, form)
    dim = rank - 3
    if packed.shape[dim] != count:
        raise V.value_error(op, name, f"{count} stacked tensors at dim {dim} {form}",
                            f"shape {V.quote(tuple(packed.shape))}")
    return packed.unbind(dim)


def flash_attn_qkvpacked_func(qkv, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                              softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """:func:`flash_attn_func` on qkv ``(batch_size, seqlen, 3, nheads, headdim)``."""
    op = "flash_attn_qkvpacked_func"
    q, k, v = _unpack(op, "qkv", qkv, 5, 3, "(batch_size, seqlen, 3, nheads, headdim)")
    return _batched(op, q, k, v, dropout_p, softmax_scale, causal, window_size,
                    softcap, alibi_slopes, return_attn_probs)


def flash_attn_kvpacked_func(q, kv, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                             softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """:func:`flash_attn_func` with kv ``(batch_size, seqlen_k, 2, nheads_k, headdim)``."""
    op = "flash_attn_kvpacked_func"
    k, v = _unpack(op, "kv", kv, 5, 2, "(batch_size, seqlen_k, 2, nheads_k, headdim)")
    return _batched(op, q, k, v, dropout_p, softmax_scale, causal, window_size,
                    softcap, alibi_slopes, return_attn_probs)


def flash_attn_varlen_qkvpacked_func(qkv, cu_seqlens, max_seqlen, dropout_p=0.0, softmax_scale=None, causal=False,
                                     window_size=(-1, -1), softcap=0.0, alibi_slopes=None, deterministic=False,
                                     return_attn_probs=False):
    """:func:`flash_attn_varlen_func` on qkv ``(total, 3, nheads, headdim)`` with one
    ``cu_seqlens`` ``(batch_size + 1,)`` and ``max_seqlen``."""
    op = "flash_attn_varlen_qkvpacked_func"
    q, k, v = _unpack(op, "qkv", qkv, 4, 3, "(total, 3, nheads, headdim)")
    return _varlen(op, q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, dropout_p, softmax_scale, causal,
                   window_size, softcap, alibi_slopes, return_attn_probs)


def flash_attn_varlen_kvpacked_func(q, kv, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                                    softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                                    alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """:func:`flash_attn_varlen_func` with kv ``(total_k, 2, nheads_k, headdim)``."""
    op = "flash_attn_varlen_kvpacked_func"
    k, v = _unpack(op, "kv", kv, 4, 2, "(total_k, 2, nheads_k, headdim)")
    return _varlen(op, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                   dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes, return_attn_probs)


def _rotate(x, cos, sin, interleaved):
    """Rotary embedding on the leading ``2 * cos.shape[-1]`` features. x ``(..., S, N, D)``,
    cos/sin ``(..., S, rotary_dim / 2)`` already gathered at each token's position."""
    rd = 2 * cos.shape[-1]
    rot, rest = x[..., :rd].float(), x[..., rd:]
    cos, sin = cos.float().unsqueeze(-2), sin.float().unsqueeze(-2)
    if interleaved:  # pairs (2p, 2p+1)
        a, b = rot[..., 0::2], rot[..., 1::2]
        out = torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)
    else:  # GPT-NeoX: pairs (p, p + rd/2)
        a, b = rot[..., : rd // 2], rot[..., rd // 2:]
        out = torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)
    return torch.cat([out.to(x.dtype), rest], dim=-1)


def _per_batch(op, name, value, batch, default):
    """(batch,) host ints of an int / tensor / list argument (``default`` when None)."""
    if value is None:
        return [default] * batch
    if V._is_integer(value) and not isinstance(value, bool):
        return [int(value)] * batch
    values = V.int_list(op, name, value)
    if len(values) != batch:
        raise V.value_error(op, name, f"an int or (batch_size,) = {batch} values", f"{len(values)} values")
    return values


def _kvcache_metadata(q, k_cache, v_cache, k, v, softmax_scale, causal, window_size, softcap, alibi_slopes,
                      block_table):
    """The checks of flash_attn_with_kvcache that read no tensor data (shapes, dtypes, scalars): run by
    the public function, the op's real kernel and its fake kernel alike."""
    op = "flash_attn_with_kvcache"
    paged = block_table is not None
    _check_tensor(op, "q", q, 4, "(batch_size, seqlen_q, nheads, headdim)")
    form = "(num_blocks, page_block_size, nheads_k, headdim)" if paged else "(batch_size_cache, seqlen_cache, " \
                                                                             "nheads_k, headdim)"
    _check_tensor(op, "k_cache", k_cache, 4, form)
    _check_tensor(op, "v_cache", v_cache, 4, form)
    _check_same(op, dict(q="q", k="k_cache", v="v_cache"), q, k_cache, v_cache)
    batch, sq, n, d = q.shape
    if (k is None) != (v is None):
        raise V.value_error(op, "v" if k is not None else "k", "a tensor whenever the other of k / v is given", "None")
    s_new = 0
    if k is not None:
        for name, t in (("k", k), ("v", v)):
            _check_tensor(op, name, t, 4, "(batch_size, seqlen_new, nheads_k, headdim)")
        _check_same(op, dict(q="q", k="k", v="v"), q, k, v)
        if k.shape[0] != batch or k.shape[2:] != k_cache.shape[2:]:
            raise V.value_error(op, "k", f"shape (batch_size, seqlen_new, nheads_k, headdim) = [{batch}, seqlen_new, "
                                f"{k_cache.shape[2]}, {d}]", V.quote(tuple(k.shape)))
        s_new = k.shape[1]
    _check_scalars(op, 0.0, softmax_scale, softcap)
    left, right = window_pair(op, window_size, causal)
    alibi = check_alibi(op, alibi_slopes, n, batch, q.device)
    return paged, (batch, sq, n, d), s_new, (left, right), alibi


def _with_kvcache(q, k_cache, v_cache, k, v, rotary_cos, rotary_sin, cache_seqlens, cache_batch_idx, cache_leftpad,
                  block_table, softmax_scale, causal, window_size, softcap, rotary_interleaved, alibi_slopes, num_splits,
                  return_softmax_lse):
    """flash_attn_with_kvcache on host values (the real kernel of ``ascend_attn::flash_attn_with_kvcache``):
    every check, then the cache writes and the attention."""
    op = "flash_attn_with_kvcache"
    paged, (batch, sq, n, d), s_new, (left, right), alibi = _kvcache_metadata(
        q, k_cache, v_cache, k, v, softmax_scale, causal, window_size, softcap, alibi_slopes, block_table)
    page = k_cache.shape[1] if paged else None
    if paged and cache_batch_idx is not None:
        raise V.value_error(op, "cache_batch_idx", "None with a paged cache (block_table)", "a tensor")
    if paged and cache_leftpad is not None:
        raise V.value_error(op, "cache_leftpad", "None with a paged cache (block_table)", "a tensor")
    if cache_seqlens is None and k is not None:
        raise V.value_error(op, "cache_seqlens", "the cache lengths whenever new k / v are appended", "None")
    full = (block_table.shape[1] * page if paged and isinstance(block_table, torch.Tensor) and block_table.dim() == 2
            else k_cache.shape[1])
    base = _per_batch(op, "cache_seqlens", cache_seqlens, batch, full)
    if any(x < 0 for x in base):
        raise V.value_error(op, "cache_seqlens", "values >= 0", V.quote(base))
    idx = _per_batch(op, "cache_batch_idx", cache_batch_idx, batch, None)
    if cache_batch_idx is None:
        idx = list(range(batch))
    elif any(not 0 <= i < k_cache.shape[0] for i in idx):
        raise V.value_error(op, "cache_batch_idx", f"indices in [0, batch_size_cache = {k_cache.shape[0]})",
                            V.quote(idx))
    pad = _per_batch(op, "cache_leftpad", cache_leftpad, batch, 0)
    if any(not 0 <= p <= b for p, b in zip(pad, base)):
        raise V.value_error(op, "cache_leftpad", f"values in [0, cache_seqlens[b]] (cache_seqlens = {V.quote(base)})",
                            V.quote(pad))
    lengths = [b + s_new for b in base]
    if paged:
        rows = _page_rows(op, block_table, k_cache.shape[0], page, pad, lengths, "cache_seqlens plus the new k")
    elif max(lengths, default=0) > k_cache.shape[1]:
        raise V.value_error(op, "cache_seqlens", f"cache_seqlens[b] + seqlen_new <= seqlen_cache = {k_cache.shape[1]}",
                            f"cache_seqlens = {V.quote(base)}, seqlen_new = {s_new}")
    if rotary_cos is not None or rotary_sin is not None:
        for name, t in (("rotary_cos", rotary_cos), ("rotary_sin", rotary_sin)):
            if not isinstance(t, torch.Tensor) or t.dim() != 2 or 2 * t.shape[1] > d:
                raise V.value_error(op, name, f"a (seqlen_ro, rotary_dim / 2) tensor with rotary_dim <= headdim = {d}",
                                    V.quote(tuple(t.shape)) if isinstance(t, torch.Tensor) else repr(t))
        if rotary_sin.shape != rotary_cos.shape:
            raise V.value_error(op, "rotary_sin", f"the shape of rotary_cos {V.quote(tuple(rotary_cos.shape))}",
                                V.quote(tuple(rotary_sin.shape)))
        need = max(b + max(sq if (causal or left != -1 or right != -1) else 1, s_new) for b in base) if base else 0
        if need > rotary_cos.shape[0]:
            raise V.value_error(op, "rotary_cos", f"seqlen_ro >= the largest rotated position + 1 ({need})",
                                rotary_cos.shape[0])
    # ---- everything checked: from here on the caches may be written
    if rotary_cos is not None:
        windowed = causal or left != -1 or right != -1
        pos_q = torch.stack([torch.arange(b, b + sq) if windowed else torch.full((sq,), b) for b in base]).to(q.device)
        q = _rotate(q, rotary_cos[pos_q], rotary_sin[pos_q], rotary_interleaved)
        if k is not None:
            pos_k = torch.stack([torch.arange(b, b + s_new) for b in base]).to(q.device)
            k = _rotate(k, rotary_cos[pos_k], rotary_sin[pos_k], rotary_interleaved)
    if paged:  # flattened page rows of positions [pad, L) per sequence, the new ones last
        counts = [L - p for L, p in zip(lengths, pad)]
        new_rows = torch.cat([rows[sum(counts[:b]) + counts[b] - s_new: sum(counts[:b + 1])] for b in range(batch)])
    else:
        width = k_cache.shape[1]

        def cache_rows(starts, ends):  # flattened (batch_cache * seqlen_cache) rows
            pieces = [torch.arange(a, e, device=q.device) + i * width for i, a, e in zip(idx, starts, ends)]
            return torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.int64, device=q.device)

        new_rows = cache_rows(base, lengths)
        rows = cache_rows(pad, lengths)
    if k is not None:  # in-place append (flash-attn mutates the caches)
        k_cache.view(-1, *k_cache.shape[2:]).index_copy_(0, new_rows, k.reshape(-1, *k.shape[2:]))
        v_cache.view(-1, *v_cache.shape[2:]).index_copy_(0, new_rows, v.reshape(-1, *v.shape[2:]))
    ifa_pages = not paged or (page % 16 == 0 and page <= 512)  # IncreFlashAttention's page limits
    use_ifa = (sq == 1 and alibi is None and softcap <= 0 and not return_softmax_lse and ifa_pages
               and q.dtype in (torch.float16, torch.bfloat16))
    if use_ifa:
        from .torch_ops import incre_flash_attention
        kw = dict(num_heads=n, num_key_value_heads=k_cache.shape[2], input_layout="BSND",
                  scale_value=softmax_scale if softmax_scale is not None else d ** -0.5, actual_seq_lengths=lengths)
        if paged:
            kv = (k_cache.view(k_cache.shape[0], page, -1), v_cache.view(v_cache.shape[0], page, -1))
            kw.update(block_table=block_table.to(torch.int32), block_size=page)
            width = block_table.shape[1] * page
        elif cache_batch_idx is not None:  # the tensor-list form: views of the selected caches
            kv = ([k_cache[i:i + 1] for i in idx], [v_cache[i:i + 1] for i in idx])
        else:
            kv = (k_cache, v_cache)
        if left != -1 or any(pad):  # masked positions j < max(pad, L - 1 - left)
            j = torch.arange(width, device=q.device)
            first = [max(p, L - 1 - left if left != -1 else 0) for p, L in zip(pad, lengths)]
            kw["atten_mask"] = torch.stack([j < f for f in first]).view(batch, 1, 1, width)
        return incre_flash_attention(q, kv[0], kv[1], **kw)
    # Longer queries, fp32, ALiBi, softcap or LSE: the valid rows gathered into TND (§8.3).
    keys = k_cache.view(-1, *k_cache.shape[2:]).index_select(0, rows)
    values = v_cache.view(-1, *v_cache.shape[2:]).index_select(0, rows)
    out, lse, *_ = _attention(op, q.reshape(batch * sq, n, d), keys, values, [sq] * batch,
                              [L - p for L, p in zip(lengths, pad)], dropout_p=0.0, softmax_scale=softmax_scale,
                              causal=causal, window_size=window_size, softcap=softcap, alibi_slopes=alibi)
    out = out.view(batch, sq, n, d)
    if return_softmax_lse:
        return out, lse.view(batch, sq, n).permute(0, 2, 1).contiguous()
    return out


# ----------------------------------------------------------------------------- flash_attn_with_kvcache op

# flash_attn_with_kvcache reads cache_seqlens (and cache_batch_idx / cache_leftpad) on the host to place
# the new rows and the valid key ranges: that work is the real kernel of one custom op, so a compiled
# decode step takes the lengths as data (no recompilation as they grow); its fake kernel runs the checks
# of metadata only. Output shapes depend on q alone.
from .torch_ops.op_args import OpArgs, lengths_tensor  # noqa: E402  (registers the package's ops)

KVCACHE = OpArgs("flash_attn_with_kvcache", (
    "(Tensor q, Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor? k, Tensor? v, Tensor? rotary_cos, "
    "Tensor? rotary_sin, Tensor? cache_seqlens, Tensor? cache_batch_idx, Tensor? cache_leftpad, "
    "Tensor? block_table, float? softmax_scale, bool causal, int[] window_size, float softcap, "
    "bool rotary_interleaved, Tensor? alibi_slopes, int num_splits, bool return_softmax_lse) -> (Tensor, Tensor)"))
_KVCACHE_METADATA = ("q", "k_cache", "v_cache", "k", "v", "softmax_scale", "causal", "window_size", "softcap",
                     "alibi_slopes", "block_table")


def _kvcache_kernel(a: dict):
    out = _with_kvcache(**a)
    return out if a["return_softmax_lse"] else (out, a["q"].new_empty((0,), dtype=torch.float32))


def _kvcache_fake(a: dict):
    _, (batch, sq, n, _), *_ = _kvcache_metadata(*(a[name] for name in _KVCACHE_METADATA))
    lse_shape = (batch, n, sq) if a["return_softmax_lse"] else (0,)
    return a["q"].new_empty(a["q"].shape), a["q"].new_empty(lse_shape, dtype=torch.float32)


flash_attn_with_kvcache_op = KVCACHE.define(_kvcache_kernel, mutates_args=("k_cache", "v_cache"))
flash_attn_with_kvcache_op.register_fake(KVCACHE.binding(_kvcache_fake))


def _kvcache_prepare(a: dict) -> dict:
    """The metadata checks (in the caller's terms, before the op), host integer arguments as tensors."""
    op = "flash_attn_with_kvcache"
    _kvcache_metadata(*(a[name] for name in _KVCACHE_METADATA))
    for name in ("cache_seqlens", "cache_batch_idx", "cache_leftpad"):
        x = a[name]
        if isinstance(x, torch.Tensor) and name != "cache_seqlens":
            continue  # read by the kernel where it lives
        if V._is_integer(x) and not isinstance(x, bool):  # one value for every sequence
            x = [x] * a["q"].shape[0]
        a[name] = lengths_tensor(op, name, x)
    a["window_size"] = list(window_pair(op, a["window_size"], False))
    a["softcap"] = float(a["softcap"])
    if a["softmax_scale"] is not None:
        a["softmax_scale"] = float(a["softmax_scale"])
    return a


def _kvcache_finish(a: dict, output):
    return output if a["return_softmax_lse"] else output[0]


@KVCACHE.public(_kvcache_prepare, _kvcache_finish)
def flash_attn_with_kvcache(q, k_cache, v_cache, k=None, v=None, rotary_cos=None, rotary_sin=None,
                            cache_seqlens=None, cache_batch_idx=None, cache_leftpad=None, block_table=None,
                            softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                            rotary_interleaved=True, alibi_slopes=None, num_splits=0, return_softmax_lse=False):
    """flash-attn's decoding attention with an in-place KV cache update (§8.3). Forward only.

    q ``(batch_size, seqlen_q, nheads, headdim)``; caches ``(batch_size_cache, seqlen_cache,
    nheads_k, headdim)`` or pages ``(num_blocks, page_block_size, nheads_k, headdim)`` with
    ``block_table (batch_size, max_num_blocks_per_seq)``; new ``k``/``v`` ``(batch_size,
    seqlen_new, nheads_k, headdim)`` are written at ``cache_seqlens`` first (rotary applied to q and
    the new k when ``rotary_cos``/``rotary_sin`` ``(seqlen_ro, rotary_dim / 2)`` are given).
    ``cache_leftpad (batch_size,)``: the valid keys of sequence b start at ``cache_leftpad[b]``.
    Every argument is checked before the caches are written. Returns out ``(batch_size, seqlen_q,
    nheads, headdim)``, and ``softmax_lse (batch_size, nheads, seqlen_q)`` with
    ``return_softmax_lse``. Decode steps (seqlen_q 1, fp16/bf16, no ALiBi/softcap/LSE) run on
    IncreFlashAttention, everything else on the varlen op. ``cache_seqlens``: an int, a list or a
    ``(batch_size,)`` integer tensor (a device tensor is read on the host once); under torch.compile
    the lengths are data: a decode loop with growing lengths compiles once for a tensor.
    """


# ----------------------------------------------------------------------------- flash_attn_varlen ops

# The varlen core plans its FA op calls from the cu_seqlens values on the host: that planning is the
# real kernel of a forward op and of its backward op, so a compiled training step takes cu_seqlens as
# data (one graph for every length list of the same batch count). The fake kernels return shapes only
# (output shapes depend on q, k and max_seqlen_*, never on length values). The dropout seed is drawn
# by the public function and passed in (the backward regenerates the same keep bits from it).
VARLEN_FWD = OpArgs("flash_attn_varlen_forward", (
    "(Tensor q, Tensor k, Tensor v, Tensor cu_seqlens_q, Tensor cu_seqlens_k, SymInt max_seqlen_q, "
    "SymInt max_seqlen_k, float dropout_p, float softmax_scale, int window_left, int window_right, float softcap, "
    "Tensor? alibi_slopes, Tensor? seed, Tensor? block_table, bool return_probs, str caller) "
    "-> (Tensor out, Tensor softmax_lse, Tensor softmax_max, Tensor softmax_sum, Tensor drop_mask, Tensor s_dmask)"),
    lengths=("cu_seqlens_q", "cu_seqlens_k"))
VARLEN_BWD = OpArgs("flash_attn_varlen_backward", (
    "(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor out, Tensor softmax_max, Tensor softmax_sum, Tensor drop_mask, "
    "Tensor cu_seqlens_q, Tensor cu_seqlens_k, float dropout_p, float softmax_scale, int window_left, "
    "int window_right, float softcap, Tensor? alibi_slopes, Tensor? seed, Tensor? block_table, str caller) "
    "-> (Tensor dq, Tensor dk, Tensor dv)"), lengths=("cu_seqlens_q", "cu_seqlens_k"))


def _varlen_forward_kernel(a: dict):
    """Host values: the length checks, the pages gathered, the planned FA op calls (§8.2)."""
    seq_q, seq_k, rows = _host_lengths(a)
    k, v = _gather_pages(a["k"], a["v"], rows)
    q = a["q"]
    out, lse, s_dmask, stats = _attention(
        a["caller"], q, k, v, seq_q, seq_k, dropout_p=a["dropout_p"], softmax_scale=a["softmax_scale"], causal=False,
        window_size=(a["window_left"], a["window_right"]), softcap=a["softcap"], alibi_slopes=a["alibi_slopes"],
        seed=a["seed"], return_probs=a["return_probs"], max_q=a["max_seqlen_q"], max_k=a["max_seqlen_k"])
    if stats is None:
        stats = (q.new_empty((0,), dtype=torch.float32), q.new_empty((0,), dtype=torch.float32),
                 q.new_empty((0,), dtype=torch.uint8))
    return (out, lse) + tuple(stats) + (s_dmask if s_dmask is not None else q.new_empty((0,)),)


def _varlen_forward_fake(a: dict):
    q = a["q"]
    stats = (q.shape[0], q.shape[1], 8) if a["softcap"] <= 0 else (0,)
    rup = lambda x: -(-x // S_DMASK_ROUND) * S_DMASK_ROUND  # noqa: E731
    s_dmask = ((a["cu_seqlens_q"].shape[0] - 1, q.shape[1], rup(a["max_seqlen_q"]), rup(a["max_seqlen_k"]))
               if a["return_probs"] and a["dropout_p"] > 0 else (0,))
    # the keep bits of the planned calls: a size only the lengths' values give
    drop_bytes = torch.library.get_ctx().new_dynamic_size() if a["dropout_p"] > 0 and a["softcap"] <= 0 else 0
    f32 = torch.float32
    return (q.new_empty(q.shape), q.new_empty(q.shape[:2], dtype=f32), q.new_empty(stats, dtype=f32),
            q.new_empty(stats, dtype=f32), q.new_empty((drop_bytes,), dtype=torch.uint8), q.new_empty(s_dmask))


def _varlen_backward_kernel(a: dict):
    seq_q, seq_k, rows = _host_lengths(a)
    k, v = _gather_pages(a["k"], a["v"], rows)
    dq, dk, dv = _attention_backward(
        a["dout"].contiguous(), a["q"], k, v, a["out"], (a["softmax_max"], a["softmax_sum"], a["drop_mask"]), seq_q,
        seq_k,
        scale=a["softmax_scale"], window=(a["window_left"], a["window_right"]), softcap=a["softcap"],
        alibi_slopes=a["alibi_slopes"], dropout=_dropout(a["dropout_p"], a["seed"]))
    if rows is not None:  # back onto the pages
        dk, dv = (t.new_zeros((a["k"].shape[0] * a["k"].shape[1],) + tuple(t.shape[1:])).index_add_(0, rows, t)
                  .view(a["k"].shape) for t in (dk, dv))
    return dq, dk, dv


def _varlen_backward_fake(a: dict):
    return tuple(a[n].new_empty(a[n].shape) for n in ("q", "k", "v"))


flash_attn_varlen_forward_op = VARLEN_FWD.define(_varlen_forward_kernel)
flash_attn_varlen_forward_op.register_fake(VARLEN_FWD.binding(_varlen_forward_fake))
flash_attn_varlen_backward_op = VARLEN_BWD.define(_varlen_backward_kernel)
flash_attn_varlen_backward_op.register_fake(VARLEN_BWD.binding(_varlen_backward_fake))

# forward arguments the backward op takes again: tensors (saved) / plain values (on ctx)
_VARLEN_SAVED = ("q", "k", "v", "cu_seqlens_q", "cu_seqlens_k", "alibi_slopes", "seed", "block_table")
_VARLEN_PLAIN = tuple(n for n in VARLEN_BWD.names if n in VARLEN_FWD.names and n not in _VARLEN_SAVED)


def _varlen_setup_context(ctx, inputs, output):
    a = VARLEN_FWD.bind(inputs, {})
    out, lse, mx, sm, drop_mask, s_dmask = output
    ctx.mark_non_differentiable(lse, mx, sm, drop_mask, s_dmask)  # statistics and probabilities, as in flash-attn
    ctx.save_for_backward(out, mx, sm, drop_mask, *(a[n] for n in _VARLEN_SAVED))
    ctx.plain = {n: a[n] for n in _VARLEN_PLAIN}


def _varlen_backward(ctx, dout, *_):
    out, mx, sm, drop_mask, *saved = ctx.saved_tensors
    if dout is None:
        dout = torch.zeros_like(out)
    a = dict(zip(_VARLEN_SAVED, saved), **ctx.plain, dout=dout, out=out, softmax_max=mx, softmax_sum=sm,
             drop_mask=drop_mask)
    dq, dk, dv = flash_attn_varlen_backward_op(*VARLEN_BWD.ordered(a))
    return (dq, dk, dv) + (None,) * (len(VARLEN_FWD.names) - 3)


flash_attn_varlen_forward_op.register_autograd(_varlen_backward, setup_context=_varlen_setup_context)
