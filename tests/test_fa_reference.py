"""Checks of the float64 FA reference itself against facts that do not depend on it:
hand-computed roundings, torch's bf16 cast, plain softmax attention, finite differences,
the documented sparse_mode examples and the stats layouts (semantics.md §0.5, §2-§6, §9)."""
import numpy as np
import pytest
import torch

from ascend_attn.testing.fa_reference import (
    FLT_MAX, dropout_keep, flash_attention_backward, flash_attention_forward, half_away16,
    keep_mask, pse_bias, round_to, seq_lengths)
from ascend_attn.testing.reference import ntd_to_tnd

C2048 = np.triu(np.ones((2048, 2048), dtype=bool), k=1)
C3072 = np.concatenate([C2048, np.concatenate([np.zeros((1024, 1024), bool),
                                               np.ones((1024, 1024), bool)], axis=1)])


# ---------------------------------------------------------------- rounding

@pytest.mark.parametrize("x, expected", [
    (1 + 2**-11, 1 + 2**-10),                 # tie: RNE would give 1
    (-(1 + 2**-11), -(1 + 2**-10)),
    (1 + 3 * 2**-11, 1 + 2**-9),
    (1 + 5 * 2**-11, 1 + 3 * 2**-10),         # tie: RNE would give 1 + 2^-9
    (1 + 2**-11 - 2**-30, 1.0),               # just below the tie
    (2048 + 1, 2048 + 2),                     # ulp 2 above 2048: tie goes away
    (65504.0, 65504.0),
    (65519.99, 65504.0),
    (65520.0, np.inf),
    (-65520.0, -np.inf),
    (1e10, np.inf),
    (2**-25, 2**-24),                         # subnormal tie with 0
    (-(2**-25), -(2**-24)),
    (2**-25 - 2**-40, 0.0),
    (3 * 2**-25, 2**-23),
    (5 * 2**-25, 3 * 2**-24),                 # RNE would give 2 * 2^-24
    (2**-14 + 2**-25, 2**-14 + 2**-24),       # normal/subnormal border spacing is 2^-24
    (0.0, 0.0),
    (np.inf, np.inf),
])
def test_half_away16_engineered(x, expected):
    assert half_away16(np.array([x]))[0] == expected
    if np.float32(x) == x:                      # same answer from a float32 input
        assert half_away16(np.array([x], dtype=np.float32))[0] == expected


def test_half_away16_nan_and_non_ties_match_rne():
    assert np.isnan(half_away16(np.array([np.nan]))[0])
    rng = np.random.default_rng(0)
    x = rng.standard_normal(5000) * 10.0 ** rng.integers(-7, 5, 5000)
    x = x[np.abs(x) < 65000]
    grid = x.astype(np.float16).astype(np.float64)
    ulp = np.abs(np.nextafter(x.astype(np.float16), np.float16(np.inf)).astype(np.float64) - grid)
    not_tie = np.abs(np.abs(x - grid) - ulp / 2) > 0          # random values are never ties
    np.testing.assert_array_equal(half_away16(x)[not_tie], grid[not_tie])


@pytest.mark.parametrize("x, expected", [
    (1 + 2**-8, 1.0),                         # tie, 1 is even
    (1 + 3 * 2**-8, 1 + 2**-6),               # tie, rounds up to the even neighbour
    (-(1 + 3 * 2**-8), -(1 + 2**-6)),
    (1 + 2**-8 + 2**-20, 1 + 2**-7),
    ((2 - 2**-7) * 2.0**127, (2 - 2**-7) * 2.0**127),  # max finite bf16
    ((2 - 2**-8) * 2.0**127, np.inf),         # tie above max finite (odd) -> overflow
])
def test_bf16_rne_engineered(x, expected):
    assert round_to(np.array([x]), "bfloat16")[0] == expected


