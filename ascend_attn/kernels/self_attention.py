"""ATB SelfAttention on the FlashAttention varlen core: device-generic torch.

Every flow becomes one (or, past FA's batch / token limits, several) call of
:func:`flash_attention_forward` on packed TND tensors, one sequence per computed batch:

* PA_ENCODER: the query / key / value rows of each batch (``seq_len``), causal masks as FA's
  right-down causal sparse mode, compressed ALiBi as FA's ALiBi slopes (pse_type 2 / 3);
* KV-cache flows (UNDEFINED / ENCODER / DECODER, BSND or BNSD, tensor or per-batch list caches):
  the new key / value rows are first written into ``cache_k`` / ``cache_v`` at ``layer_id`` and
  ``[token_offset - seq_len, token_offset)`` (in place, not with kv-bypass), then the batch's query rows
  attend over the cache's first ``token_offset`` rows (decode is the same with one query row).

What FA has no notion of runs in the two hook points of its forward (``hooks``), per score block:
the default fp16 kernel's score rounding, the per-head dequant of full quantization, logN, qk_scale,
clamp and explicit masks (added in the block, never materialised per head), and the quantisation
of P before ``P @ V``. ``q_scale`` is FA's ``scale_value`` (it multiplies q).
"""
from __future__ import annotations


import torch

from .. import validation as V
from ..validation import self_attention as SV
from .flash_attention import flash_attention_forward
from .masks import canonical_compressed_mask

OP = SV.OP


# ----------------------------------------------------------------------------- device values

def _eps(dtype: torch.dtype) -> float:
    return {torch.float16: 2.0 ** -10, torch.bfloat16: 2.0 ** -7}.get(dtype, 2.0 ** -20)


def alibi_law(plan: SV.SAPlan, mask: torch.Tensor):
    """(unit, sqrt) of a compressed ALiBi bias C ``[256, 256]`` (its lower triangle, j <= i).

    Right-aligned (ALIBI_COMPRESS / _SQRT): ``C[i, j] = C[0, 0] + unit * f(i - j)`` with f = identity /
    sqrt and ``unit = C[1, 0] - C[0, 0]``; left-aligned: ``C[i, j] = C[255, 0] + unit * j`` with
    ``unit = C[255, 1] - C[255, 0]``. Raises if C does not follow its law (to the mask dtype's rounding).
    """
    c = mask.detach().to("cpu", torch.float64)
    rows = torch.arange(256, dtype=torch.float64).view(-1, 1)
    cols = torch.arange(256, dtype=torch.float64).view(1, -1)
    sqrt = plan.mask_type == SV.MASK_ALIBI_COMPRESS_SQRT
    if plan.mask_type == SV.MASK_ALIBI_COMPRESS_LEFT_ALIGN:
        base, unit = float(c[255, 0]), float(c[255, 1] - c[255, 0])
        law = base + unit * cols.expand(256, 256)
        text = "C[i, j] = C[255, 0] + (C[255, 1] - C[255, 0]) * j"
    else:
        base, unit = float(c[0, 0]), float(c[1, 0] - c[0, 0])
        dist = (rows - cols).clamp(min=0)
        law = base + unit * (dist.sqrt() if sqrt else dist)
        text = f"C[i, j] = C[0, 0] + (C[1, 0] - C[0, 0]) * {'sqrt(i - j)' if sqrt else '(i - j)'}"
    lower = cols <= rows
    tol = _eps(mask.dtype) * (law.abs() + abs(unit) + abs(base))
    bad = lower & ~((c - law).abs() <= tol)
    if bool(bad.any()):
        i, j = (int(x) for x in bad.nonzero()[0])
        raise V.value_error(OP, "attention_mask", f"a compressed ALiBi bias with {text} on and below the diagonal "
                            f"for mask_type {SV.enum_name('mask_type', plan.mask_type)}",
                            f"C[{i}, {j}] = {float(c[i, j])}")
    return unit, sqrt


