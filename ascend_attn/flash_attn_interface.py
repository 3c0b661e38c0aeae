"""flash-attn 2.x compatible API on the Ascend ops (docs/semantics.md §8).

Users migrating from GPUs replace ``from flash_attn import ...`` with
``from ascend_attn import ...``: same names, arguments, defaults and returns.

Mapping (§8.2): ``cu_seqlens`` (leading 0) -> cumulative lengths without the 0; causal is
bottom-right aligned (sparse_mode 3); other windows are a band (sparse_mode 4, pre = left,
next = right); ALiBi is the op's generated ALiBi (pse_type 2) with ``q_start_idx = S2 - S1``;
dropout draws its own keep bits in the op's layout and the backward reuses them. Rows that see
no key at all (``S2 = 0``, or causal/window with more queries than visible keys) are not passed
to the op (CANN rejects them): they are filled here with out 0, LSE -inf and zero gradients.
"""
from __future__ import annotations

import math

import torch

from . import validation as V

INF_TOKENS = 2147483647
FWD = "flash_attn_varlen_func"


def _cu_list(op, name, cu):
    values = V.int_list(op, name, cu)
    if not values or values[0] != 0 or any(a > b for a, b in zip(values, values[1:])):
        raise V.value_error(op, name, "cumulative lengths starting at 0, non-decreasing (e.g. [0, 2, 5])",
                            V.quote(values))
    return values


def _check_window(op, window_size, causal):
    if len(window_size) != 2 or any((not isinstance(w, int)) or w < -1 for w in window_size):
        raise V.value_error(op, "window_size", "a pair of ints >= -1 (-1 = unbounded)", V.quote(tuple(window_size)))
    left, right = window_size
    return left, (0 if causal else right)