def test_bf16_matches_torch_and_keeps_nan():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(10000) * 10.0 ** rng.integers(-30, 30, 10000)).astype(np.float32)
    x[:16] = np.float32(1) + np.arange(16, dtype=np.float32) * np.float32(2**-8)  # ties
    want = torch.from_numpy(x).to(torch.bfloat16).to(torch.float64).numpy()
    np.testing.assert_array_equal(round_to(x, "bfloat16"), want)
    assert np.isnan(round_to(np.array([np.nan]), "bfloat16")[0])
    assert round_to(np.array([1 + 2**-30]), "float32")[0] == 1.0


def test_seq_lengths():
    assert seq_lengths([2, 5, 9]) == [2, 3, 4]
    assert seq_lengths([2, 5, 9, 0, 0]) == [2, 3, 4, 0, 0]
    assert seq_lengths(np.array([2, 4, 4, 6, 8])) == [2, 2, 0, 2, 2]


# ---------------------------------------------------------------- masks

def rows(keep):
    return ["".join("1" if x else "0" for x in r) for r in keep]


def test_sparse_table_doc_examples():
    # mode 7, Sq=2, Skv=6, next=-2 => d <= 2
    assert rows(keep_mask(0, 2, 6, [2], [6], 7, 6, -2, C2048)) == ["111000", "111100"]
    # mode 8, Sq=3, Skv=4, next=1 => d <= 2
    assert rows(keep_mask(0, 3, 4, [3], [4], 8, 4, 1, C2048)) == ["1110", "1111", "1111"]
    # mode 3 bottom-right causal, Sq=2, Sk=5
    assert rows(keep_mask(0, 2, 5, [2], [5], 3, 0, 0, C2048)) == ["11110", "11111"]
    assert rows(keep_mask(0, 2, 5, [2], [5], 2, 0, 0, C2048)) == ["10000", "11000"]


def test_modes_7_8_only_touch_last_first_nonempty_sequence():
    lq, lk = [0, 2, 2, 0], [3, 4, 4, 0]
    # b_last = 2 (sequence 3 is empty): band there, plain bottom-right causal for b = 1
    assert rows(keep_mask(1, 2, 4, lq, lk, 7, 4, -1, C2048)) == ["1110", "1111"]
    assert rows(keep_mask(2, 2, 4, lq, lk, 7, 4, -1, C2048)) == ["1100", "1110"]
    # b_first = 1 (sequence 0 has S1 = 0): d <= 4 - max(2 - 0, 0) = 2; b = 2 top-left causal
    assert rows(keep_mask(1, 2, 4, lq, lk, 8, 4, 0, C2048)) == ["1110", "1111"]
    assert rows(keep_mask(2, 2, 4, lq, lk, 8, 4, 0, C2048)) == ["1000", "1100"]


def test_band_prefix_full_masks_and_no_mask():
    # mode 4, S1=3, S2=5, delta=2, pre=1, next=0 => 1 <= d <= 2
    assert rows(keep_mask(0, 3, 5, [3], [5], 4, 1, 0, C2048)) == ["01100", "00110", "00011"]
    # mode 6, S1=2, S2=4, prefix 3 => d <= 2 or j < 3
    assert rows(keep_mask(0, 2, 4, [2], [4], 6, 0, 0, C3072, [3])) == ["1110", "1111"]
    # no mask => everything kept, whatever the mode says
    assert keep_mask(0, 2, 4, [2], [4], 2, 0, 0, None).all()
    # full masks: local [max S1, max S2] and global [Σ S1, Σ S2] forms
    lq, lk = [1, 2], [2, 3]
    local = np.array([[0, 1, 0], [1, 0, 0]], dtype=np.uint8)
    assert rows(keep_mask(1, 2, 3, lq, lk, 1, 0, 0, local)) == ["101", "011"]
    glob = np.ones((3, 5), dtype=bool)
    glob[1:, 2:] = [[0, 0, 1], [1, 0, 0]]
    assert rows(keep_mask(1, 2, 3, lq, lk, 1, 0, 0, glob)) == ["110", "011"]
    # mode 0 intersects the mask with -pre <= d <= next (origin top-left)
    assert rows(keep_mask(1, 2, 3, lq, lk, 0, 0, 1, np.zeros((2, 3), bool))) == ["110", "011"]