def check_device_values(plan: SV.SAPlan, attention_mask):
    """Checks on the mask's values (its shape is validated): the compressed causal mask's content, the
    compressed ALiBi law, 0/1 values of binary masks. Run by every eager frontend before anything is
    written. Returns the ALiBi law (unit, sqrt) for compressed ALiBi masks, else None."""
    if attention_mask is None:
        return None
    if plan.mask_form == "alibi_compressed":
        return alibi_law(plan, attention_mask)
    m = attention_mask.detach()
    if plan.mask_form == "causal":
        upper = torch.ones(128, 128, dtype=torch.bool, device=m.device).triu(1)
        ok_lower = bool((m[~upper] == 0).all())
        ok_upper = bool((m[upper] == 1).all()) if plan.binary_mask else bool((m[upper] < 0).all())
        if not (ok_lower and ok_upper):
            above = "1 above it (high precision / bfloat16: -inf replaced by 1)" if plan.binary_mask else \
                "a negative value (-inf or a large negative number) above it (default float16 kernel)"
            raise V.value_error(OP, "attention_mask", f"the compressed causal mask [128, 128]: 0 on and below the "
                                f"diagonal, {above}", "other content")
    elif plan.binary_mask and plan.mask_type == SV.MASK_NORM and not bool(((m == 0) | (m == 1)).all()):
        raise V.value_error(OP, "attention_mask", "values 0 (keep) and 1 (masked) with high precision or bfloat16 "
                            "(the default kernel's -inf replaced by 1)", "other values")
    return None


# ----------------------------------------------------------------------------- cache access

def _cache_rows(plan: SV.SAPlan, cache: list, b: int, length: int) -> torch.Tensor:
    """The first ``length`` cache rows of batch b as ``[length, Nkv, D]``."""
    if plan.flow == "bnsd":
        return cache[0][plan.layer, b, :, :length].transpose(0, 1)
    t = cache[b] if plan.cache_form == "list" else cache[0]
    if plan.cache_form == "list":
        rows = t[plan.layer, :length] if plan.cache_has_layer else t[:length]
    else:
        rows = t[plan.layer, b, :length] if plan.cache_has_layer else t[b, :length]
    return rows.reshape(length, plan.heads_kv, plan.head_dim)


def write_cache(plan: SV.SAPlan, key, value, cache_k: list, cache_v: list) -> None:
    """Rows ``[token_offset - seq_len, token_offset)`` of each computed batch <- its new key / value rows."""
    for b in range(plan.batch):
        s1, s2 = plan.seq_q[b], plan.seq_kv[b]
        if not plan.active[b] or s1 == 0:
            continue
        rows = slice(plan.q_offsets[b], plan.q_offsets[b] + s1)
        for new, cache in ((key, cache_k[0]), (value, cache_v[0])):
            dst = cache[plan.layer, b] if plan.cache_has_layer else cache[b]
            dst[s2 - s1: s2] = new[rows].reshape(s1, -1)


def _query_rows(plan: SV.SAPlan, query, b: int) -> torch.Tensor:
    if plan.flow == "bnsd":
        return query[b, :, : plan.seq_q[b]].transpose(0, 1)
    o = plan.q_offsets[b]
    return query[o: o + plan.seq_q[b]].reshape(plan.seq_q[b], plan.heads_q, plan.head_dim)


def _kv_rows(plan: SV.SAPlan, x, cache: list, b: int) -> torch.Tensor:
    if plan.flow == "pa":
        o = plan.q_offsets[b]
        return x[o: o + plan.seq_q[b]].reshape(plan.seq_q[b], plan.heads_kv, plan.head_dim)
    return _cache_rows(plan, cache, b, plan.seq_kv[b])


def _store(plan: SV.SAPlan, out, b: int, rows: torch.Tensor) -> None:
    if plan.flow == "bnsd":
        out[b, :, : plan.seq_q[b]] = rows.transpose(0, 1)
    else:
        o = plan.q_offsets[b]
        out[o: o + plan.seq_q[b]] = rows.reshape((plan.seq_q[b],) + tuple(out.shape[1:]))


# ----------------------------------------------------------------------------- hooks

