"""flash-attn compatible layer against an independent float64 reference of flash-attn's semantics."""
import math

import pytest
import torch

import ascend_attn


def ref_attention(q, k, v, causal=False, window=(-1, -1), slopes=None, scale=None, softcap=0.0, keep=None,
                  keep_prob=1.0, return_probs=False):
    """One sequence, flash-attn semantics (bottom-right aligned), float64.

    q ``(Sq, N, D)``, k/v ``(Sk, Nkv, D)``; ``softcap`` caps the scaled scores before ALiBi and
    masking; ``keep`` ``(N, Sq, Sk)`` bool dropout keep bits. Returns out ``(Sq, N, D)``, lse
    ``(N, Sq)`` (and the probabilities ``(N, Sq, Sk)`` with ``return_probs``).
    """
    q, k, v = q.double(), k.double(), v.double()
    sq, n, d = q.shape
    sk = k.shape[0]
    g = n // k.shape[1]
    k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    scale = d ** -0.5 if scale is None else scale
    s = torch.einsum("qhd,khd->hqk", q, k) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    i = torch.arange(sq).view(-1, 1)
    j = torch.arange(sk).view(1, -1)
    left, right = window
    if causal:
        right = 0
    if slopes is not None:
        s = s - slopes.double().view(-1, 1, 1) * (i + sk - sq - j).abs()
    mask = torch.ones(sq, sk, dtype=torch.bool)
    if left >= 0:
        mask &= j >= i + sk - sq - left
    if right >= 0:
        mask &= j <= i + sk - sq + right
    s = s.masked_fill(~mask, -math.inf)
    lse = torch.logsumexp(s, -1)
    p = torch.exp(s - lse.unsqueeze(-1)).nan_to_num(0.0)
    dropped = p if keep is None else p * keep / keep_prob
    out = torch.einsum("hqk,khd->qhd", dropped, v)
    return (out, lse, p) if return_probs else (out, lse)


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


def assert_matches(q, k, v, out, lse, ref_out, ref_lse, grad_atol):
    """out/LSE (LSE -inf exactly where no key is visible) and the gradients of a random
    upstream gradient against the float64 reference."""
    torch.testing.assert_close(out.double(), ref_out, rtol=0, atol=2e-6)
    finite = torch.isfinite(ref_lse)
    assert torch.equal(torch.isfinite(lse), finite)  # rows with no visible key: LSE -inf
    torch.testing.assert_close(lse.double()[finite], ref_lse[finite], rtol=0, atol=2e-6)
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), grad_out, retain_graph=True)
    ref_grads = torch.autograd.grad(ref_out, (q, k, v), grad_out.double())
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g.double(), r.double(), rtol=0, atol=grad_atol)


WINDOWS = [(-1, -1), (-1, 0), (4, 0), (0, 0), (1, 0), (0, 1), (4, 4), (8, 2)]


@pytest.mark.parametrize("window", WINDOWS)
def test_varlen_windows_with_gradients(window):
    seq_q, seq_k = [5, 9, 3, 7], [9, 4, 3, 0]  # Sq > Sk and S2 = 0: rows that see no key
    q, k, v, cu_q, cu_k = packed(seq_q, seq_k, seed=len(window))
    out, lse, _ = ascend_attn.flash_attn_varlen_func(q, k, v, cu_q, cu_k, 9, 9, window_size=window,
                                                     return_attn_probs=True)
    ref_out, ref_lse = reference_varlen(q, k, v, cu_q, cu_k, window=window)
    assert lse.shape == (4, sum(seq_q))
    assert_matches(q, k, v, out, lse, ref_out, ref_lse, grad_atol=1e-5)


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


# ----------------------------------------------------------------------------- flash-attn 2.x drop-in