def _drop_mask_bits(n_bits: int, keep_prob: float, device) -> torch.Tensor:
    """Bernoulli(keep_prob) keep bits packed LSB-first into uint8 (docs/semantics.md §6)."""
    keep = (torch.rand(-(-n_bits // 8) * 8, device=device) < keep_prob).to(torch.uint8).view(-1, 8)
    weights = (2 ** torch.arange(8, device=device)).to(torch.uint8)
    return (keep * weights).sum(-1, dtype=torch.uint8)


def _varlen(op, q, k, v, seq_q, seq_k, *, dropout_p, softmax_scale, causal, window_size, alibi_slopes):
    """TND attention of packed sequences; returns (out [Tq, N, D], lse [Tq, N] natural log)."""
    from .testing.samples import compressed_mask  # the canonical compressed masks

    n1, d = q.shape[1], q.shape[2]
    if not 0.0 <= dropout_p < 1.0:
        raise V.value_error(op, "dropout_p", "a value in [0, 1)", dropout_p)
    if n1 % k.shape[1]:
        raise V.value_error(op, "k", f"a head count dividing the {n1} query heads", k.shape[1])
    left, right = _check_window(op, window_size, causal)
    if alibi_slopes is not None:
        if alibi_slopes.dtype != torch.float32:
            raise V.type_error(op, "alibi_slopes", "dtype float32", V.dtype_name(alibi_slopes.dtype))
        if tuple(alibi_slopes.shape) not in ((n1,), (len(seq_q), n1)):
            raise V.value_error(op, "alibi_slopes", f"shape [{n1}] or [{len(seq_q)}, {n1}]",
                                V.quote(tuple(alibi_slopes.shape)))
    scale = softmax_scale if softmax_scale is not None else d ** -0.5
    # Leading rows of each sequence that see no key (§8.2): t_b = max(0, S1 - S2 - right).
    dropped = [s1 if s2 == 0 else (0 if right == -1 else min(s1, max(0, s1 - s2 - right)))
               for s1, s2 in zip(seq_q, seq_k)]
    kept_q = [s1 - t for s1, t in zip(seq_q, dropped)]
    # Sequences that take part: some query row sees a key. With ALiBi, group them by the offset
    # between query and key positions (one op call per group, §8.2).
    active = [b for b, n in enumerate(kept_q) if n > 0]
    offsets = {b: seq_k[b] - kept_q[b] for b in active}
    groups = {}
    for b in active:
        groups.setdefault(offsets[b] if alibi_slopes is not None else 0, []).append(b)
    out = q.new_zeros(q.shape)
    lse = torch.full((q.shape[0], n1), -math.inf, dtype=torch.float32, device=q.device)
    q_start = [0]
    k_start = [0]
    for s1, s2 in zip(seq_q, seq_k):
        q_start.append(q_start[-1] + s1)
        k_start.append(k_start[-1] + s2)
    if left == -1 and right == -1:
        mode, mask, pre, nxt = 0, None, INF_TOKENS, INF_TOKENS
    elif left == -1 and right == 0:
        mode, mask, pre, nxt = 3, compressed_mask(3).to(q.device), INF_TOKENS, INF_TOKENS
    else:
        mode, mask = 4, compressed_mask(4).to(q.device)
        pre, nxt = (INF_TOKENS if left == -1 else left), (INF_TOKENS if right == -1 else right)
    for delta, members in groups.items():
        q_rows = torch.cat([torch.arange(q_start[b] + dropped[b], q_start[b + 1], device=q.device) for b in members])
        k_rows = torch.cat([torch.arange(k_start[b], k_start[b + 1], device=q.device) for b in members])
        lens_q = [kept_q[b] for b in members]
        lens_k = [seq_k[b] for b in members]
        kw = dict(scale_value=scale, sparse_mode=mode, atten_mask=mask, pre_tokens=pre, next_tokens=nxt,
                  softmax_out_layout="same_as_input")
        if alibi_slopes is not None:
            slopes = alibi_slopes if alibi_slopes.dim() == 1 else alibi_slopes[torch.tensor(members)]
            kw.update(pse=slopes.contiguous(), pse_type=2, q_start_idx=[delta], kv_start_idx=[0])
        if dropout_p > 0:
            bits = n1 * sum(a * b for a, b in zip(lens_q, lens_k))
            kw.update(drop_mask=_drop_mask_bits(bits, 1.0 - dropout_p, q.device), keep_prob=1.0 - dropout_p)
        whole = len(members) == len(seq_q) and not any(dropped)
        sub = lambda x, rows: x if whole else x.index_select(0, rows)
        from .torch_ops import flash_attention_varlen_score
        o, smax, ssum = flash_attention_varlen_score(
            sub(q, q_rows), sub(k, k_rows), sub(v, k_rows), n1, _cumsum(lens_q), _cumsum(lens_k), **kw)
        group_lse = smax[..., 0] + torch.log(ssum[..., 0])
        if whole:
            out, lse = o, group_lse
        else:
            out = out.index_copy(0, q_rows, o)
            lse = lse.index_copy(0, q_rows, group_lse)
    return out, lse


def _cumsum(lengths):
    total, out = 0, []
    for n in lengths:
        total += n
        out.append(total)
    return out


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                           softmax_scale=None, causal=False, window_size=(-1, -1), alibi_slopes=None,
                           deterministic=False, return_attn_probs=False, block_table=None):
    """flash-attn's varlen attention. q ``(total_q, N, D)``, k/v ``(total_k, Nkv, D)`` (or pages
    ``(num_blocks, page_block_size, Nkv, D)`` with ``block_table (B, max_blocks)``, forward only);
    ``cu_seqlens_*`` ``(B + 1,)`` with a leading 0. Returns out ``(total_q, N, D)``, or
    ``(out, softmax_lse (N, total_q), None)`` with ``return_attn_probs``. ``deterministic`` has
    no effect (the CPU path is always deterministic).
    """
    op = FWD
    cu_q = _cu_list(op, "cu_seqlens_q", cu_seqlens_q)
    cu_k = _cu_list(op, "cu_seqlens_k", cu_seqlens_k)
    if len(cu_q) != len(cu_k):
        raise V.value_error(op, "cu_seqlens_k", f"{len(cu_q)} entries like cu_seqlens_q", len(cu_k))
    seq_q = [b - a for a, b in zip(cu_q, cu_q[1:])]
    seq_k = [b - a for a, b in zip(cu_k, cu_k[1:])]
    for name, limit, lens in (("max_seqlen_q", max_seqlen_q, seq_q), ("max_seqlen_k", max_seqlen_k, seq_k)):
        if lens and limit < max(lens):
            raise V.value_error(op, name, f"a value >= the longest sequence ({max(lens)})", limit)
    if block_table is not None:  # gather the pages of each sequence into TND (§8.2, forward only)
        page = k.shape[1]
        rows = [block_table[b, : -(-n // page)].long() for b, n in enumerate(seq_k)]
        k = torch.cat([k[r].reshape(-1, *k.shape[2:])[:n] for r, n in zip(rows, seq_k)])
        v = torch.cat([v[r].reshape(-1, *v.shape[2:])[:n] for r, n in zip(rows, seq_k)])
    out, lse = _varlen(op, q, k, v, seq_q, seq_k, dropout_p=dropout_p, softmax_scale=softmax_scale, causal=causal,
                       window_size=window_size, alibi_slopes=alibi_slopes)
    if return_attn_probs:
        return out, lse.transpose(0, 1).contiguous(), None
    return out


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                    alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """flash-attn's batched attention. q ``(B, Sq, N, D)``, k/v ``(B, Sk, Nkv, D)``. Returns out
    ``(B, Sq, N, D)``, or ``(out, softmax_lse (B, N, Sq), None)`` with ``return_attn_probs``."""
    batch, sq, n, d = q.shape
    sk = k.shape[1]
    out, lse = _varlen("flash_attn_func", q.reshape(batch * sq, n, d), k.reshape(batch * sk, *k.shape[2:]),
                       v.reshape(batch * sk, *v.shape[2:]), [sq] * batch, [sk] * batch, dropout_p=dropout_p,
                       softmax_scale=softmax_scale, causal=causal, window_size=window_size,
                       alibi_slopes=alibi_slopes)
    out = out.view(batch, sq, n, d)
    if return_attn_probs:
        return out, lse.view(batch, sq, n).permute(0, 2, 1).contiguous(), None
    return out


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


def flash_attn_with_kvcache(q, k_cache, v_cache, k=None, v=None, rotary_cos=None, rotary_sin=None,
                            cache_seqlens=None, cache_batch_idx=None, block_table=None, softmax_scale=None,
                            causal=False, window_size=(-1, -1), rotary_interleaved=True, alibi_slopes=None,
                            num_splits=0):
    """flash-attn's decoding attention with an in-place KV cache update (§8.3). Forward only.

    q ``(B, Sq, N, D)``; caches ``(B_cache, S_cache, Nkv, D)`` or pages
    ``(num_blocks, page_block_size, Nkv, D)`` with ``block_table``; new ``k``/``v``
    ``(B, S_new, Nkv, D)`` are written at ``cache_seqlens`` first (rotary applied to q and the new
    k when ``rotary_cos``/``rotary_sin`` ``(S_ro, rotary_dim / 2)`` are given). Returns out
    ``(B, Sq, N, D)``. Sq == 1 without ALiBi runs IncreFlashAttention, otherwise the varlen op.
    """
    op = "flash_attn_with_kvcache"
    batch, sq, n, d = q.shape
    paged = block_table is not None
    page = k_cache.shape[1] if paged else None
    s_new = 0 if k is None else k.shape[1]
    if cache_seqlens is None:  # the whole cache is valid (§8.3)
        if k is not None:
            raise V.value_error(op, "cache_seqlens", "the cache lengths whenever new k / v are appended", "None")
        base = [block_table.shape[1] * page if paged else k_cache.shape[1]] * batch
    elif isinstance(cache_seqlens, int):
        base = [cache_seqlens] * batch
    else:
        base = V.int_list(op, "cache_seqlens", cache_seqlens)
    idx = list(range(batch)) if cache_batch_idx is None else V.int_list(op, "cache_batch_idx", cache_batch_idx)
    lengths = [b + s_new for b in base]
    left, right = _check_window(op, window_size, causal)

    def position_rows(b, start, count):  # cache rows of positions [start, start+count) of batch b
        if not paged:
            return [(idx[b], p) for p in range(start, start + count)]
        return [(int(block_table[b, p // page]), p % page) for p in range(start, start + count)]

    if rotary_cos is not None:
        pos_q = torch.stack([torch.arange(base[b], base[b] + sq) if (causal or left != -1 or right != -1)
                             else torch.full((sq,), base[b]) for b in range(batch)]).to(q.device)
        q = _rotate(q, rotary_cos[pos_q], rotary_sin[pos_q], rotary_interleaved)
        if k is not None:
            pos_k = torch.stack([torch.arange(base[b], base[b] + s_new) for b in range(batch)]).to(q.device)
            k = _rotate(k, rotary_cos[pos_k], rotary_sin[pos_k], rotary_interleaved)
    if k is not None:  # in-place append (flash-attn mutates the caches)
        for b in range(batch):
            for t, (row, p) in enumerate(position_rows(b, base[b], s_new)):
                k_cache[row, p] = k[b, t]
                v_cache[row, p] = v[b, t]
    ifa_pages = not paged or (page % 16 == 0 and page <= 512)  # IncreFlashAttention's page limits
    use_ifa = sq == 1 and alibi_slopes is None and q.dtype in (torch.float16, torch.bfloat16) and ifa_pages
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
            width = k_cache.shape[1]
        else:
            kv, width = (k_cache, v_cache), k_cache.shape[1]
        if left != -1:  # left window: mask positions j < L - 1 - left
            j = torch.arange(width, device=q.device)
            kw["atten_mask"] = torch.stack([j < L - 1 - left for L in lengths]).view(batch, 1, 1, width)
        return incre_flash_attention(q, kv[0], kv[1], **kw)
    # Longer queries, fp32 or ALiBi: gather the first L_b cached rows into TND (§8.3).
    def gather(cache):
        rows = []
        for b in range(batch):
            pairs = position_rows(b, 0, lengths[b])
            rows.append(torch.stack([cache[r, p] for r, p in pairs]) if pairs else cache.new_zeros(0, *cache.shape[2:]))
        return torch.cat(rows)
    out, _ = _varlen(op, q.reshape(batch * sq, n, d), gather(k_cache), gather(v_cache), [sq] * batch, lengths,
                     dropout_p=0.0, softmax_scale=softmax_scale, causal=causal, window_size=window_size,
                     alibi_slopes=alibi_slopes)
    return out.view(batch, sq, n, d)