class _Hooks:
    """What the FA core calls back for each sequence of one call (``batches[seq.b]`` = ATB batch)."""

    def __init__(self, plan: SV.SAPlan, batches, cdtype, device, *, mask, log_n, qk_descale, vpv_descale, p_scale):
        self.plan, self.batches = plan, batches
        n2, g = plan.heads_kv, plan.heads_q // plan.heads_kv
        self.g = g

        def per_head(t):
            return None if t is None else t.to(device, cdtype).view(n2, 1, g, 1)
        self.mask = None if mask is None or plan.mask_form not in ("2d", "batch", "head", "batch_head") else mask
        self.masked_fill = plan.binary_mask and plan.mask_type == SV.MASK_NORM
        self.log_n = None if log_n is None else log_n.to(device, cdtype)
        self.qk_descale = per_head(qk_descale)
        if plan.quant_type == SV.QUANT_QKV_ONLINE:
            self.p_div, self.pv_scale = None, per_head(vpv_descale) / 127.0
        elif plan.quant_type == SV.QUANT_QKV_OFFLINE:
            self.p_div, self.pv_scale = per_head(p_scale), per_head(vpv_descale)
        self.cdtype = cdtype

    def __call__(self, seq):
        return _SequenceHook(self, self.batches[seq.b])

    def mask_block(self, b, i0, i1, j0, j1):
        """The explicit mask of batch b for query rows [i0, i1) and KV columns [j0, j1), ``[N2|1, rows, G|1, cols]``
        (rows index the batch's query rows from 0: the top-left corner of the mask)."""
        m, form, n2, g = self.mask, self.plan.mask_form, self.plan.heads_kv, self.g
        if form == "2d":
            return m[i0:i1, j0:j1].view(1, i1 - i0, 1, j1 - j0)
        lead = b if m.shape[0] > 1 else 0
        if form == "batch":
            return m[lead, i0:i1, j0:j1].view(1, i1 - i0, 1, j1 - j0)
        heads = m[:, i0:i1, j0:j1] if form == "head" else m[lead, :, i0:i1, j0:j1]
        return heads.view(n2, g, i1 - i0, j1 - j0).permute(0, 2, 1, 3)


def _round16(s: torch.Tensor) -> torch.Tensor:
    """The default kernel keeps scores in fp16: nearest even, overflow -> inf (semantics of ATB's fp16 BMM)."""
    return s.to(torch.float16).to(s.dtype)


class _SequenceHook:
    def __init__(self, hooks: _Hooks, b: int):
        self.h, self.b = hooks, b

    def scores(self, s, i0, i1, j0, j1):
        """``q_scale * Q.K^T`` block -> scores before pse (ALiBi slopes) and causal masking."""
        h, plan = self.h, self.h.plan
        if h.qk_descale is not None:
            s = s * h.qk_descale
        if plan.round_scores:
            s = _round16(s)
        if plan.logn:
            s = s * (h.log_n[self.b] if plan.calc_type == SV.DECODER else h.log_n[i0:i1].view(1, -1, 1, 1))
        s = s * plan.qk_scale
        if plan.round_scores:
            s = _round16(s)
        if plan.clamp is not None:
            s = s.clamp(plan.clamp[0], plan.clamp[1])
        if h.mask is not None:
            block = h.mask_block(self.b, i0, i1, j0, j1)
            s = s.masked_fill(block != 0, -torch.inf) if h.masked_fill else s + block.to(s.dtype)
        return s

    def probs(self, p, i0, i1, j0, j1):
        """Full quantization: P (rounded to the output dtype) -> int8 -> times the P.V dequant scale."""
        h, plan = self.h, self.h.plan
        if plan.quant_type == SV.QUANT_UNDEFINED:
            return p
        n2, rows_g, cols = p.shape
        p4 = p.view(n2, i1 - i0, h.g, cols)
        p8 = torch.round(p4 * 127.0 if h.p_div is None else p4 / h.p_div).clamp_(-128, 127)
        return (p8 * h.pv_scale).reshape(n2, rows_g, cols)


# ----------------------------------------------------------------------------- the op

