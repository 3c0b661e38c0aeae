"""flash-attn compatible layer against an independent float64 reference of flash-attn's semantics."""
import math

import pytest
import torch

import ascend_attn


def ref_attention(q, k, v, causal=False, window=(-1, -1), slopes=None, scale=None):
    """One sequence, flash-attn semantics (bottom-right aligned), float64.

    q ``(Sq, N, D)``, k/v ``(Sk, Nkv, D)``. Returns out ``(Sq, N, D)``, lse ``(N, Sq)``.
    """
    q, k, v = q.double(), k.double(), v.double()
    sq, n, d = q.shape
    sk = k.shape[0]
    g = n // k.shape[1]
    k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    scale = d ** -0.5 if scale is None else scale
    s = torch.einsum("qhd,khd->hqk", q, k) * scale
    i = torch.arange(sq).view(-1, 1)
    j = torch.arange(sk).view(1, -1)
    left, right = window
    if causal:
        right = 0
    if slopes is not None:
        s = s - slopes.double().view(-1, 1, 1) * (i + sk - sq - j).abs()
    keep = torch.ones(sq, sk, dtype=torch.bool)
    if left >= 0:
        keep &= j >= i + sk - sq - left
    if right >= 0:
        keep &= j <= i + sk - sq + right
    s = s.masked_fill(~keep, -math.inf)
    lse = torch.logsumexp(s, -1)
    p = torch.exp(s - lse.unsqueeze(-1)).nan_to_num(0.0)
    out = torch.einsum("hqk,khd->qhd", p, v)
    return out, lse


def packed(seq_q, seq_k, n=4, nk=2, d=16, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(sum(seq_q), n, d, generator=gen).to(dtype).requires_grad_()
    k = torch.randn(sum(seq_k), nk, d, generator=gen).to(dtype).requires_grad_()
    v = torch.randn(sum(seq_k), nk, d, generator=gen).to(dtype).requires_grad_()
    cu = lambda lens: torch.tensor([0] + list(torch.tensor(lens).cumsum(0).tolist()), dtype=torch.int32)
    return q, k, v, cu(seq_q), cu(seq_k)


def reference_varlen(q, k, v, cu_q, cu_k, **kw):
    outs, lses = [], []
    slopes = kw.pop("slopes", None)
    for b in range(len(cu_q) - 1):
        qs, ks = slice(cu_q[b], cu_q[b + 1]), slice(cu_k[b], cu_k[b + 1])
        row_slopes = None if slopes is None else (slopes if slopes.dim() == 1 else slopes[b])
        o, l = ref_attention(q[qs], k[ks], v[ks], slopes=row_slopes, **kw)
        outs.append(o)
        lses.append(l)
    return torch.cat(outs), torch.cat(lses, dim=1)


WINDOWS = [(-1, -1), (-1, 0), (4, 0), (0, 0), (1, 0), (0, 1), (4, 4), (8, 2)]


@pytest.mark.parametrize("window", WINDOWS)
def test_varlen_windows_with_gradients(window):
    seq_q, seq_k = [5, 9, 3, 7], [9, 4, 3, 0]  # Sq > Sk and S2 = 0: rows that see no key
    q, k, v, cu_q, cu_k = packed(seq_q, seq_k, seed=len(window))
    out, lse, _ = ascend_attn.flash_attn_varlen_func(q, k, v, cu_q, cu_k, 9, 9, window_size=window,
                                                     return_attn_probs=True)
    ref_out, ref_lse = reference_varlen(q, k, v, cu_q, cu_k, window=window)
    torch.testing.assert_close(out.double(), ref_out, rtol=0, atol=2e-6)
    assert lse.shape == (4, sum(seq_q))
    finite = torch.isfinite(ref_lse)
    assert torch.equal(torch.isfinite(lse), finite)  # rows with no visible key: LSE -inf
    torch.testing.assert_close(lse.double()[finite], ref_lse[finite], rtol=0, atol=2e-6)
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), grad_out)
    ref_grads = torch.autograd.grad(ref_out, (q, k, v), grad_out.double())
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g.double(), r.double(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("sq,sk", [(3, 7), (7, 3), (5, 5)])
def test_func_causal_is_bottom_right(sq, sk):
    gen = torch.Generator().manual_seed(sq * sk)
    q = torch.randn(2, sq, 4, 16, generator=gen)
    k = torch.randn(2, sk, 1, 16, generator=gen)  # MQA
    v = torch.randn(2, sk, 1, 16, generator=gen)
    out, lse, _ = ascend_attn.flash_attn_func(q, k, v, causal=True, return_attn_probs=True)
    assert out.shape == q.shape and lse.shape == (2, 4, sq)
    for b in range(2):
        ref_out, ref_lse = ref_attention(q[b], k[b], v[b], causal=True)
        torch.testing.assert_close(out[b].double(), ref_out, rtol=0, atol=2e-6)
        assert torch.equal(torch.isinf(lse[b]), torch.isinf(ref_lse))


def test_sq2_sk5_causal_rows_from_the_flash_attn_docstring():
    """flash-attn: Sq=2, Sk=5 causal keeps rows 11110 / 11111: row 0 must ignore key 4."""
    q = torch.randn(1, 2, 1, 8)
    k = torch.randn(1, 5, 1, 8)
    v = torch.zeros(1, 5, 1, 8)
    v[0, 4] = 1.0
    out = ascend_attn.flash_attn_func(q, k, v, causal=True)
    assert torch.all(out[0, 0] == 0) and torch.all(out[0, 1] > 0)


@pytest.mark.parametrize("slope_shape", ["N", "BN"])
def test_alibi_varlen_with_different_offsets(slope_shape):
    seq_q, seq_k = [4, 6, 3], [7, 6, 5]  # offsets 3, 0, 2: one op call per offset
    q, k, v, cu_q, cu_k = packed(seq_q, seq_k, seed=5)
    slopes = torch.rand(4) if slope_shape == "N" else torch.rand(3, 4)
    out = ascend_attn.flash_attn_varlen_func(q, k, v, cu_q, cu_k, 6, 7, causal=True, alibi_slopes=slopes)
    ref_out, _ = reference_varlen(q, k, v, cu_q, cu_k, causal=True, slopes=slopes)
    torch.testing.assert_close(out.double(), ref_out, rtol=0, atol=2e-6)
    grads = torch.autograd.grad(out.sum(), (q, k))
    ref_grads = torch.autograd.grad(ref_out.sum(), (q, k))
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g.double(), r.double(), rtol=0, atol=1e-5)