def test_packed_forms_equal_the_unpacked_ones():
    gen = torch.Generator().manual_seed(11)
    qkv = torch.randn(2, 6, 3, 4, 16, generator=gen, requires_grad=True)
    kw = dict(causal=True, window_size=(3, 0), return_attn_probs=True)
    # qkvpacked vs flash_attn_func on separate copies: outputs, LSE and gradients
    out, lse, _ = ascend_attn.flash_attn_qkvpacked_func(qkv, **kw)
    q0, k0, v0 = (t.detach().clone().requires_grad_() for t in qkv.unbind(2))
    ref_out, ref_lse, _ = ascend_attn.flash_attn_func(q0, k0, v0, **kw)
    assert torch.equal(out, ref_out) and torch.equal(lse, ref_lse)
    (grad,) = torch.autograd.grad(out.sum(), qkv)
    assert torch.equal(grad, torch.stack(torch.autograd.grad(ref_out.sum(), (q0, k0, v0)), 2))
    # kvpacked (GQA) vs flash_attn_func
    q = torch.randn(2, 6, 4, 16, generator=gen)
    kv = torch.randn(2, 9, 2, 2, 16, generator=gen)
    out = ascend_attn.flash_attn_kvpacked_func(q, kv, causal=True)
    assert torch.equal(out, ascend_attn.flash_attn_func(q, kv[:, :, 0], kv[:, :, 1], causal=True))
    # varlen packed forms vs flash_attn_varlen_func
    cu = torch.tensor([0, 5, 12], dtype=torch.int32)
    qkv_t = torch.randn(12, 3, 4, 16, generator=gen)
    slopes = torch.rand(4, generator=gen)
    out = ascend_attn.flash_attn_varlen_qkvpacked_func(qkv_t, cu, 7, causal=True, alibi_slopes=slopes)
    ref = ascend_attn.flash_attn_varlen_func(*qkv_t.unbind(1), cu, cu, 7, 7, causal=True, alibi_slopes=slopes)
    assert torch.equal(out, ref)
    kv_t = torch.randn(15, 2, 2, 16, generator=gen)
    q_t = torch.randn(12, 4, 16, generator=gen)
    cu_k = torch.tensor([0, 9, 15], dtype=torch.int32)
    out = ascend_attn.flash_attn_varlen_kvpacked_func(q_t, kv_t, cu, cu_k, 7, 9, window_size=[2, 1])
    assert torch.equal(out, ascend_attn.flash_attn_varlen_func(q_t, kv_t[:, 0], kv_t[:, 1], cu, cu_k, 7, 9,
                                                               window_size=(2, 1)))


def test_window_size_as_list_or_tensor():
    q, k, v, cu_q, cu_k = packed([5, 7], [9, 7], seed=12)
    args = (q, k, v, cu_q, cu_k, 7, 9)
    ref = ascend_attn.flash_attn_varlen_func(*args, window_size=(3, 1))
    for window in ([3, 1], torch.tensor([3, 1]), torch.tensor([3, 1], dtype=torch.int32)):
        assert torch.equal(ascend_attn.flash_attn_varlen_func(*args, window_size=window), ref)
    # flash-attn: any negative side is unbounded
    assert torch.equal(ascend_attn.flash_attn_varlen_func(*args, window_size=(-5, -1)),
                       ascend_attn.flash_attn_varlen_func(*args))


@pytest.mark.parametrize("window,causal,alibi", [((-1, -1), False, False), ((-1, -1), True, True),
                                                 ((3, 2), False, True)])
def test_softcap_against_reference(window, causal, alibi):
    seq_q, seq_k = [5, 300, 2], [7, 300, 0]  # a chunk boundary (256) and a sequence with no key
    q, k, v, cu_q, cu_k = packed(seq_q, seq_k, seed=13)
    slopes = torch.rand(3, 4) if alibi else None
    out, lse, s_dmask = ascend_attn.flash_attn_varlen_func(q, k, v, cu_q, cu_k, 300, 300, causal=causal,
                                                           window_size=window, softcap=2.5, alibi_slopes=slopes,
                                                           return_attn_probs=True)
    assert s_dmask is None  # no dropout
    ref_out, ref_lse = reference_varlen(q, k, v, cu_q, cu_k, causal=causal, window=window, softcap=2.5, slopes=slopes)
    assert_matches(q, k, v, out, lse, ref_out, ref_lse, grad_atol=2e-5)
    # softcap changes the result (the test would notice a missing cap)
    assert (out - ascend_attn.flash_attn_varlen_func(q, k, v, cu_q, cu_k, 300, 300, causal=causal,
                                                     window_size=window, alibi_slopes=slopes)).abs().max() > 1e-3