# ---------------------------------------------------------------- pse / dropout indexing

def test_pse_forms():
    lq, lk, n1 = [2, 3], [3, 4], 2
    full = np.arange(n1 * (6 + 12), dtype=np.float64)
    assert (pse_bias(1, 1, 3, 4, lq, lk, n1, full, 1) == full[12 + 12:].reshape(3, 4)).all()
    bcast = np.arange(n1 * 7, dtype=np.float64)
    assert (pse_bias(1, 1, 3, 4, lq, lk, n1, bcast, 0) == np.tile(bcast[6 + 4:], (3, 1))).all()
    slopes = np.array([[0.5, 0.25], [1.0, 2.0]])
    alibi = pse_bias(1, 1, 3, 4, lq, lk, n1, slopes, 2, q_start_idx=[2], kv_start_idx=[0])
    assert alibi[0].tolist() == [-4.0, -2.0, 0.0, -2.0]           # Δ = j - i - 2
    sq = pse_bias(0, 0, 2, 3, lq, lk, n1, np.array([4.0, 1.0]), 3)
    assert sq[1].tolist() == [-4.0, 0.0, -4.0]


def test_pse_alibi_compressed_form():
    s_ref, n1 = 1030, 1
    f = lambda diff: np.sin(0.01 * diff)                            # noqa: E731
    i, j = np.meshgrid(np.arange(s_ref), np.arange(s_ref), indexing="ij")
    toeplitz = f(i - j)
    comp = toeplitz[-1024:][None, None]                             # [1, N1, 1024, S]
    lq = lk = [5, s_ref]
    got = pse_bias(1, 0, s_ref, s_ref, lq, lk, n1, comp, 1)
    ok = (j - i) <= 1023
    np.testing.assert_array_equal(got[ok], toeplitz[ok])
    assert np.isnan(got[~ok]).all()
    np.testing.assert_array_equal(pse_bias(0, 0, 5, 5, lq, lk, n1, comp, 1), toeplitz[:5, :5])


def test_dropout_bit_order():
    lq, lk, n1 = [1, 2], [2, 3], 2
    # element of (b=1, h=1, i=1, j=2): 2*2 + (1*2 + 1)*3 + 2 = 15 -> byte 1, bit 7
    mask = np.zeros(4, np.uint8)
    mask[1] = 0x80
    got = dropout_keep(1, 1, 2, 3, lq, lk, n1, mask)
    want = np.zeros((2, 3))
    want[1, 2] = 1
    np.testing.assert_array_equal(got, want)
    assert not dropout_keep(1, 0, 2, 3, lq, lk, n1, mask).any()


# ---------------------------------------------------------------- forward

def make(rng, lq, lk, n1, n2, d, tail=1):
    t1, t2 = sum(lq) + tail, sum(lk) + tail
    return (rng.standard_normal((t1, n1, d)), rng.standard_normal((t2, n2, d)),
            rng.standard_normal((t2, n2, d)))


def cum(lens):
    return np.cumsum(lens).tolist()