def test_bf16_and_fp16():
    for dtype in (torch.bfloat16, torch.float16):
        q, k, v, cu_q, cu_k = packed([6, 5], [8, 5], dtype=dtype, seed=6)
        out = ascend_attn.flash_attn_varlen_func(q, k, v, cu_q, cu_k, 6, 8, causal=True)
        ref_out, _ = reference_varlen(q, k, v, cu_q, cu_k, causal=True)
        assert out.dtype == dtype
        torch.testing.assert_close(out.double(), ref_out, rtol=0, atol=3e-2 if dtype == torch.bfloat16 else 4e-3)


def test_dropout_is_unbiased_and_differentiable():
    q, k, v, cu_q, cu_k = packed([64], [64], n=2, nk=2, d=8, seed=7)
    torch.manual_seed(0)
    outs = torch.stack([ascend_attn.flash_attn_varlen_func(q, k, v, cu_q, cu_k, 64, 64, dropout_p=0.3)
                        for _ in range(40)])
    clean = ascend_attn.flash_attn_varlen_func(q, k, v, cu_q, cu_k, 64, 64)
    assert not torch.equal(outs[0], clean)
    assert (outs.mean(0) - clean).abs().mean() < 0.25 * clean.abs().mean()  # E[dropout] = no dropout
    outs[0].sum().backward()
    assert torch.isfinite(q.grad).all()