@pytest.mark.parametrize("softcap", [0.0, 3.0])
def test_s_dmask_signs_are_the_dropout_bits(softcap):
    """flash-attn's convention: S_dmask holds the softmax probabilities, negative where dropped;
    the output equals the float64 reference with exactly those bits."""
    gen = torch.Generator().manual_seed(14)
    b, sq, sk, n, d, p = 2, 40, 70, 4, 16, 0.3
    q = torch.randn(b, sq, n, d, generator=gen, requires_grad=True)
    k = torch.randn(b, sk, 2, d, generator=gen)
    v = torch.randn(b, sk, 2, d, generator=gen)
    slopes = torch.rand(b, n, generator=gen)
    out, lse, s_dmask = ascend_attn.flash_attn_func(q, k, v, dropout_p=p, causal=True, window_size=(30, -1),
                                                    softcap=softcap, alibi_slopes=slopes, return_attn_probs=True)
    assert s_dmask.shape == (b, n, 128, 128) and s_dmask.dtype == q.dtype
    assert torch.all(s_dmask[:, :, sq:] == 0) and torch.all(s_dmask[:, :, :, sk:] == 0)
    kept_total = valid_total = 0
    for i in range(b):
        S = s_dmask[i, :, :sq, :sk].double()
        keep = S >= 0
        ref_out, ref_lse, probs = ref_attention(q[i], k[i], v[i], causal=True, window=(30, -1), slopes=slopes[i],
                                                softcap=softcap, keep=keep, keep_prob=1 - p, return_probs=True)
        torch.testing.assert_close(S.abs(), probs, rtol=0, atol=1e-6)
        torch.testing.assert_close(out[i].double(), ref_out, rtol=0, atol=2e-6)
        torch.testing.assert_close(lse[i].double(), ref_lse, rtol=0, atol=2e-6)
        valid = probs > 0
        kept_total += int((keep & valid).sum())
        valid_total += int(valid.sum())
        grad_ref = torch.autograd.grad(ref_out.sum(), q, retain_graph=True)[0]
        grad = torch.autograd.grad(out[i].sum(), q, retain_graph=True)[0]
        torch.testing.assert_close(grad.double(), grad_ref.double(), rtol=0, atol=2e-5)
    assert abs(1 - kept_total / valid_total - p) < 0.03  # Bernoulli(0.3) drops over ~10k entries


def test_dropout_reproducible_under_manual_seed():
    q, k, v, cu_q, cu_k = packed([20, 9], [20, 12], seed=15)
    runs = []
    for _ in range(2):
        torch.manual_seed(5)
        runs.append(ascend_attn.flash_attn_varlen_func(q, k, v, cu_q, cu_k, 20, 20, dropout_p=0.4))
    assert torch.equal(runs[0], runs[1])
    torch.manual_seed(6)
    assert not torch.equal(runs[0], ascend_attn.flash_attn_varlen_func(q, k, v, cu_q, cu_k, 20, 20, dropout_p=0.4))


@pytest.mark.parametrize("dtype,sq", [(torch.float16, 1), (torch.float32, 3)])
def test_kvcache_leftpad(dtype, sq):
    """cache_leftpad: the valid keys of sequence b are [leftpad[b], cache_seqlens[b] + seqlen_new);
    the new k/v are written at cache_seqlens[b]; causal alignment counts the valid keys only."""
    gen = torch.Generator().manual_seed(16)
    batch, n, nk, d, width = 2, 4, 2, 16, 24
    q = torch.randn(batch, sq, n, d, generator=gen).to(dtype)
    k_new = torch.randn(batch, 2, nk, d, generator=gen).to(dtype)
    v_new = torch.randn(batch, 2, nk, d, generator=gen).to(dtype)
    k_cache = torch.randn(batch, width, nk, d, generator=gen).to(dtype)
    v_cache = torch.randn(batch, width, nk, d, generator=gen).to(dtype)
    base, pad = torch.tensor([9, 15], dtype=torch.int32), torch.tensor([4, 0], dtype=torch.int32)
    keys, values = k_cache.clone(), v_cache.clone()
    out, lse = ascend_attn.flash_attn_with_kvcache(q, k_cache, v_cache, k_new, v_new, cache_seqlens=base,
                                                   cache_leftpad=pad, causal=True, window_size=(6, -1),
                                                   return_softmax_lse=True)
    assert lse.shape == (batch, n, sq)
    for b in range(batch):
        L, P = int(base[b]) + 2, int(pad[b])
        keys[b, base[b]:L], values[b, base[b]:L] = k_new[b], v_new[b]
        assert torch.equal(k_cache[b], keys[b]) and torch.equal(v_cache[b], values[b])
        ref_out, ref_lse = ref_attention(q[b], keys[b, P:L], values[b, P:L], causal=True, window=(6, -1))
        tol = 4e-3 if dtype == torch.float16 else 2e-6
        torch.testing.assert_close(out[b].double(), ref_out, rtol=0, atol=tol)
        torch.testing.assert_close(lse[b].double(), ref_lse, rtol=0, atol=tol)
    # IFA path (fp16 decode) without LSE gives the same output
    if dtype == torch.float16:
        again = ascend_attn.flash_attn_with_kvcache(q, k_cache, v_cache, cache_seqlens=base + 2, cache_leftpad=pad,
                                                    causal=True, window_size=(6, -1))
        torch.testing.assert_close(again, out, rtol=0, atol=1e-3)