def test_forward_plain_attention():
    rng = np.random.default_rng(2)
    lq, lk, n1, n2, d, scale = [3, 1, 4], [2, 5, 4], 4, 2, 8, 0.3
    q, k, v = make(rng, lq, lk, n1, n2, d)
    out, mx, sm = flash_attention_forward(q, k, v, n1, cum(lq), cum(lk), scale_value=scale,
                                          softmax_out_layout="same_as_input")
    want = np.zeros_like(q)
    kk, vv = np.repeat(k, n1 // n2, axis=1), np.repeat(v, n1 // n2, axis=1)   # GQA expand
    oq = np.concatenate([[0], np.cumsum(lq)])
    ok = np.concatenate([[0], np.cumsum(lk)])
    for b in range(len(lq)):
        qs, ks = slice(oq[b], oq[b + 1]), slice(ok[b], ok[b + 1])
        z = np.einsum("ind,jnd->nij", q[qs], kk[ks]) * scale
        lse = np.log(np.exp(z).sum(-1, keepdims=True))
        want[qs] = np.einsum("nij,jnd->ind", np.exp(z - lse), vv[ks])
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)
    assert (out[sum(lq):] == 0).all() and (mx[sum(lq):] == 0).all()
    assert (mx == mx[..., :1]).all() and (sm == sm[..., :1]).all()       # 8 equal lanes


def test_stats_layouts_and_lse():
    rng = np.random.default_rng(3)
    lq, lk, n1, n2, d, scale = [2, 3], [4, 5], 3, 1, 4, 0.5
    q, k, v = make(rng, lq, lk, n1, n2, d, tail=2)
    pse = rng.standard_normal(n1 * (2 * 4 + 3 * 5))
    kw = dict(pse=pse, atten_mask=C2048, sparse_mode=3, scale_value=scale)
    o1, m_ntd, s_ntd = flash_attention_forward(q, k, v, n1, cum(lq), cum(lk), **kw)
    o2, m_tnd, s_tnd = flash_attention_forward(q, k, v, n1, cum(lq), cum(lk),
                                               softmax_out_layout="same_as_input", **kw)
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(ntd_to_tnd(m_ntd, lq), m_tnd)
    np.testing.assert_array_equal(ntd_to_tnd(s_ntd, lq), s_tnd)
    assert (m_ntd.reshape(-1)[sum(lq) * n1 * 8:] == 0).all()               # NTD flat tail
    assert not np.array_equal(m_ntd, m_tnd)                                 # N1 > 1: layouts differ
    # max + log(sum) = logsumexp of the kept scores (written inline: d <= S2 - S1, add-then-scale)
    oq, ok, off = 0, 0, 0
    for s1, s2 in zip(lq, lk):
        for h in range(n1):
            z = (q[oq:oq + s1, h] @ k[ok:ok + s2, 0].T
                 + pse[off + h * s1 * s2: off + (h + 1) * s1 * s2].reshape(s1, s2)) * scale
            for i in range(s1):
                kept = z[i, :i + (s2 - s1) + 1]
                lse = np.log(np.sum(np.exp(kept)))
                assert np.isclose(m_tnd[oq + i, h, 0] + np.log(s_tnd[oq + i, h, 0]), lse,
                                  rtol=1e-13)
        oq, ok, off = oq + s1, ok + s2, off + n1 * s1 * s2


def test_empty_rows_and_zero_lengths():
    rng = np.random.default_rng(4)
    cq, ck = [2, 2, 5, 0], [3, 5, 5, 0]          # lengths q [2,0,3,0], kv [3,2,0,0]
    q, k, v = make(rng, [2, 0, 3], [3, 2, 0], 2, 1, 4)
    mask = np.zeros((5, 5), bool)                # global form [Σ S1, Σ S2]
    mask[1, :3] = True                           # row 1 of sequence 0 fully masked
    out, mx, sm = flash_attention_forward(q, k, v, 2, cq, ck, atten_mask=mask, sparse_mode=1,
                                          softmax_out_layout="same_as_input")
    empty_rows = [1, 2, 3, 4]                    # masked row + all of sequence 2 (S2 = 0)
    assert (out[empty_rows] == 0).all() and (out[0] != 0).all()
    assert (mx[empty_rows] == -FLT_MAX).all() and (sm[empty_rows] == FLT_MAX).all()


