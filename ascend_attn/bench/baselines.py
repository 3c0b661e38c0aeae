"""The bench's candidates per op: ``{name: fn}`` per comparison set, each ``fn()`` one run on inputs
built once (the same for every round).

``ours`` is the public op on the default CPU path (the native kernels where built), ``eager`` the
same op on its eager torch kernel (``native.forced("eager")``); the rest is what a user would run
instead: SDPA looped per sequence or on the padded batch, a naive materialised softmax, the naive
dequantise / gather-then-attend decode, and copies into preallocated buffers (the floor of a
memory-bound op that reads its inputs once).
"""
from __future__ import annotations

from .. import native

def on_eager(run):
    """``run`` on the eager torch kernels (the ``eager`` candidate of every op)."""
    def eager():
        with native.forced("eager"):
            run()
    return eager


# Why an FA baseline left out of a set's baselines is not run (listed as a skipped row).
SKIP_WHY = {"sdpa_padded": "padded baseline not run on this shape (time)",
            "naive": "naive reference not run on this shape (time, [N,S,S] memory)",
            "eager": "eager kernel not run on this shape (time)"}


def fa_inputs(lens, heads, dim, dtype, seed=0):
    import torch
    gen = torch.Generator().manual_seed(seed)
    total = sum(lens)
    q, k, v, dy = (torch.randn(total, heads, dim, generator=gen).to(dtype) for _ in range(4))
    return q, k, v, dy


def fa_candidates(lens, heads, dim, dtype, causal, fwdbwd, baselines, naive_max):
    """{name: fn} for one FA comparison set (fn runs forward, or forward + backward)."""
    import torch
    import torch.nn.functional as F

    import ascend_attn
    from ascend_attn.kernels.masks import canonical_compressed_mask

    q, k, v, dy = fa_inputs(lens, heads, dim, dtype)
    scale = dim ** -0.5
    cum = [int(x) for x in torch.tensor(lens).cumsum(0)]
    starts = [0] + cum[:-1]
    mask = canonical_compressed_mask(3).clone() if causal else None
    kw = {"scale_value": scale, "sparse_mode": 3, "atten_mask": mask} if causal else {"scale_value": scale}
    skipped = {}
    if fwdbwd:
        for t in (q, k, v):
            t.requires_grad_()

    def finish(out):
        if fwdbwd:
            for t in (q, k, v):
                t.grad = None
            out.backward(dy)

    def run_op(**options):
        finish(ascend_attn.flash_attention_varlen_score(q, k, v, heads, cum, cum, **options)[0])

    def ours():
        run_op(**kw)

    def ours_full():
        # the same op and inputs without the causal mask, timed interleaved with the causal runs
        # of the set: the causal / full ratio then comes from one set, not two sets minutes apart
        run_op(scale_value=scale)

    def sdpa_loop():
        # [1, N, L, D] views: 4-D inputs take torch's CPU flash kernel (3-D ones fall back to the math path)
        view = lambda x, s, e: x[s:e].unsqueeze(0).transpose(1, 2)
        outs = [F.scaled_dot_product_attention(view(q, s, e), view(k, s, e), view(v, s, e), is_causal=causal,
                                               scale=scale) for s, e in zip(starts, cum)]
        finish(torch.cat([o[0].transpose(0, 1) for o in outs]))

    cands = {"ours": ours, "sdpa_loop": sdpa_loop}
    if causal and "ours_full" in baselines:
        cands["ours_full"] = ours_full
    if "eager" in baselines:
        cands["eager"] = on_eager(ours)
    else:
        skipped["eager"] = SKIP_WHY["eager"]

    if "sdpa_padded" in baselines:
        bsz, lmax = len(lens), max(lens)

        def pad(x):
            buf = x.new_zeros(bsz, lmax, heads, dim)
            for i, (s, e) in enumerate(zip(starts, cum)):
                buf[i, : e - s] = x[s:e].detach()
            return buf.transpose(1, 2).contiguous().requires_grad_(fwdbwd)  # [B, N, L, D]
        pq, pk, pv, pdy = pad(q), pad(k), pad(v), pad(dy).detach()
        key_mask = None
        if not causal:  # right padding: causal rows never see padded keys; full attention needs a key mask
            key_mask = (torch.arange(lmax)[None, :] < torch.tensor(lens)[:, None])[:, None, None, :]

        def sdpa_padded():
            out = F.scaled_dot_product_attention(pq, pk, pv, attn_mask=key_mask, is_causal=causal, scale=scale)
            if fwdbwd:
                for t in (pq, pk, pv):
                    t.grad = None
                out.backward(pdy)
        cands["sdpa_padded"] = sdpa_padded
    else:
        skipped["sdpa_padded"] = SKIP_WHY["sdpa_padded"]

    if "naive" in baselines and max(lens) <= naive_max:
        def naive():
            outs = []
            for s, e in zip(starts, cum):
                qs, ks, vs = (t[s:e].transpose(0, 1).float() for t in (q, k, v))
                scores = torch.matmul(qs, ks.transpose(1, 2)) * scale  # [N, L, L] materialised
                if causal:
                    scores = scores.masked_fill(torch.ones(e - s, e - s, dtype=torch.bool).triu(1), float("-inf"))
                outs.append(torch.matmul(torch.softmax(scores, dim=-1), vs).to(dtype).transpose(0, 1))
            finish(torch.cat(outs))
        cands["naive"] = naive
    else:
        skipped["naive"] = (f"naive reference only up to {naive_max}-token sequences (time, [N,S,S] memory)"
                            if "naive" in baselines else SKIP_WHY["naive"])
    return cands, skipped