@pytest.mark.parametrize("paged", [False, True])
def test_kvcache_validates_everything_before_writing(paged):
    """issue 13: a failing call leaves the caches bit-identical (B > 1; sequence 0 would fit)."""
    gen = torch.Generator().manual_seed(17)
    batch, nk, d, page = 2, 2, 16, 16
    q = torch.randn(batch, 1, 4, d, generator=gen).half()
    k_new = torch.randn(batch, 3, nk, d, generator=gen).half()
    if paged:
        k_cache = torch.randn(5, page, nk, d, generator=gen).half()
        table = torch.tensor([[0, 1], [2, 3]], dtype=torch.int32)  # 32 tokens per sequence
        base = torch.tensor([4, 30], dtype=torch.int32)  # 30 + 3 > 32
        expect, name = RuntimeError, "block_table"
    else:
        k_cache = torch.randn(batch, 32, nk, d, generator=gen).half()
        table, base = None, torch.tensor([4, 30], dtype=torch.int32)
        expect, name = ValueError, "cache_seqlens"
    v_cache = torch.randn_like(k_cache)
    k_before, v_before = k_cache.clone(), v_cache.clone()
    with pytest.raises(expect, match=f"flash_attn_with_kvcache: {name}"):
        ascend_attn.flash_attn_with_kvcache(q, k_cache, v_cache, k_new, k_new, cache_seqlens=base, block_table=table)
    assert torch.equal(k_cache, k_before) and torch.equal(v_cache, v_before)


def _kvcache_args():
    q = torch.randn(2, 1, 4, 16).half()
    cache = torch.randn(2, 8, 2, 16).half()
    return dict(q=q, k_cache=cache, v_cache=cache.clone(), cache_seqlens=torch.tensor([3, 4], dtype=torch.int32))


def _varlen_args():
    q, k, v, cu_q, cu_k = packed([5, 4], [5, 4])
    return dict(q=q, k=k, v=v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=5, max_seqlen_k=5)


def _func_args():
    return dict(q=torch.randn(2, 5, 4, 16), k=torch.randn(2, 6, 2, 16), v=torch.randn(2, 6, 2, 16))


