"""Numerical edge cases of semantics.md §0.6, §1 "Empty partials", §2, §3, §6, §7, §9 (issue 8).

Each test asserts the documented result: large logits that overflow fp16/bf16 in a naive
computation, fully masked rows (§9a/§9f), one key per row, zero-length sequences and rows past
the last cumulative length (§9c), keep_prob near 0 and at 1 with a drop_mask (§6), softmax
statistics at -FLT_MAX/+FLT_MAX flowing forward -> backward -> RingAttentionUpdate (§1, §9a/b),
and NaN/Inf in data that must never be read (§0.6).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import ascend_attn
from ascend_attn.testing import reference as RR
from ascend_attn.testing.samples import fa_case, ifa_case, rau_arrays

import test_properties as P

FLT_MAX = 3.4028234663852886e38
LOW = ["float16", "bfloat16"]
# FA tests run on both CPU kernel paths (native C++ and eager torch, conftest.cpu_path).
FA_BOTH_PATHS = pytest.mark.usefixtures("cpu_path")


def fa_run(args, kwargs, dy_seed=1, grad=True):
    q, k, v = (x.detach().clone().requires_grad_(grad) for x in args[:3])
    out, smax, ssum = ascend_attn.flash_attention_varlen_score(q, k, v, *args[3:], **kwargs)
    grads = None
    if grad:
        dy = torch.randn(out.shape, generator=torch.Generator().manual_seed(dy_seed)).to(out.dtype)
        out.backward(dy)
        grads = (q.grad, k.grad, v.grad)
    return out.detach(), smax, ssum, grads


def check_fa_against_reference(args, kwargs, dtype, seed=0):
    cum = lambda x: [int(v) for v in (x.tolist() if isinstance(x, torch.Tensor) else x)]
    case = P.Case(P.FA_OP, tuple(args), dict(kwargs),
                  {"dtype": dtype, "grad": True, "seed": seed, "cq": cum(args[4]), "ckv": cum(args[5])})
    P.check_fa_valid(case)


def check_ifa_against_reference(args, kwargs, dtype):
    P.check_ifa_valid(P.Case(P.IFA_OP, tuple(args), dict(kwargs), {"dtype": dtype, "quant": None}))


# ============================================================ large logits (naive overflow)

@FA_BOTH_PATHS
@pytest.mark.parametrize("dtype", LOW)
def test_fa_large_logits_stay_finite_and_match_reference(dtype):
    """|q.k| ~ 1e5: overflows fp16 (max 65504) and exp() of any float format in a naive softmax."""
    args, kwargs = fa_case(dtype, (6, 9), (7, 9), 2, 1, 16, sparse_mode=3, seed=1)
    q, k, v = args[:3]
    big = 80.0
    args = (q * big, k * big, v) + args[3:]
    kwargs["scale_value"] = 1.0
    z = (q.double()[:, 0] * big) @ (k.double()[:, 0] * big).T  # head 0 logits, all pairs
    assert z.abs().max() > 65504  # the naive fp16 logits overflow
    out, smax, ssum, grads = fa_run(args, kwargs)
    for t in (out, smax, ssum, *grads):
        assert torch.isfinite(t.float()).all()
    assert smax.abs().max() > 1e4  # statistics carry the huge max, the sum stays in [1, S2]
    assert float(ssum.max()) <= 9 and float(ssum[smax != 0].min()) >= 1
    check_fa_against_reference(args, kwargs, dtype)


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.usefixtures("cpu_path")
def test_ifa_large_logits_stay_finite_and_match_reference(dtype):
    args, kwargs = ifa_case("BSND", dtype, batch=2, heads_q=4, heads_kv=2, head_dim=16, kv_len=20, seed=2)
    q, k, v = args
    args = (q * 100, k * 100, v)
    kwargs["scale_value"] = 1.0
    assert float(((q.double() * 100) ** 2).sum(-1).max()) > 65504
    got = ascend_attn.incre_flash_attention(*args, **kwargs)
    assert torch.isfinite(got.float()).all()
    check_ifa_against_reference(args, kwargs, dtype)


@pytest.mark.usefixtures("cpu_path")
def test_rau_large_max_difference_is_exact():
    """A partial 1e30 below the other has weight exactly 0 (exp underflows), no NaN/Inf."""
    arrays = {k: torch.from_numpy(v) for k, v in rau_arrays("SBH").items()}
    arrays["prev_softmax_max"] = arrays["prev_softmax_max"] - 1e30
    out, m, s = ascend_attn.ring_attention_update(*(arrays[n] for n in P_NAMES))
    assert torch.equal(out, arrays["cur_attn_out"]) and torch.equal(m, arrays["cur_softmax_max"])
    assert torch.equal(s, arrays["cur_softmax_sum"])


P_NAMES = ("prev_attn_out", "prev_softmax_max", "prev_softmax_sum", "cur_attn_out", "cur_softmax_max",
           "cur_softmax_sum")


# ============================================================ fully masked rows (§9a, §9f)

@FA_BOTH_PATHS
@pytest.mark.parametrize("dtype", ["float32", *LOW])
@pytest.mark.parametrize("inner_precise", [0, 1, 2])
def test_fa_fully_masked_rows(dtype, inner_precise):
    args, kwargs = fa_case(dtype, (4, 3), (5, 6), 2, 2, 8, sparse_mode=1, full_mask=None, tail_rows=0, seed=3)
    mask = torch.zeros(4, 6, dtype=torch.bool)
    mask[1] = True           # row 1 of every sequence: no kept key
    mask[2, :5] = True       # seq 0 (S2=5): row 2 fully masked too; seq 1 (S2=6) keeps column 5
    kwargs.update(atten_mask=mask, inner_precise=inner_precise, softmax_out_layout="same_as_input")
    out, smax, ssum, (dq, dk, dv) = fa_run(args, kwargs)
    empty = [1, 2, 4 + 1]    # token indices of the fully masked rows
    assert torch.all(out[empty] == 0) and torch.all(dq[empty] == 0)
    assert torch.all(smax[empty] == -FLT_MAX) and torch.all(ssum[empty] == FLT_MAX)
    keep = [t for t in range(7) if t not in empty]
    assert torch.all(smax[keep] > -1e30) and torch.all(ssum[keep] >= 1)
    for t in (out, dq, dk, dv):
        assert torch.isfinite(t.float()).all()
    check_fa_against_reference(args, kwargs, dtype)


@FA_BOTH_PATHS
def test_fa_all_rows_masked_gives_zero_gradients():
    args, kwargs = fa_case("float32", (3, 2), (4, 4), 2, 1, 8, sparse_mode=1, full_mask=None, tail_rows=1, seed=4)
    kwargs["atten_mask"] = torch.ones(3, 4, dtype=torch.bool)
    out, smax, ssum, grads = fa_run(args, kwargs)
    assert torch.all(out == 0) and all(torch.all(g == 0) for g in grads)
    rows = smax.reshape(-1)[: 5 * 2 * 8]
    assert torch.all(rows == -FLT_MAX) and torch.all(ssum.reshape(-1)[: 5 * 2 * 8] == FLT_MAX)


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.usefixtures("cpu_path")
def test_ifa_fully_masked_row_is_zero(dtype):
    args, kwargs = ifa_case("BNSD", dtype, mask="B,N,1,S", seed=5)
    kwargs["atten_mask"][1, 3] = True          # batch 1, query head 3: every position masked
    kwargs["atten_mask"][2] = True             # batch 2: all heads
    got = ascend_attn.incre_flash_attention(*args, **kwargs)
    assert torch.all(got[1, 3] == 0) and torch.all(got[2] == 0)
    assert not torch.all(got[1, 2] == 0) and torch.isfinite(got.float()).all()
    check_ifa_against_reference(args, kwargs, dtype)


@pytest.mark.usefixtures("cpu_path")
def test_ifa_fully_masked_row_with_int8_output_is_quant2_of_zero():
    args, kwargs = ifa_case("BSH", "float16", mask="B,S", seed=6)
    kwargs["atten_mask"][0] = True
    kwargs["quant_scale2"], kwargs["quant_offset2"] = torch.tensor([20.0]), torch.tensor([3.0])
    got = ascend_attn.incre_flash_attention(*args, **kwargs)
    assert got.dtype == torch.int8 and torch.all(got[0] == 3)


# ============================================================ one key per row

@FA_BOTH_PATHS
@pytest.mark.parametrize("dtype", ["float32", *LOW])
def test_fa_one_key_per_row_returns_value_row(dtype):
    args, kwargs = fa_case(dtype, (3, 1, 2), (1, 1, 1), 2, 2, 16, sparse_mode=1, full_mask=None, tail_rows=0, seed=7)
    kwargs["softmax_out_layout"] = "same_as_input"
    out, smax, ssum, grads = fa_run(args, kwargs)
    v = args[2]
    assert torch.equal(out, v[[0, 0, 0, 1, 2, 2]])         # softmax weight exactly 1
    assert torch.all(ssum == 1)
    z = (args[0].float() * args[1][[0, 0, 0, 1, 2, 2]].float()).sum(-1) * kwargs["scale_value"]
    torch.testing.assert_close(smax[..., 0], z, rtol=1e-6, atol=1e-6)
    # P = 1 and O = V, so dZ = P * (dO.V - dO.O) = 0 up to fp32 rounding of two differently ordered sums
    assert float(grads[0].float().abs().max()) < 1e-5 and float(grads[1].float().abs().max()) < 1e-5
    check_fa_against_reference(args, kwargs, dtype)


@pytest.mark.usefixtures("cpu_path")
def test_ifa_one_key_returns_value_row():
    args, kwargs = ifa_case("BSH", "float16", kv_len=6, lengths=[1, 1, 1], seed=8)
    got = ascend_attn.incre_flash_attention(*args, **kwargs)
    v = args[2][:, :1].reshape(3, 1, 2, 32).repeat_interleave(4, dim=2).reshape(3, 1, 256)  # GQA 8 -> 2
    assert torch.equal(got, v)


# ============================================================ zero-length sequences, tail rows (§9c)

@FA_BOTH_PATHS
@pytest.mark.parametrize("layout", ["", "same_as_input"])
def test_fa_zero_length_sequences_and_tail_rows(layout):
    # seq 0: S1=3,S2=4; seq 1: S1=0 (its kv rows 4,5 get no gradient); seq 2: S2=0 -> empty rows;
    # seq 3 switched off by a trailing zero; then 2 tail rows in q and kv
    s_q, s_kv = [3, 0, 2], [4, 2, 0]
    args, kwargs = fa_case("float32", s_q, s_kv, 2, 1, 8, sparse_mode=0, full_mask=None, tail_rows=2, seed=9,
                           softmax_layout=layout)
    q, k, v, n, cq, ckv = args
    args = (q, k, v, n, cq + [0], ckv + [0])
    out, smax, ssum, (dq, dk, dv) = fa_run(args, kwargs)
    assert out.shape == (7, 2, 8)
    assert torch.all(out[3:5] == 0) and torch.all(dq[3:5] == 0)          # S2 = 0: empty rows
    if layout == "same_as_input":
        assert torch.all(smax[3:5] == -FLT_MAX) and torch.all(ssum[3:5] == FLT_MAX)
    assert torch.all(dk[4:6] == 0) and torch.all(dv[4:6] == 0)          # kv of the S1 = 0 sequence
    assert torch.all(out[5:] == 0) and torch.all(dq[5:] == 0)           # tail rows of q
    assert torch.all(dk[6:] == 0) and torch.all(dv[6:] == 0)            # tail rows of kv
    assert torch.all(smax.reshape(-1)[5 * 2 * 8:] == 0) and torch.all(ssum.reshape(-1)[5 * 2 * 8:] == 0)
    check_fa_against_reference(args, kwargs, "float32")


@FA_BOTH_PATHS
def test_fa_all_sequences_empty_in_q():
    """Σ S1 = 0 but tensors have rows: every output and gradient is 0, nothing fails."""
    args, kwargs = fa_case("float16", (0, 0), (3, 2), 2, 2, 8, sparse_mode=0, full_mask=None, tail_rows=2, seed=10)
    out, smax, ssum, grads = fa_run(args, kwargs)
    assert torch.all(out == 0) and torch.all(smax == 0) and torch.all(ssum == 0)
    assert all(torch.all(g == 0) for g in grads)


@pytest.mark.usefixtures("cpu_path")
def test_ifa_zero_lengths_give_zero_output():
    args, kwargs = ifa_case("BSND", "bfloat16", lengths=[0, 5, 0], seed=11)
    got = ascend_attn.incre_flash_attention(*args, **kwargs)
    assert torch.all(got[0] == 0) and torch.all(got[2] == 0) and not torch.all(got[1] == 0)
    check_ifa_against_reference(args, kwargs, "bfloat16")


@pytest.mark.usefixtures("cpu_path")
def test_rau_zero_length_sequences_in_tnd():
    arrays = rau_arrays("TND", seq_lens=(0, 3, 0, 2), heads=2, head_dim=64)
    lens = np.diff(arrays["actual_seq_qlen"])
    for n in P_NAMES[1:3] + P_NAMES[4:6]:
        arrays[n] = RR.tnd_to_ntd(arrays[n], lens)
    got = ascend_attn.ring_attention_update(*(torch.from_numpy(arrays[n]) for n in P_NAMES),
                                            actual_seq_qlen=arrays["actual_seq_qlen"], input_layout="TND")
    want = RR.ring_attention_update(*(arrays[n] for n in P_NAMES), arrays["actual_seq_qlen"], "TND", "")
    np.testing.assert_allclose(got[0].numpy(), want[0], rtol=1e-5, atol=1e-6)


# ============================================================ dropout edges (§6)

@FA_BOTH_PATHS
def test_keep_prob_near_zero_with_mask_matches_reference():
    args, kwargs = fa_case("float32", (4, 5), (6, 5), 2, 1, 8, sparse_mode=0, full_mask=None, dropout=True, seed=12)
    kwargs["keep_prob"] = 1e-3
    out, smax, ssum, grads = fa_run(args, kwargs)
    for t in (out, *grads):
        assert torch.isfinite(t).all()
    # kept elements are scaled by 1/keep_prob = 1000: outputs grow accordingly
    assert float(out.abs().max()) > 10
    check_fa_against_reference(args, kwargs, "float32")


@FA_BOTH_PATHS
@pytest.mark.parametrize("dtype", LOW)
def test_keep_prob_near_zero_low_precision(dtype):
    args, kwargs = fa_case(dtype, (4, 5), (6, 5), 2, 1, 8, sparse_mode=3, dropout=True, seed=13)
    kwargs["keep_prob"] = 1e-3
    check_fa_against_reference(args, kwargs, dtype)


@FA_BOTH_PATHS
def test_keep_prob_one_with_drop_mask_still_drops():
    args, kwargs = fa_case("float32", (4, 5), (6, 5), 2, 1, 8, sparse_mode=1, full_mask=None, dropout=True, seed=14)
    kwargs["keep_prob"] = 1.0
    dropped, *_ = fa_run(args, kwargs, grad=False)
    plain, *_ = fa_run(args, {k: v for k, v in kwargs.items() if k not in ("drop_mask", "keep_prob")}, grad=False)
    assert not torch.allclose(dropped, plain)          # active whenever a drop_mask is given
    all_keep = dict(kwargs, drop_mask=torch.full_like(kwargs["drop_mask"], 255))
    kept, *_ = fa_run(args, all_keep, grad=False)
    torch.testing.assert_close(kept, plain, rtol=0, atol=1e-6)
    check_fa_against_reference(args, kwargs, "float32")


@FA_BOTH_PATHS
def test_drop_mask_all_zero_gives_zero_output_but_normal_statistics():
    args, kwargs = fa_case("float32", (4, 5), (6, 5), 2, 1, 8, sparse_mode=1, full_mask=None, dropout=True,
                           tail_rows=0, seed=15)
    kwargs["drop_mask"] = torch.zeros_like(kwargs["drop_mask"])
    out, smax, ssum, grads = fa_run(args, kwargs)
    plain = fa_run(args, {k: v for k, v in kwargs.items() if k not in ("drop_mask", "keep_prob")}, grad=False)
    assert torch.all(out == 0) and torch.all(grads[2] == 0)     # dv = P_dropped^T dy = 0
    assert torch.equal(smax, plain[1]) and torch.equal(ssum, plain[2])  # undropped statistics


# ============================================================ ±FLT_MAX statistics: fwd -> grad -> RAU

def empty_row_partial(dtype="float32"):
    """FA forward with TND stats where sequence 1 has no key (S2 = 0): rows 3..4 are empty."""
    args, kwargs = fa_case(dtype, (3, 2), (4, 0), 2, 2, 64, sparse_mode=0, full_mask=None, tail_rows=0, seed=16,
                           softmax_layout="same_as_input")
    out, smax, ssum = ascend_attn.flash_attention_varlen_score(*args, **kwargs)
    return args, kwargs, out, smax, ssum


@FA_BOTH_PATHS
def test_empty_row_statistics_through_the_grad_op():
    args, kwargs, out, smax, ssum = empty_row_partial()
    assert torch.all(smax[3:] == -FLT_MAX) and torch.all(ssum[3:] == FLT_MAX) and torch.all(out[3:] == 0)
    layout = kwargs.pop("softmax_out_layout")
    dy = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    dq, dk, dv, dpse = ascend_attn.flash_attention_unpadding_score_grad(
        *args[:3], dy, *args[3:], smax, ssum, out, softmax_in_layout=layout, **kwargs)
    assert dpse.numel() == 0
    assert torch.all(dq[3:] == 0) and torch.isfinite(dq).all() and torch.isfinite(dk).all() and torch.isfinite(dv).all()
    assert not torch.all(dq[:3] == 0)


def _rau(prev, cur, layout="TND"):
    (po, pm, ps), (co, cm, cs) = prev, cur
    t = po.shape[0]
    return ascend_attn.ring_attention_update(po, pm, ps, co, cm, cs, actual_seq_qlen=[0, t], input_layout="TND",
                                             input_softmax_layout="TND")


@pytest.mark.usefixtures("cpu_path")
def test_rau_one_empty_partial_merges_neutrally():
    """§1: FA's empty-row stats (-FLT_MAX, +FLT_MAX) give weight exactly 0 to that side."""
    _, _, out, smax, ssum = empty_row_partial()
    g = torch.Generator().manual_seed(4)
    other = (torch.randn(out.shape, generator=g), torch.randn(smax.shape[:2], generator=g)[..., None].expand(-1, -1, 8).contiguous(),
             (torch.rand(smax.shape[:2], generator=g) * 5 + 1)[..., None].expand(-1, -1, 8).contiguous())
    for first, second in (((out, smax, ssum), other), (other, (out, smax, ssum))):
        o, m, s = _rau(first, second)
        assert torch.isfinite(o).all() and torch.isfinite(s).all()
        assert torch.equal(o[3:], other[0][3:])          # only the non-empty side contributes
        assert torch.equal(m[3:], other[1][3:]) and torch.equal(s[3:], other[2][3:])