def ifa_candidates(batch, heads_q, heads_kv, dim, kv_len, int8, paged, block):
    import torch
    import torch.nn.functional as F

    import ascend_attn
    gen = torch.Generator().manual_seed(1)
    hkv = heads_kv * dim
    query = torch.randn(batch, 1, heads_q * dim, generator=gen).to(torch.float16)
    kv_shape = (batch * kv_len // block, block, hkv) if paged else (batch, kv_len, hkv)
    if int8:
        key, value = (torch.randint(-128, 128, kv_shape, generator=gen, dtype=torch.int8) for _ in range(2))
    else:
        key, value = (torch.randn(kv_shape, generator=gen).to(torch.float16) for _ in range(2))
    kw = {"num_heads": heads_q, "num_key_value_heads": heads_kv, "input_layout": "BSH", "scale_value": dim ** -0.5,
          "actual_seq_lengths": [kv_len] * batch}
    table = None
    if paged:
        table = torch.randperm(batch * kv_len // block, generator=gen).view(batch, kv_len // block).to(torch.int32)
        kw.update(block_table=table, block_size=block)
    scale = offset = None
    if int8:
        scale = (torch.rand(2, hkv, generator=gen) * 0.02 + 0.005).to(torch.float16)
        offset = torch.randint(-4, 5, (2, hkv), generator=gen).to(torch.float16)
        kw.update(antiquant_scale=scale, antiquant_offset=offset)

    def ours():
        ascend_attn.incre_flash_attention(query, key, value, **kw)

    def naive():
        k, v = key, value
        if paged:  # gather the pages of each batch into a contiguous cache
            k, v = (x[table.long()].reshape(batch, kv_len, hkv) for x in (k, v))
        k, v = k.float(), v.float()
        if int8:  # dequantise: (x + offset) * scale per channel
            k = (k + offset[0].float()) * scale[0].float()
            v = (v + offset[1].float()) * scale[1].float()
        qh = query.float().view(batch, heads_q, 1, dim)
        kh, vh = (x.view(batch, kv_len, heads_kv, dim).transpose(1, 2) for x in (k, v))
        out = F.scaled_dot_product_attention(qh, kh, vh, scale=dim ** -0.5, enable_gqa=True)
        out.reshape(batch, 1, heads_q * dim).to(torch.float16)

    key_dst, value_dst = torch.empty_like(key), torch.empty_like(value)
    key_dst.copy_(key)  # first touch outside the timed runs
    value_dst.copy_(value)

    def cache_copy():
        key_dst.copy_(key)
        value_dst.copy_(value)
    return {"ours": ours, "eager": on_eager(ours), "naive": naive, "cache_copy": cache_copy}


def ifa_small_step_candidates():
    """One small decode step (B=1, N=8, S=128, D=128, fp16): per-call overhead against SDPA."""
    import torch
    import torch.nn.functional as F

    import ascend_attn
    gen = torch.Generator().manual_seed(3)
    b, n, s, d = 1, 8, 128, 128
    query = torch.randn(b, n, 1, d, generator=gen).to(torch.float16)
    key, value = (torch.randn(b, n, s, d, generator=gen).to(torch.float16) for _ in range(2))
    kw = {"num_heads": n, "input_layout": "BNSD", "scale_value": d ** -0.5}

    def ours():
        ascend_attn.incre_flash_attention(query, key, value, **kw)

    def sdpa():
        F.scaled_dot_product_attention(query, key, value, scale=d ** -0.5)
    return {"ours": ours, "eager": on_eager(ours), "sdpa": sdpa}


def rau_candidates(layout, dtype, cfg):
    import torch

    import ascend_attn
    gen = torch.Generator().manual_seed(2)
    if layout == "SBH":
        s, b, n, d = cfg["rau_sbh"]
        attn_shape, stat_shape, seq = (s, b, n * d), (b, n, s, 8), None
    else:
        lens, n, d = cfg["rau_tnd"]
        t = sum(lens)
        attn_shape, stat_shape = (t, n, d), (t, n, 8)
        seq = [0] + [int(x) for x in torch.tensor(lens).cumsum(0)]
    tensors = []
    for _ in range(2):
        attn = torch.randn(attn_shape, generator=gen).to(dtype)
        mx = (torch.randn(stat_shape[:-1], generator=gen) * 3)[..., None].expand(stat_shape).contiguous()
        sm = (torch.rand(stat_shape[:-1], generator=gen) * 49 + 1)[..., None].expand(stat_shape).contiguous()
        tensors += [attn, mx, sm]
    kw = {"actual_seq_qlen": seq, "input_layout": layout, "input_softmax_layout": "TND" if layout == "TND" else ""}

    def ours():
        ascend_attn.ring_attention_update(*tensors, **kw)

    copies = [torch.empty_like(x) for x in tensors]

    def copy():
        for dst, x in zip(copies, tensors):
            dst.copy_(x)
    copy()  # first touch outside the timed runs

    def naive():
        pa, pm, ps, ca, cm, cs = tensors
        m = torch.maximum(pm, cm)
        sp, sc = ps * torch.exp(pm - m), cs * torch.exp(cm - m)
        ssum = sp + sc
        wp, wc = (sp / ssum)[..., 0], (sc / ssum)[..., 0]
        if layout == "SBH":  # [B, N, S] -> [S, B, N, 1]
            wp, wc = (w.permute(2, 0, 1)[..., None] for w in (wp, wc))
            shape = (attn_shape[0], attn_shape[1], stat_shape[1], -1)
            out = pa.float().view(shape) * wp + ca.float().view(shape) * wc
            out = out.reshape(attn_shape)
        else:
            out = pa.float() * wp[..., None] + ca.float() * wc[..., None]
        return out.to(dtype), m, ssum
    return {"ours": ours, "eager": on_eager(ours), "copy": copy, "naive": naive}