def _chunks(batches, plan):
    """Groups of batches within the FA core's limits (sequences per call, tokens per call)."""
    group, tq, tk = [], 0, 0
    for b in batches:
        s1, s2 = plan.seq_q[b], plan.seq_kv[b]
        if group and (len(group) == V.FA_MAX_BATCH or tq + s1 > V.FA_MAX_TOKENS or tk + s2 > V.FA_MAX_TOKENS):
            yield group
            group, tq, tk = [], 0, 0
        group.append(b)
        tq, tk = tq + s1, tk + s2
    if group:
        yield group


def _group_fa_plan(plan: SV.SAPlan, group: list[int], causal: bool, has_pse: bool, pse_type: int):
    """The FA varlen plan of one group of batches packed as TND (shapes only, so it runs before any write)."""
    cum_q, cum_k, tq, tk = [], [], 0, 0
    for b in group:
        tq, tk = tq + plan.seq_q[b], tk + plan.seq_kv[b]
        cum_q.append(tq)
        cum_k.append(tk)
    meta = lambda rows, heads: V.TensorMeta((rows, heads, plan.head_dim), plan.compute_dtype)  # noqa: E731
    return V.check_flash_attention(
        meta(tq, plan.heads_q), meta(tk, plan.heads_kv), meta(tk, plan.heads_kv), plan.heads_q, cum_q, cum_k,
        scale_value=plan.q_scale, atten_mask=V.TensorMeta((2048, 2048), "bool") if causal else None,
        sparse_mode=3 if causal else 0, pse=V.TensorMeta((plan.heads_q,), "float32") if has_pse else None,
        pse_type=pse_type, softmax_layout="same_as_input")


def self_attention(plan: SV.SAPlan, query, key=None, value=None, cache_k=(), cache_v=(), *, attention_mask=None,
                   slopes=None, log_n=None, qk_descale=None, vpv_descale=None, p_scale=None):
    """ATB SelfAttention for validated inputs. ``cache_k`` / ``cache_v``: lists of tensors (one cache tensor,
    or one per batch). Writes the caches in place (KV-cache flows without bypass) and returns the output:
    query's shape, ``plan.out_dtype``; rows of batches that are not computed are 0."""
    law = check_device_values(plan, attention_mask)
    cache_k, cache_v = list(cache_k), list(cache_v)
    device = query.device
    cdtype = getattr(torch, plan.compute_dtype)
    out = torch.zeros(query.shape, dtype=getattr(torch, plan.out_dtype), device=device)
    batches = [b for b in range(plan.batch) if plan.active[b] and plan.seq_q[b] > 0]
    causal = plan.mask_form in ("causal", "alibi_compressed")
    pse, pse_type = None, 1
    if law is not None:
        unit, sqrt = law
        sign = 1.0 if plan.mask_type == SV.MASK_ALIBI_COMPRESS_LEFT_ALIGN else -1.0
        # FA adds -s * f(i - j); the law's bias is slope * unit * f(i - j) (right-aligned) or
        # slope * unit * j = -slope * unit * (i - j) + (a constant per row) (left-aligned).
        pse = (sign * unit) * slopes.to(device, torch.float32)
        pse_type = 3 if sqrt else 2
    # Every FA plan is checked before the caches are written: a failing call leaves them untouched.
    groups = [(group, _group_fa_plan(plan, group, causal, pse is not None, pse_type))
              for group in _chunks(batches, plan)]
    if plan.writes_cache:
        write_cache(plan, key, value, cache_k, cache_v)
    for group, fa_plan in groups:
        q = torch.cat([_query_rows(plan, query, b) for b in group]).to(cdtype)
        k = torch.cat([_kv_rows(plan, key, cache_k, b) for b in group]).to(cdtype)
        v = torch.cat([_kv_rows(plan, value, cache_v, b) for b in group]).to(cdtype)
        hooks = _Hooks(plan, group, cdtype, device, mask=attention_mask, log_n=log_n, qk_descale=qk_descale,
                       vpv_descale=vpv_descale, p_scale=p_scale)
        o, _, _ = flash_attention_forward(q, k, v, fa_plan, pse=pse,
                                          atten_mask=canonical_compressed_mask(3, device) if causal else None, hooks=hooks)
        row = 0
        for b in group:
            _store(plan, out, b, o[row: row + plan.seq_q[b]])
            row += plan.seq_q[b]
    return out