def test_rounded_forward_is_on_the_grid():
    rng = np.random.default_rng(5)
    q, k, v = make(rng, [3], [4], 2, 2, 8)
    ref = flash_attention_forward(q, k, v, 2, [3], [4])[0]
    for dt, tol in (("float16", 2e-3), ("bfloat16", 2e-2)):
        out = flash_attention_forward(q, k, v, 2, [3], [4], round_dtype=dt)[0]
        np.testing.assert_array_equal(round_to(out, dt), out)
        np.testing.assert_allclose(out, ref, rtol=tol, atol=tol)


# ---------------------------------------------------------------- backward vs finite differences

def _cases():
    rng = np.random.default_rng(6)
    lq, lk, n1, n2 = [2, 3], [3, 4], 4, 2
    n_el = n1 * sum(a * b for a, b in zip(lq, lk))
    drop = np.packbits(rng.random(n_el) < 0.8, bitorder="little")
    yield "mode3_pse1_dropout", lq, lk, n1, n2, dict(
        atten_mask=C2048, sparse_mode=3, pse=rng.standard_normal(n_el), pse_type=1,
        drop_mask=drop, keep_prob=0.8, scale_value=0.7)
    yield "mode3_alibi2_dropout_tnd", lq, lk, n1, n2, dict(
        atten_mask=C2048, sparse_mode=3, pse=rng.random((2, n1)), pse_type=2,
        q_start_idx=[1], kv_start_idx=[0], drop_mask=drop, keep_prob=0.8, scale_value=0.7,
        layout="same_as_input")
    yield "band_pse0_bcast", lq, lk, n1, n2, dict(
        atten_mask=C2048, sparse_mode=4, pre_tokens=1, next_tokens=0, pse_type=0,
        pse=rng.standard_normal(n1 * sum(lk)), scale_value=1.3)
    yield "empty_rows_zero_lengths", [2, 0, 3, 0], [3, 2, 0, 0], n1, n2, dict(
        atten_mask=np.eye(5, dtype=bool) | (np.arange(5)[:, None] == 1), sparse_mode=1,
        drop_mask=drop, keep_prob=0.8)


@pytest.mark.parametrize("case", list(_cases()), ids=lambda c: c[0])
def test_backward_matches_finite_differences(case):
    _, lq, lk, n1, n2, kw = case
    kw = dict(kw)
    layout = kw.pop("layout", "")
    rng = np.random.default_rng(7)
    q, k, v = make(rng, [x for x in lq if x], [x for x in lk if x], n1, n2, 3)
    dy = rng.standard_normal(q.shape)
    cq, ck = cum(lq), cum(lk)
    if lq[-1] == 0:                                  # trailing zero-length batches read as 0
        cq = cq[:-1] + [0]
        ck = ck[:-1] + [0]

    def loss(q_, k_, v_):
        return np.sum(flash_attention_forward(q_, k_, v_, n1, cq, ck, **kw)[0] * dy)

    out, mx, sm = flash_attention_forward(q, k, v, n1, cq, ck, softmax_out_layout=layout, **kw)
    grads = flash_attention_backward(q, k, v, dy, n1, cq, ck, mx, sm, out,
                                     softmax_in_layout=layout, **kw)
    eps = 1e-6
    for which, (x, g) in enumerate(zip((q, k, v), grads)):
        assert g.shape == x.shape
        num = np.zeros_like(x)
        for idx in np.ndindex(x.shape):
            xs = [q, k, v]
            plus, minus = x.copy(), x.copy()
            plus[idx] += eps
            minus[idx] -= eps
            xs[which] = plus
            f_plus = loss(*xs)
            xs[which] = minus
            num[idx] = (f_plus - loss(*xs)) / (2 * eps)
        np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-7)
    dq, dk, dv = grads
    assert (dq[sum(lq):] == 0).all() and (dk[sum(lk):] == 0).all() and (dv[sum(lk):] == 0).all()