@pytest.mark.usefixtures("cpu_path")
def test_rau_two_empty_partials_give_zero_out_and_infinite_sum():
    _, _, out, smax, ssum = empty_row_partial()
    o, m, s = _rau((out, smax, ssum), (out, smax, ssum))
    assert torch.all(o[3:] == 0) and torch.all(m[3:] == -FLT_MAX) and torch.all(s[3:] == float("inf"))
    # ... and merging that result with a non-empty partial is inf * 0 = NaN (§1), as specified
    g = torch.Generator().manual_seed(5)
    other = (torch.randn(out.shape, generator=g), torch.zeros(smax.shape), torch.ones(ssum.shape))
    o2, m2, s2 = _rau((o, m, s), other)
    assert torch.isnan(s2[3:]).all() and torch.isnan(o2[3:]).all()
    assert torch.isfinite(o2[:3]).all()


@pytest.mark.usefixtures("cpu_path")
def test_rau_both_sums_zero_is_nan():
    """§9b: the kernel formula verbatim, both sums 0 -> 0/0."""
    t = lambda *s: torch.zeros(*s)
    o, m, s = ascend_attn.ring_attention_update(torch.ones(2, 1, 64), t(2, 1, 8), t(2, 1, 8), torch.ones(2, 1, 64),
                                                t(2, 1, 8), t(2, 1, 8), actual_seq_qlen=[0, 2], input_layout="TND")
    assert torch.isnan(o).all() and torch.all(s == 0) and torch.all(m == 0)