F = ascend_attn
LAYER_ERRORS = [  # (function, arguments, change, the argument the message must name)
    (F.flash_attn_func, _func_args, dict(q=torch.randn(5, 4, 16)), "q"),
    (F.flash_attn_func, _func_args, dict(k=torch.randn(2, 6, 3, 16), v=torch.randn(2, 6, 3, 16)), "k"),
    (F.flash_attn_func, _func_args, dict(k=torch.randn(2, 6, 2, 8)), "k"),
    (F.flash_attn_func, _func_args, dict(k=torch.randn(3, 6, 2, 16), v=torch.randn(3, 6, 2, 16)), "k"),
    (F.flash_attn_func, _func_args, dict(v=torch.randn(2, 6, 2, 16).half()), "v"),
    (F.flash_attn_func, _func_args, dict(v=torch.randn(2, 7, 2, 16)), "v"),
    (F.flash_attn_func, _func_args, dict(q=torch.randint(0, 3, (2, 5, 4, 16))), "q"),
    (F.flash_attn_func, _func_args, dict(softcap="1"), "softcap"),
    (F.flash_attn_func, _func_args, dict(softmax_scale="x"), "softmax_scale"),
    (F.flash_attn_func, _func_args, dict(window_size=torch.tensor([1.0, 2.0])), "window_size"),
    (F.flash_attn_func, _func_args, dict(window_size=(1, 2, 3)), "window_size"),
    (F.flash_attn_func, _func_args, dict(alibi_slopes=torch.ones(3, 4)), "alibi_slopes"),
    (F.flash_attn_func, _func_args, dict(dropout_p=-0.1), "dropout_p"),
    (F.flash_attn_varlen_func, _varlen_args, dict(dropout_p=1.0), "dropout_p"),
    (F.flash_attn_varlen_func, _varlen_args, dict(window_size=(1.5, 0)), "window_size"),
    (F.flash_attn_varlen_func, _varlen_args, dict(alibi_slopes=torch.ones(4, dtype=torch.float64)), "alibi_slopes"),
    (F.flash_attn_varlen_func, _varlen_args, dict(max_seqlen_q=2), "max_seqlen_q"),
    (F.flash_attn_varlen_func, _varlen_args, dict(cu_seqlens_q=torch.tensor([1, 5, 9], dtype=torch.int32)),
     "cu_seqlens_q"),
    (F.flash_attn_varlen_func, _varlen_args, dict(cu_seqlens_k=torch.tensor([0, 5, 12], dtype=torch.int32)),
     "cu_seqlens_k"),
    (F.flash_attn_varlen_func, _varlen_args, dict(cu_seqlens_k=torch.tensor([0, 9], dtype=torch.int32)),
     "cu_seqlens_k"),
    (F.flash_attn_varlen_func, _varlen_args, dict(cu_seqlens_q=torch.tensor([0.0, 5.0, 9.0])), "cu_seqlens_q"),
    (F.flash_attn_varlen_func, _varlen_args, dict(q=torch.randn(2, 9, 4, 16)), "q"),
    (F.flash_attn_varlen_func, _varlen_args, dict(block_table=torch.zeros(2, 1, dtype=torch.int32)), "k"),
    (F.flash_attn_qkvpacked_func, lambda: dict(qkv=torch.randn(2, 5, 2, 4, 16)), {}, "qkv"),
    (F.flash_attn_kvpacked_func, lambda: dict(q=torch.randn(2, 5, 4, 16), kv=torch.randn(2, 6, 2, 3, 16)), {}, "kv"),
    (F.flash_attn_varlen_qkvpacked_func, lambda: dict(qkv=torch.randn(9, 3, 4, 16), cu_seqlens=[0, 5, 10],
                                                       max_seqlen=5), {}, "cu_seqlens"),
    (F.flash_attn_varlen_qkvpacked_func, lambda: dict(qkv=torch.randn(9, 3, 4, 16), cu_seqlens=[0, 5, 9],
                                                       max_seqlen=4), {}, "max_seqlen"),
    (F.flash_attn_varlen_kvpacked_func, lambda: dict(q=torch.randn(9, 4, 16), kv=torch.randn(9, 2, 2, 8),
                                                      cu_seqlens_q=[0, 9], cu_seqlens_k=[0, 9], max_seqlen_q=9,
                                                      max_seqlen_k=9), {}, "kv"),
    (F.flash_attn_with_kvcache, _kvcache_args, dict(q=torch.randn(2, 4, 16).half()), "q"),
    (F.flash_attn_with_kvcache, _kvcache_args, dict(k_cache=torch.randn(2, 8, 3, 16).half()), "k_cache"),
    (F.flash_attn_with_kvcache, _kvcache_args, dict(v_cache=torch.randn(2, 8, 2, 16)), "v_cache"),
    (F.flash_attn_with_kvcache, _kvcache_args, dict(k=torch.randn(2, 1, 2, 16).half()), "v"),
    (F.flash_attn_with_kvcache, _kvcache_args, dict(k=torch.randn(2, 1, 1, 16).half(),
                                                    v=torch.randn(2, 1, 1, 16).half()), "k"),
    (F.flash_attn_with_kvcache, _kvcache_args, dict(cache_seqlens=torch.tensor([3, 4, 5])), "cache_seqlens"),
    (F.flash_attn_with_kvcache, _kvcache_args, dict(cache_seqlens=torch.tensor([3, 9])), "cache_seqlens"),
    (F.flash_attn_with_kvcache, _kvcache_args, dict(cache_seqlens=torch.tensor([3, -1])), "cache_seqlens"),
    (F.flash_attn_with_kvcache, _kvcache_args, dict(cache_batch_idx=torch.tensor([0, 2])), "cache_batch_idx"),
    (F.flash_attn_with_kvcache, _kvcache_args, dict(cache_leftpad=torch.tensor([0, 5])), "cache_leftpad"),
    (F.flash_attn_with_kvcache, _kvcache_args, dict(block_table=torch.zeros(2, 1)), "block_table"),
    (F.flash_attn_with_kvcache, _kvcache_args, dict(block_table=torch.tensor([[0], [7]], dtype=torch.int32)),
     "block_table"),
    (F.flash_attn_with_kvcache, _kvcache_args, dict(block_table=torch.tensor([[0], [1]], dtype=torch.int32),
                                                    cache_batch_idx=torch.tensor([0, 1])), "cache_batch_idx"),
    (F.flash_attn_with_kvcache, _kvcache_args, dict(rotary_cos=torch.randn(4, 4), rotary_sin=torch.randn(4, 4)),
     "rotary_cos"),
    (F.flash_attn_with_kvcache, _kvcache_args, dict(alibi_slopes=torch.ones(2)), "alibi_slopes"),
]