def test_varlen_paged_kv_forward():
    seq_q, seq_k, page = [3, 2], [10, 5], 4
    q, k, v, cu_q, cu_k = packed(seq_q, seq_k, seed=8)
    table = torch.tensor([[5, 1, 3], [0, 2, 4]], dtype=torch.int32)
    k_pages = torch.zeros(6, page, 2, 16)
    v_pages = torch.zeros(6, page, 2, 16)
    for b, (start, n) in enumerate(zip(cu_k[:-1].tolist(), seq_k)):
        for t in range(n):
            k_pages[table[b, t // page], t % page] = k.detach()[start + t]
            v_pages[table[b, t // page], t % page] = v.detach()[start + t]
    out = ascend_attn.flash_attn_varlen_func(q, k_pages, v_pages, cu_q, cu_k, 3, 10, causal=True, block_table=table)
    ref_out, _ = reference_varlen(q, k, v, cu_q, cu_k, causal=True)
    torch.testing.assert_close(out.double(), ref_out, rtol=0, atol=2e-6)


def rotary_reference(x, positions, cos, sin, interleaved):
    """Straightforward per-position rotation of the leading 2*cos.shape[1] features (float64)."""
    out = x.clone().double()
    rd = 2 * cos.shape[1]
    for idx, pos in enumerate(positions):
        for p in range(rd // 2):
            a, b = (2 * p, 2 * p + 1) if interleaved else (p, p + rd // 2)
            c, s = cos[pos, p].double(), sin[pos, p].double()
            xa, xb = x[idx, ..., a].double(), x[idx, ..., b].double()
            out[idx, ..., a], out[idx, ..., b] = xa * c - xb * s, xa * s + xb * c
    return out


@pytest.mark.parametrize("interleaved", [True, False])
@pytest.mark.parametrize("paged", [False, True])
@pytest.mark.parametrize("dtype,sq", [(torch.float16, 1), (torch.float32, 3)])
def test_kvcache_append_rotary(interleaved, paged, dtype, sq):
    gen = torch.Generator().manual_seed(9)
    batch, n, nk, d, s_cache, page = 2, 4, 2, 16, 32, 16
    q = torch.randn(batch, sq, n, d, generator=gen).to(dtype)
    k_new = torch.randn(batch, 1, nk, d, generator=gen).to(dtype)
    v_new = torch.randn(batch, 1, nk, d, generator=gen).to(dtype)
    base = torch.tensor([5, 17], dtype=torch.int32)
    dense_k = torch.randn(batch, s_cache, nk, d, generator=gen).to(dtype)
    dense_v = torch.randn(batch, s_cache, nk, d, generator=gen).to(dtype)
    cos, sin = torch.randn(64, 4, generator=gen), torch.randn(64, 4, generator=gen)
    if paged:
        table = torch.tensor([[3, 0], [1, 2]], dtype=torch.int32)
        k_cache = torch.zeros(4, page, nk, d, dtype=dtype)
        v_cache = torch.zeros(4, page, nk, d, dtype=dtype)
        for b in range(batch):
            for t in range(s_cache):
                k_cache[table[b, t // page], t % page] = dense_k[b, t]
                v_cache[table[b, t // page], t % page] = dense_v[b, t]
    else:
        table, k_cache, v_cache = None, dense_k.clone(), dense_v.clone()
    out = ascend_attn.flash_attn_with_kvcache(q, k_cache, v_cache, k_new, v_new, rotary_cos=cos, rotary_sin=sin,
                                              cache_seqlens=base, block_table=table, causal=True,
                                              rotary_interleaved=interleaved)
    for b in range(batch):
        length = int(base[b]) + 1
        k_rot = rotary_reference(k_new[b], [int(base[b])], cos, sin, interleaved)
        keys = torch.cat([dense_k[b, : base[b]].double(), k_rot])
        values = torch.cat([dense_v[b, : base[b]].double(), v_new[b].double()])
        q_rot = rotary_reference(q[b], [int(base[b]) + i for i in range(sq)], cos, sin, interleaved)
        ref_out, _ = ref_attention(q_rot.to(dtype), keys.to(dtype), values.to(dtype), causal=True)
        tol = 4e-3 if dtype == torch.float16 else 2e-5
        torch.testing.assert_close(out[b].double(), ref_out, rtol=0, atol=tol)
        # the cache was appended in place, at position cache_seqlens[b]
        row = (int(table[b, int(base[b]) // page]), int(base[b]) % page) if paged else (b, int(base[b]))
        torch.testing.assert_close(k_cache[row].double(), k_rot[0], rtol=0, atol=tol)
        assert length == int(base[b]) + 1


def test_kvcache_batch_idx_gqa_and_window():
    gen = torch.Generator().manual_seed(10)
    q = torch.randn(2, 1, 8, 16, generator=gen).half()
    k_cache = torch.randn(3, 20, 2, 16, generator=gen).half()
    v_cache = torch.randn(3, 20, 2, 16, generator=gen).half()
    out = ascend_attn.flash_attn_with_kvcache(q, k_cache, v_cache, cache_seqlens=torch.tensor([12, 20]),
                                              cache_batch_idx=torch.tensor([2, 0]), window_size=(3, 0))
    for b, (row, length) in enumerate(((2, 12), (0, 20))):
        ref_out, _ = ref_attention(q[b], k_cache[row, :length], v_cache[row, :length], window=(3, 0))
        torch.testing.assert_close(out[b].double(), ref_out, rtol=0, atol=4e-3)


ERRORS = [
    ("dropout_p", dict(dropout_p=1.0)),
    ("window_size", dict(window_size=(1.5, 0))),
    ("alibi_slopes", dict(alibi_slopes=torch.ones(4, dtype=torch.float64))),
    ("max_seqlen_q", dict(max_seqlen_q=2)),
    ("cu_seqlens_q", dict(cu_seqlens_q=torch.tensor([1, 5, 9], dtype=torch.int32))),
]


@pytest.mark.parametrize("arg,change", ERRORS, ids=[e[0] for e in ERRORS])
def test_errors_name_the_argument(arg, change):
    q, k, v, cu_q, cu_k = packed([5, 4], [5, 4])
    kwargs = dict(cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=5, max_seqlen_k=5)
    kwargs.update(change)
    with pytest.raises((ValueError, TypeError)) as info:
        ascend_attn.flash_attn_varlen_func(q, k, v, **kwargs)
    assert arg in str(info.value)