@FA_BOTH_PATHS
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_two_fa_partials_merged_by_rau_equal_full_attention(dtype):
    """Ring step: keys split in two halves (the second half empty for sequence 1) -> RAU == full FA."""
    gen = torch.Generator().manual_seed(17)
    tdt = getattr(torch, dtype)
    s_q, s_kv_a, s_kv_b = [3, 2], [4, 3], [2, 0]
    q = torch.randn(5, 2, 64, generator=gen).to(tdt)
    ka, va = (torch.randn(7, 2, 64, generator=gen).to(tdt) for _ in range(2))
    kb, vb = (torch.randn(2, 2, 64, generator=gen).to(tdt) for _ in range(2))
    cum = lambda x: list(np.cumsum(x).tolist())
    kw = {"scale_value": 0.125}
    part_a = ascend_attn.flash_attention_varlen_score(q, ka, va, 2, cum(s_q), cum(s_kv_a), **kw)
    part_b = ascend_attn.flash_attention_varlen_score(q, kb, vb, 2, cum(s_q), cum(s_kv_b), **kw)
    assert torch.all(part_b[1].reshape(-1)[3 * 2 * 8:] == -FLT_MAX)   # seq 1 rows empty in part b (NTD)
    merged = ascend_attn.ring_attention_update(*part_a, *part_b, actual_seq_qlen=[0] + cum(s_q), input_layout="TND")
    k = torch.cat([ka[:4], kb[:2], ka[4:]])
    v = torch.cat([va[:4], vb[:2], va[4:]])
    full = ascend_attn.flash_attention_varlen_score(q, k, v, 2, cum(s_q), cum([6, 3]), **kw)
    tol = dict(rtol=0, atol=1e-5) if dtype == "float32" else dict(rtol=0, atol=4e-3)
    torch.testing.assert_close(merged[0].float(), full[0].float(), **tol)
    torch.testing.assert_close(merged[1], full[1], rtol=1e-6, atol=1e-6)  # logits of other matmul shapes
    torch.testing.assert_close(merged[2], full[2], rtol=1e-5, atol=0)