@pytest.mark.parametrize("fn,make,change,arg", LAYER_ERRORS,
                         ids=[f"{e[0].__name__}-{e[3]}-{i}" for i, e in enumerate(LAYER_ERRORS)])
def test_layer_errors_name_the_callers_argument(fn, make, change, arg):
    args = make()
    args.update(change)
    before = {name: t.clone() for name, t in args.items() if isinstance(t, torch.Tensor)}
    with pytest.raises((ValueError, TypeError, RuntimeError)) as info:
        fn(**args)
    assert str(info.value).startswith(f"{fn.__name__}: {arg} only supports"), str(info.value)
    for name, t in before.items():  # user tensors untouched
        assert torch.equal(args[name], t), name


def test_kvcache_softcap_alibi_batch_idx():
    gen = torch.Generator().manual_seed(18)
    q = torch.randn(2, 3, 4, 16, generator=gen)
    k_cache = torch.randn(3, 20, 2, 16, generator=gen)
    v_cache = torch.randn(3, 20, 2, 16, generator=gen)
    slopes = torch.rand(2, 4, generator=gen)
    out = ascend_attn.flash_attn_with_kvcache(q, k_cache, v_cache, cache_seqlens=torch.tensor([12, 20]),
                                              cache_batch_idx=torch.tensor([2, 0]), causal=True, softcap=1.5,
                                              alibi_slopes=slopes)
    for b, (row, length) in enumerate(((2, 12), (0, 20))):
        ref_out, _ = ref_attention(q[b], k_cache[row, :length], v_cache[row, :length], causal=True, softcap=1.5,
                                   slopes=slopes[b])
        torch.testing.assert_close(out[b].double(), ref_out, rtol=0, atol=2e-6)


@pytest.mark.parametrize("path", ["blocks_dropout_probs", "softcap"])
def test_varlen_op_opcheck(path):
    """ascend_attn::flash_attn_varlen_forward: schema, fake kernel and autograd registration (opcheck
    also runs the backward op through AOT dispatch with dynamic shapes)."""
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(18, 4, 16, generator=gen, requires_grad=True)
    k, v = (torch.randn(18, 2, 16, generator=gen, requires_grad=True) for _ in range(2))
    cu = torch.tensor([0, 4, 9, 15])
    probs = path != "softcap"
    args = (q, k, v, cu, cu, 6, 6, 0.25 if probs else 0.0, 0.25, 2, 0, 0.0 if probs else 3.0, None,
            torch.tensor([7]) if probs else None, None, probs, "flash_attn_varlen_func")
    torch.library.opcheck(torch.ops.ascend_attn.flash_attn_varlen_forward.default, args)