# ============================================================ NaN / Inf where nothing may be read (§0.6)

@FA_BOTH_PATHS
@pytest.mark.parametrize("poison", [float("nan"), float("inf")])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fa_poisoned_tail_rows_are_never_read(poison, dtype):
    args, kwargs = fa_case(dtype, (3, 0, 4), (4, 2, 5), 2, 1, 8, sparse_mode=3, tail_rows=3, seed=18)
    clean_out, clean_max, clean_sum, clean_grads = fa_run(args, kwargs)
    q, k, v = (x.clone() for x in args[:3])
    q[7:], k[11:], v[11:] = poison, poison, poison
    dirty = (q, k, v) + args[3:]
    out, smax, ssum, grads = fa_run(dirty, kwargs)
    assert torch.equal(out, clean_out) and torch.equal(smax, clean_max) and torch.equal(ssum, clean_sum)
    for g, c in zip(grads, clean_grads):
        assert torch.equal(g, c)


@FA_BOTH_PATHS
def test_fa_grad_poisoned_dy_stats_and_attention_in_tails_are_never_read():
    args, kwargs = fa_case("float16", (3, 4), (4, 5), 2, 1, 8, sparse_mode=3, tail_rows=2, seed=19,
                           softmax_layout="same_as_input")
    out, smax, ssum = ascend_attn.flash_attention_varlen_score(*args, **kwargs)
    layout = kwargs.pop("softmax_out_layout")
    dy = torch.randn(out.shape, generator=torch.Generator().manual_seed(5)).half()
    call = lambda d, m, s, o: ascend_attn.flash_attention_unpadding_score_grad(
        *args[:3], d, *args[3:], m, s, o, softmax_in_layout=layout, **kwargs)
    clean = call(dy, smax, ssum, out)
    d2, m2, s2, o2 = dy.clone(), smax.clone(), ssum.clone(), out.clone()
    d2[7:], m2[7:], s2[7:], o2[7:] = float("nan"), float("nan"), float("inf"), float("nan")
    dirty = call(d2, m2, s2, o2)
    for a, b in zip(clean[:3], dirty[:3]):
        assert torch.equal(a, b)


@pytest.mark.parametrize("poison", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.usefixtures("cpu_path")
def test_ifa_poisoned_positions_beyond_lengths_mask_and_pse_columns(poison):
    args, kwargs = ifa_case("BSND", "float16", kv_len=40, lengths=[10, 0, 33], mask="B,1,1,S", pse=True, seed=20)
    clean = ascend_attn.incre_flash_attention(*args, **kwargs)
    q, k, v = (x.clone() for x in args)
    pse = kwargs["pse_shift"].clone()
    for b, length in enumerate(kwargs["actual_seq_lengths"]):
        k[b, length:], v[b, length:], pse[b, :, :, length:] = poison, poison, poison
    got = ascend_attn.incre_flash_attention(q, k, v, **dict(kwargs, pse_shift=pse))
    assert torch.equal(got, clean)


@pytest.mark.usefixtures("cpu_path")
def test_ifa_poisoned_left_padding_is_never_read():
    args, kwargs = ifa_case("BSH", "bfloat16", kv_len=30, lengths=[10, 25, 3], seed=21)
    kwargs["kv_padding_size"] = torch.tensor([4])
    clean = ascend_attn.incre_flash_attention(*args, **kwargs)
    q, k, v = (x.clone() for x in args)
    for b, length in enumerate(kwargs["actual_seq_lengths"]):
        start, end = 30 - 4 - length, 30 - 4
        k[b, :start], v[b, :start] = float("nan"), float("nan")
        k[b, end:], v[b, end:] = float("inf"), float("nan")
    assert torch.equal(ascend_attn.incre_flash_attention(q, k, v, **kwargs), clean)


@pytest.mark.usefixtures("cpu_path")
def test_ifa_poisoned_unreferenced_pages_are_never_read():
    """ifa_case fills every unused page with NaN; also poison the tail of each last used page."""
    args, kwargs = ifa_case("BNSD", "float16", kv_form="paged", paged_layout="BNSD", kv_len=48, lengths=[33, 1, 0],
                            seed=22)
    clean = ascend_attn.incre_flash_attention(*args, **kwargs)
    q, k, v = (x.clone() for x in args)
    table, bs = kwargs["block_table"], kwargs["block_size"]
    for b, length in enumerate(kwargs["actual_seq_lengths"]):
        if length:
            blk = int(table[b, (length - 1) // bs])
            k[blk, :, (length - 1) % bs + 1:], v[blk, :, (length - 1) % bs + 1:] = float("inf"), float("nan")
    got = ascend_attn.incre_flash_attention(q, k, v, **kwargs)
    assert torch.equal(got, clean) and torch.isfinite(got.float()).all()
