"""Checks of the IncreFlashAttention numpy reference against facts that do not depend on it:
hand-built dequant words, hand-derived roundings, plain softmax attention written inline, and
equivalences between input forms (tensor list, paged cache, left padding, antiquant)
(semantics.md §0.5, §7, §9 d/e/f/q/r)."""
import numpy as np
import pytest
import torch

from ascend_attn.testing.fa_reference import half_away16
from ascend_attn.testing.ifa_reference import (
    dequant_value, fp19, incre_flash_attention, quant2, trans_quant_param)

FLAG = 1 << 46
LAYOUTS = ("BSH", "BSND", "BNSD")


def f32_bits(bits):
    return np.array([bits], dtype=np.uint32).view(np.float32)


# ---------------------------------------------------------------- trans_quant_param / fp19

def test_trans_quant_param_scale_one():
    w = trans_quant_param(np.array([1.0], dtype=np.float32))
    assert w.dtype == np.int64 and w.shape == (1,)
    assert int(w[0]) == 0x3F800000 | FLAG


def test_trans_quant_param_truncates_low_mantissa_bits():
    w = trans_quant_param(f32_bits(0x3F801FFF))              # 13 low bits set: all dropped
    assert int(w[0]) == 0x3F800000 | FLAG
    w = trans_quant_param(f32_bits(0x3F803FFF))              # bit 13 kept
    assert int(w[0]) == 0x3F802000 | FLAG
    w = trans_quant_param(np.array([-2.0], dtype=np.float32))  # sign bit stays in bits 0-31
    assert int(w[0]) == 0xC0000000 | FLAG


@pytest.mark.parametrize("offset, field", [
    (0.0, 0), (1.0, 1), (-1.0, 0x1FF), (255.0, 255), (300.0, 255), (-256.0, 0x100),
    (-300.0, 0x100), (2.5, 2), (3.5, 4), (-2.5, 0x1FE), (0.4, 0), (-0.6, 0x1FF)])
def test_trans_quant_param_offset_field(offset, field):
    w = trans_quant_param(np.array([1.0], np.float32), np.array([offset], np.float32))
    assert int(w[0]) == 0x3F800000 | FLAG | (field << 37)


def test_trans_quant_param_broadcast_and_scalar():
    w = trans_quant_param(np.array([1.0, 2.0, 0.5], np.float32), np.array([-1.0], np.float32))
    assert w.shape == (3,)
    assert [int(x) for x in w] == [b | FLAG | (0x1FF << 37)
                                   for b in (0x3F800000, 0x40000000, 0x3F000000)]
    assert trans_quant_param(1.0).shape == ()
    assert int(trans_quant_param(1.0)) == 0x3F800000 | FLAG


def test_fp19_truncates_toward_zero():
    assert fp19(np.float32(1 + 2**-10)) == 1 + 2**-10          # 10 mantissa bits kept
    assert fp19(np.float32(1 + 2**-11)) == 1.0
    assert fp19(np.float32(1 + 2**-10 + 2**-11 + 2**-23)) == 1 + 2**-10   # no rounding up
    assert fp19(np.float32(-(1 + 2**-11))) == -1.0
    np.testing.assert_array_equal(fp19(np.array([0.0, 2.0**-7, 3.0], np.float32)),
                                  [0.0, 2.0**-7, 3.0])


def test_dequant_value_float_and_words_agree():
    x = f32_bits(0x3E99999A)                                  # 0.3f
    expected = float(f32_bits(0x3E998000)[0])
    assert dequant_value(x) == expected
    w = trans_quant_param(x)
    assert dequant_value(w) == expected                       # int64 word
    assert dequant_value(w.view(np.uint64)) == expected       # uint64 word
    raw = np.array([0x3E99999A], dtype=np.int64)              # raw bits, no flag: truncated too
    assert dequant_value(raw) == expected


# ---------------------------------------------------------------- quant2

def _pt(o, scale=1.0, offset=None):
    off = None if offset is None else np.array([offset], np.float32)
    return quant2(np.array(o, dtype=np.float64).reshape(-1, 1, 1),
                  np.array([scale], np.float32), off).reshape(-1)


def _pc(o, scale=1.0, offset=None):
    """per-channel with Nq=1, D=2 (two channels of equal scale); returns channel 0."""
    o = np.array(o, dtype=np.float64).reshape(-1, 1, 1).repeat(2, axis=2)
    sc = np.full(2, scale, np.float32)
    off = None if offset is None else np.full(2, offset, np.float32)
    return quant2(o, sc, off)[:, 0, 0]


def test_quant2_per_tensor_half_even():
    np.testing.assert_array_equal(_pt([2.5, 3.5, -2.5, 0.5, 1.5, -3.5, 2.4, 2.6]),
                                  [2, 4, -2, 0, 2, -4, 2, 3])
    assert _pt([100.49])[0] == 100                           # fp16 100.5, then half-even
    assert _pt([1.0], 2.0, 0.5)[0] == 2                      # 1*2 + 0.5 = 2.5 -> 2


def test_quant2_per_tensor_fp16_arithmetic():
    # o and scale are rounded to fp16 first: 3.4995 -> 3.5 -> 4 (fp32 arithmetic would give 3)
    assert _pt([3.4995])[0] == 4
    assert _pt([1.0], 2.4995)[0] == 2                        # fp16(2.4995) = 2.5 -> 2 (even)
    assert _pt([1 + 2**-11 + 2**-20], 64.0)[0] == 64          # fp16(o) = 1 + 2^-10; 64.0625
    # y = 0.75 * 2 = 1.5 is exact; offset 1e-4 in fp16 is swallowed by fp16(1.5 + 1e-4) = 1.5
    assert _pt([0.75], 2.0, 1e-4)[0] == 2                    # tie 1.5 -> 2 (even)
    assert _pt([1.25], 2.0, 1e-4)[0] == 2                    # 2.5 + tiny -> fp16 2.5 -> 2


def test_quant2_per_channel_half_away():
    np.testing.assert_array_equal(_pc([2.5, -2.5, 3.5, 0.5, 2.4, -0.5]),
                                  [3, -3, 4, 1, 2, -1])
    assert _pc([100.49])[0] == 101                           # spec: 100.49 -> fp16 100.5 -> 101
    assert _pc([1.0], 2.0, 0.5)[0] == 3                      # offset after scaling


@pytest.mark.parametrize("mode", [_pt, _pc])
def test_quant2_saturation_and_nan(mode):
    np.testing.assert_array_equal(mode([1000.0, -1000.0, 127.4, -128.4, np.inf, -np.inf,
                                        np.nan, 1e30]),
                                  [127, -128, 127, -128, 127, -128, 0, 127])


def test_quant2_channel_index_and_shapes():
    nq, d = 2, 3
    sc = (np.arange(nq * d, dtype=np.float32) + 1.0)           # channel c = h*D + e
    o = np.ones((4, nq, d))
    expected = np.broadcast_to(sc.reshape(nq, d), o.shape)
    for shape in [(nq * d,), (1, nq * d), (1, 1, nq * d), (nq, d), (nq, 1, d), (1, nq, d),
                  (1, nq, 1, d), (1, 1, nq, d)]:
        np.testing.assert_array_equal(quant2(o, sc.reshape(shape)), expected)
    # a BSH row [.., Nq*D] with heads_q / head_dim
    flat = quant2(np.ones((4, 1, nq * d)), sc, head_dim=d, heads_q=nq)
    assert flat.shape == (4, 1, nq * d)
    np.testing.assert_array_equal(flat.reshape(4, nq, d), expected)


# ---------------------------------------------------------------- inline attention helpers

def plain_attention(q, k, v, scale, ranges=None, bias=None, masked=None):
    """q (B,Nq,D), k/v (B,Nkv,S,D); softmax over positions in ranges[b] not masked[b,h]."""
    b_, nq, d = q.shape
    nkv, s = k.shape[1], k.shape[2]
    k = np.repeat(k, nq // nkv, axis=1)
    v = np.repeat(v, nq // nkv, axis=1)
    out = np.zeros((b_, nq, d))
    for b in range(b_):
        lo, hi = (0, s) if ranges is None else ranges[b]
        for h in range(nq):
            pos = [j for j in range(lo, hi) if masked is None or not masked[b, h, j]]
            if not pos:
                continue
            z = np.array([q[b, h] @ k[b, h, j] * scale for j in pos])
            if bias is not None:
                z = z + bias[b, h, pos]
            w = np.exp(z - z.max())
            out[b, h] = (w / w.sum()) @ v[b, h, pos]
    return out


def to_layout(q, k, v, layout):
    """canonical q (B,Nq,D), k/v (B,Nkv,S,D) -> arrays in layout."""
    b, nq, d = q.shape
    if layout == "BSH":
        cv = lambda x: x.transpose(0, 2, 1, 3).reshape(x.shape[0], x.shape[2], -1)  # noqa: E731
        return q.reshape(b, 1, nq * d), cv(k), cv(v)
    if layout == "BSND":
        return q[:, None], k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
    return q[:, :, None], k, v


def rand_qkv(rng, b=2, nq=4, nkv=2, s=7, d=8):
    return (rng.standard_normal((b, nq, d)), rng.standard_normal((b, nkv, s, d)),
            rng.standard_normal((b, nkv, s, d)))


def ifa(q, k, v, layout, nq, nkv, **kw):
    """call the reference with canonical arrays, return (B,Nq,D)."""
    ql, kl, vl = to_layout(q, k, v, layout)
    out = incre_flash_attention(ql, kl, vl, num_heads=nq, num_key_value_heads=nkv,
                                input_layout=layout, **kw)
    assert out.shape == ql.shape
    return out.reshape(q.shape)


# ---------------------------------------------------------------- non-quant path

@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("nq, nkv", [(4, 2), (4, 4), (4, 1)])
def test_nonquant_matches_plain_attention(layout, nq, nkv):
    rng = np.random.default_rng(1)
    q, k, v = rand_qkv(rng, nq=nq, nkv=nkv)
    got = ifa(q, k, v, layout, nq, nkv, scale_value=0.35)
    np.testing.assert_allclose(got, plain_attention(q, k, v, 0.35), rtol=1e-12, atol=1e-13)


def test_nonquant_default_num_kv_heads():
    rng = np.random.default_rng(2)
    q, k, v = rand_qkv(rng, nq=3, nkv=3)
    ql, kl, vl = to_layout(q, k, v, "BSH")
    got = incre_flash_attention(ql, kl, vl, num_heads=3, scale_value=0.5)
    np.testing.assert_allclose(got.reshape(q.shape), plain_attention(q, k, v, 0.5), rtol=1e-12)


def test_round_dtype_output_on_grid_and_close():
    rng = np.random.default_rng(3)
    q, k, v = (x.astype(np.float16).astype(np.float64) for x in rand_qkv(rng))
    exact = plain_attention(q, k, v, 0.3)
    for dt, tdt, tol in [("float16", torch.float16, 2e-3), ("bfloat16", torch.bfloat16, 2e-2)]:
        got = ifa(q, k, v, "BNSD", 4, 2, scale_value=0.3, round_dtype=dt)
        on_grid = torch.from_numpy(got).to(tdt).double().numpy()
        np.testing.assert_array_equal(got, on_grid)
        np.testing.assert_allclose(got, exact, rtol=tol, atol=tol)


def test_round_dtype_rounds_p_before_v():
    # one key with weight 1 and one with weight exp(-x): rounding of P is visible exactly
    q = np.array([[[1.0]]])
    k = np.array([[[[0.0], [-0.1]]]])                        # s = [0, -0.1]
    v = np.array([[[[0.0], [1.0]]]])
    e1 = np.exp(-0.1)
    got = incre_flash_attention(q[:, :, None], k, v, num_heads=1, input_layout="BNSD",
                                round_dtype="float16")
    p1 = half_away16(np.array([e1]))[0]
    assert got.reshape(-1)[0] == half_away16(np.array([p1 / (1 + e1)]))[0]


def test_mask_and_pse_match_plain_attention():
    rng = np.random.default_rng(4)
    q, k, v = rand_qkv(rng, b=2, nq=4, nkv=2, s=9)
    sm = 11                                                   # wider than S: extra columns unused
    row = rng.random((2, sm)) < 0.4
    row[:, 0] = False
    pse = rng.standard_normal((2, 4, 1, sm))
    masked = np.broadcast_to(row[:, None, :9], (2, 4, 9))
    expected = plain_attention(q, k, v, 0.4, bias=pse[:, :, 0, :9], masked=masked)
    for mask in [row, row[:, None], row[:, None, None],
                 np.broadcast_to(row[:, None, None], (2, 4, 1, sm)).copy(),
                 row.astype(np.uint8), row.astype(np.int8)]:
        got = ifa(q, k, v, "BSND", 4, 2, scale_value=0.4, atten_mask=mask, pse_shift=pse)
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-13)


def test_per_head_mask_and_broadcast_pse():
    rng = np.random.default_rng(5)
    q, k, v = rand_qkv(rng, b=2, nq=4, nkv=2, s=6)
    mask1 = rng.random((1, 4, 1, 6)) < 0.5
    mask1[0, :, 0, 2] = False
    pse1 = rng.standard_normal((1, 4, 1, 6))
    masked = np.broadcast_to(mask1[:, :, 0], (2, 4, 6))
    bias = np.broadcast_to(pse1[:, :, 0], (2, 4, 6))
    expected = plain_attention(q, k, v, 1.0, bias=bias, masked=masked)
    got = ifa(q, k, v, "BNSD", 4, 2, atten_mask=mask1, pse_shift=pse1)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-13)


def test_all_masked_row_is_zero_and_quant2_zero():
    rng = np.random.default_rng(6)
    q, k, v = rand_qkv(rng, b=2, nq=4, nkv=2, s=5)
    mask = np.zeros((2, 4, 1, 5), dtype=bool)
    mask[1, 2] = True                                         # batch 1, head 2: all masked
    got = ifa(q, k, v, "BSH", 4, 2, atten_mask=mask)
    assert np.all(got[1, 2] == 0)
    np.testing.assert_allclose(got[0], plain_attention(q, k, v, 1.0)[0], rtol=1e-12)
    sc = np.full(4 * 8, 1.0, np.float32)
    off = np.linspace(-3.5, 3.5, 32).astype(np.float32)
    qout = ifa(q, k, v, "BSH", 4, 2, atten_mask=mask, quant_scale2=sc, quant_offset2=off)
    np.testing.assert_array_equal(qout[1, 2], _round_half_away_ref(off.reshape(4, 8)[2]))


def _round_half_away_ref(x):
    return np.array([np.sign(t) * np.floor(abs(t) + 0.5) for t in x])


# ---------------------------------------------------------------- lengths, padding, NaN

def test_actual_seq_lengths_and_nan_outside_range():
    rng = np.random.default_rng(7)
    q, k, v = rand_qkv(rng, b=3, nq=2, nkv=1, s=6)
    lens = [3, 6, 1]
    k_nan, v_nan = k.copy(), v.copy()
    for b, n in enumerate(lens):
        k_nan[b, :, n:] = np.nan
        v_nan[b, :, n:] = np.nan
    pse = rng.standard_normal((3, 2, 1, 6))
    for b, n in enumerate(lens):
        pse[b, :, :, n:] = np.nan
    ranges = [(0, n) for n in lens]
    expected = plain_attention(q, k, v, 0.5, ranges=ranges, bias=pse[:, :, 0])
    for layout in LAYOUTS:
        got = ifa(q, k_nan, v_nan, layout, 2, 1, scale_value=0.5, actual_seq_lengths=lens,
                  pse_shift=pse)
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-13)


def test_actual_seq_lengths_broadcast_and_extra_entries():
    rng = np.random.default_rng(8)
    q, k, v = rand_qkv(rng, b=2, nq=2, nkv=2, s=6)
    a = ifa(q, k, v, "BNSD", 2, 2, actual_seq_lengths=[4])
    b = ifa(q, k, v, "BNSD", 2, 2, actual_seq_lengths=np.array([4, 4, 1, 0]))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, plain_attention(q, k, v, 1.0, ranges=[(0, 4), (0, 4)]),
                               rtol=1e-12)


def test_zero_length_gives_zero_or_quant2_zero():
    rng = np.random.default_rng(9)
    q, k, v = rand_qkv(rng, b=2, nq=2, nkv=1, s=4, d=4)
    got = ifa(q, k, v, "BSND", 2, 1, actual_seq_lengths=[0, 4])
    assert np.all(got[0] == 0)
    np.testing.assert_allclose(got[1], plain_attention(q, k, v, 1.0)[1], rtol=1e-12)
    # per-tensor: quant2(0) = rint(fp16(offset)) = 2 for offset 2.5 (half-even)
    qt = ifa(q, k, v, "BSND", 2, 1, actual_seq_lengths=[0, 4],
             quant_scale2=np.array([3.0], np.float32), quant_offset2=np.array([2.5], np.float32))
    assert np.all(qt[0] == 2)
    # per-channel: quant2(0) = round_half_away(offset)
    off = np.array([2.5, -2.5, 0.4, 130.0, -0.5, 1.5, -200.0, 7.0], np.float32)
    qc = ifa(q, k, v, "BSND", 2, 1, actual_seq_lengths=[0, 4],
             quant_scale2=np.ones(8, np.float32), quant_offset2=off)
    np.testing.assert_array_equal(qc[0].reshape(-1), [3, -3, 0, 127, -1, 2, -128, 7])


def test_scenario_c_is_quant2_of_float_output():
    rng = np.random.default_rng(10)
    q, k, v = rand_qkv(rng, b=2, nq=4, nkv=2, s=5)
    flt = plain_attention(q, k, v, 1.0) * 40
    v40 = v * 40
    sc = rng.uniform(0.5, 2.0, 32).astype(np.float32)
    off = rng.uniform(-3, 3, 32).astype(np.float32)
    for layout in LAYOUTS:
        pc = ifa(q, k, v40, layout, 4, 2, quant_scale2=sc.reshape(4, 8), quant_offset2=off)
        np.testing.assert_array_equal(pc, quant2(flt, sc, off))
        pt = ifa(q, k, v40, layout, 4, 2, quant_scale2=sc[:1])
        np.testing.assert_array_equal(pt, quant2(flt, sc[:1]))
    # independent spot check of the per-channel channel rule on one element
    b, h, e = 1, 3, 5
    c = h * 8 + e
    y = np.float32(np.float32(flt[b, h, e] * np.float64(sc[c])) + np.float64(off[c]))
    assert pc[b, h, e] == np.clip(_round_half_away_ref(half_away16(np.array([y]))), -128, 127)


def test_tensor_list_equals_padded_tensor():
    rng = np.random.default_rng(11)
    q, k, v = rand_qkv(rng, b=3, nq=4, nkv=2, s=6)
    lens = [2, 6, 5]
    for layout in LAYOUTS:
        ql, kl, vl = to_layout(q, k, v, layout)
        padded = incre_flash_attention(ql, kl, vl, num_heads=4, num_key_value_heads=2,
                                       input_layout=layout, actual_seq_lengths=lens)
        # own S_b = L_b (the list form needs no lengths) ...
        klist, vlist = [], []
        for b, n in enumerate(lens):
            _, kb, vb = to_layout(q[b:b + 1], k[b:b + 1, :, :n], v[b:b + 1, :, :n], layout)
            klist.append(kb)
            vlist.append(vb)
        lst = incre_flash_attention(ql, klist, vlist, num_heads=4, num_key_value_heads=2,
                                    input_layout=layout)
        np.testing.assert_array_equal(lst, padded)
        # ... and a longer own S_b with lengths and NaN beyond them
        klist2, vlist2 = [], []
        for b, n in enumerate(lens):
            kk = np.concatenate([k[b:b + 1], np.full((1, 2, 3, 8), np.nan)], axis=2)
            vv = np.concatenate([v[b:b + 1], np.full((1, 2, 3, 8), np.nan)], axis=2)
            kk[:, :, n:] = np.nan
            vv[:, :, n:] = np.nan
            _, kb, vb = to_layout(q[b:b + 1], kk[:, :, :6 + b], vv[:, :, :6 + b], layout)
            klist2.append(kb)
            vlist2.append(vb)
        lst2 = incre_flash_attention(ql, klist2, vlist2, num_heads=4, num_key_value_heads=2,
                                     input_layout=layout, actual_seq_lengths=lens)
        np.testing.assert_array_equal(lst2, padded)
    # a one-element list is that tensor
    ql, kl, vl = to_layout(q, k, v, "BSH")
    np.testing.assert_array_equal(
        incre_flash_attention(ql, [kl], [vl], num_heads=4, num_key_value_heads=2),
        incre_flash_attention(ql, kl, vl, num_heads=4, num_key_value_heads=2))


@pytest.mark.parametrize("layout, rank", [("BSH", 3), ("BSND", 3), ("BNSD", 3), ("BNSD", 4)])
def test_paged_equals_contiguous(layout, rank):
    rng = np.random.default_rng(12)
    nq, nkv, d, bs, m = 4, 2, 8, 4, 3
    q, k, v = rand_qkv(rng, b=2, nq=nq, nkv=nkv, s=m * bs, d=d)
    lens = [5, 11]
    num_blocks = 9
    perm = rng.permutation(num_blocks)
    table = np.full((2, m), 10**6, dtype=np.int32)            # unread entries: out of range
    kc = np.full((num_blocks, nkv, bs, d), np.nan)            # unreferenced blocks: NaN
    vc = np.full((num_blocks, nkv, bs, d), np.nan)
    used = 0
    for b, n in enumerate(lens):
        for i in range(-(-n // bs)):
            p = perm[used]
            used += 1
            table[b, i] = p
            kc[p] = k[b, :, i * bs:(i + 1) * bs]
            vc[p] = v[b, :, i * bs:(i + 1) * bs]
    if rank == 3:
        kc = kc.transpose(0, 2, 1, 3).reshape(num_blocks, bs, nkv * d)
        vc = vc.transpose(0, 2, 1, 3).reshape(num_blocks, bs, nkv * d)
    k_nan, v_nan = k.copy(), v.copy()
    for b, n in enumerate(lens):                              # the tail rows of a block: NaN
        k_nan[b, :, n:] = np.nan
        v_nan[b, :, n:] = np.nan
    for b, n in enumerate(lens):
        pb = table[b, (n - 1) // bs]
        tail = n % bs
        if tail:
            if rank == 4:
                kc[pb, :, tail:] = np.nan
                vc[pb, :, tail:] = np.nan
            else:
                kc[pb, tail:] = np.nan
                vc[pb, tail:] = np.nan
    mask = rng.random((2, m * bs)) < 0.3
    mask[:, 0] = False
    pse = rng.standard_normal((2, nq, 1, m * bs))
    kw = dict(actual_seq_lengths=lens, atten_mask=mask, pse_shift=pse, scale_value=0.3)
    contiguous = ifa(q, k_nan, v_nan, layout, nq, nkv, **kw)
    ql = to_layout(q, k, v, layout)[0]
    paged = incre_flash_attention(ql, kc, vc, block_table=table, block_size=bs, num_heads=nq,
                                  num_key_value_heads=nkv, input_layout=layout, **kw)
    assert np.all(np.isfinite(paged))
    np.testing.assert_array_equal(paged.reshape(q.shape), contiguous)


def test_left_padding_equals_right_padding_on_shifted_cache():
    rng = np.random.default_rng(13)
    s, pad = 9, 2
    lens = [3, 7, 0]
    q, k, v = rand_qkv(rng, b=3, nq=4, nkv=2, s=s)
    mask = rng.random((3, s)) < 0.3
    pse = rng.standard_normal((3, 4, 1, s))
    k_left, v_left = np.full_like(k, np.nan), np.full_like(v, np.nan)
    mask_right, pse_right = np.ones_like(mask), np.full_like(pse, np.nan)
    for b, n in enumerate(lens):
        start, end = s - pad - n, s - pad
        if n:
            mask[b, start] = False                            # keep one position per row
        k_left[b, :, start:end] = k[b, :, :n]
        v_left[b, :, start:end] = v[b, :, :n]
        mask_right[b, :n] = mask[b, start:end]
        pse_right[b, :, :, :n] = pse[b, :, :, start:end]
    for layout in LAYOUTS:
        left = ifa(q, k_left, v_left, layout, 4, 2, actual_seq_lengths=lens,
                   kv_padding_size=np.array([pad], np.int64), atten_mask=mask, pse_shift=pse)
        right = ifa(q, k, v, layout, 4, 2, actual_seq_lengths=lens, atten_mask=mask_right,
                    pse_shift=pse_right)
        assert np.all(np.isfinite(left))
        np.testing.assert_array_equal(left, right)
        assert np.all(left[2] == 0)


def test_left_padding_ignored_without_lengths_and_negative_start():
    rng = np.random.default_rng(14)
    q, k, v = rand_qkv(rng, b=2, nq=2, nkv=2, s=8)
    np.testing.assert_array_equal(ifa(q, k, v, "BSH", 2, 2, kv_padding_size=3),
                                  ifa(q, k, v, "BSH", 2, 2))
    # negative padding counts as 0: still left padding, valid [S - L, S) = [3, 8)
    np.testing.assert_allclose(ifa(q, k, v, "BSH", 2, 2, kv_padding_size=-4,
                                   actual_seq_lengths=[5]),
                               plain_attention(q, k, v, 1.0, ranges=[(3, 8)] * 2), rtol=1e-12)
    # pad 6: end = 2; L = 3 -> start -1 -> zero batch; L = 2 -> [0, 2)
    got = ifa(q, k, v, "BSH", 2, 2, kv_padding_size=6, actual_seq_lengths=[3, 2])
    assert np.all(got[0] == 0)
    np.testing.assert_allclose(got[1], plain_attention(q, k, v, 1.0, ranges=[(0, 2)] * 2)[1],
                               rtol=1e-12)
    sc = np.array([1.0], np.float32)
    off = np.array([-3.5], np.float32)
    gq = ifa(q, k, v, "BSH", 2, 2, kv_padding_size=6, actual_seq_lengths=[3, 2],
             quant_scale2=sc, quant_offset2=off)
    assert np.all(gq[0] == -4)                                # quant2(0), half-even


def test_left_padding_rejected_with_paged_or_list():
    q = np.zeros((2, 1, 4))
    k = [np.zeros((1, 3, 4)), np.zeros((1, 5, 4))]
    with pytest.raises(ValueError):
        incre_flash_attention(q, k, k, actual_seq_lengths=[1, 1], kv_padding_size=1)
    with pytest.raises(ValueError):
        incre_flash_attention(q, np.zeros((2, 16, 4)), np.zeros((2, 16, 4)),
                              block_table=np.zeros((2, 1), np.int32), block_size=16,
                              actual_seq_lengths=[1, 1], kv_padding_size=1)


# ---------------------------------------------------------------- antiquant

@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("with_offset", [False, True])
def test_antiquant_equals_nonquant_on_dequantised_kv(layout, per_channel, with_offset):
    rng = np.random.default_rng(15)
    b, nq, nkv, s, d = 2, 4, 2, 6, 8
    q = rng.standard_normal((b, nq, d)).astype(np.float16)
    k8 = rng.integers(-128, 128, (b, nkv, s, d)).astype(np.int8)
    v8 = rng.integers(-128, 128, (b, nkv, s, d)).astype(np.int8)
    if per_channel:
        sc = rng.uniform(0.005, 0.02, (2, nkv, d)).astype(np.float16)
        off = rng.uniform(-4, 4, (2, nkv, d)).astype(np.float16)
        shape = {"BNSD": (2, nkv, 1, d), "BSH": (2, nkv * d), "BSND": (2, nkv, d)}[layout]
        sck, offk = sc[0][None, :, None, :], off[0][None, :, None, :]
        scv, offv = sc[1][None, :, None, :], off[1][None, :, None, :]
    else:
        sc = np.array([0.01, 0.02], np.float32)
        off = np.array([1.5, -2.0], np.float32)
        shape = (2,)
        sck, offk, scv, offv = sc[0], off[0], sc[1], off[1]
    if not with_offset:
        off = np.zeros_like(off)
        offk = offv = 0.0
    kd = (k8.astype(np.float64) + np.asarray(offk, np.float64)) * np.asarray(sck, np.float64)
    vd = (v8.astype(np.float64) + np.asarray(offv, np.float64)) * np.asarray(scv, np.float64)
    q64 = q.astype(np.float64)
    expected = plain_attention(q64, kd, vd, 0.2, ranges=[(0, 4), (0, 6)])
    kw = dict(antiquant_scale=sc.reshape(shape), scale_value=0.2, actual_seq_lengths=[4, 6])
    if with_offset:
        kw["antiquant_offset"] = off.reshape(shape)
    got = ifa(q, k8, v8, layout, nq, nkv, **kw)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------- full int8 (scenarios A / B)

def _int8_case(scale_value=1.0, quant_scale1=127.0, deq2=2.0**-7, pse=None, **kw):
    """1 head, D=2, 2 keys: q=[1,1], k=[[1,0],[0,0]] -> si=[1,0]; v=[[3,-5],[7,9]]."""
    q = np.array([[[1, 1]]], dtype=np.int8)                    # BSH (1,1,2)
    k = np.array([[[1, 0], [0, 0]]], dtype=np.int8)
    v = np.array([[[3, -5], [7, 9]]], dtype=np.int8)
    return incre_flash_attention(
        q, k, v, dequant_scale1=np.array([1.0], np.float32),
        quant_scale1=np.array([quant_scale1], np.float32),
        dequant_scale2=np.array([deq2], np.float32), scale_value=scale_value,
        pse_shift=pse, **kw).reshape(-1)


def test_scenario_b_hand_computed():
    # sh = [1, 0]; m = 1; eh = [1, fp16(e^-1)] ; e^-1 = 0.3678794 -> 1507/4096 = 0.367919921875
    l = np.float32(1.0 + 1507 / 4096)                          # exact in fp32
    # p = fp16(eh * 127): 127 and fp16(46.7258...) = 46.71875 -> rint -> [127, 47]
    oi = np.array([127 * 3 + 47 * 7, 127 * -5 + 47 * 9])     # [710, -212]
    o = (oi.astype(np.float32) * np.float32(2.0**-7)) / l
    expected = half_away16(o)
    got = _int8_case()
    np.testing.assert_array_equal(got, expected)
    assert abs(got[0] - 710 / 128 / 1.367919921875) < 4e-3


def test_scenario_b_exact_with_pse_and_saturated_p():
    # pse [0, 1] (fp16) -> sh = [1, 1]; eh = [1, 1]; l = 2; p8 = [127, 127]
    # oi = 127 * [10, 4]; o = oi / 128 / 2 = [4.9609375, 1.984375] (exact)
    pse = np.array([0.0, 1.0], np.float16).reshape(1, 1, 1, 2)
    np.testing.assert_array_equal(_int8_case(pse=pse), [4.9609375, 1.984375])
    # quant_scale1 300 saturates p to 127: same answer
    np.testing.assert_array_equal(_int8_case(pse=pse, quant_scale1=300.0), [4.9609375, 1.984375])


def test_scenario_b_scale_and_words():
    # scale 0.5: sh = [0.5, 0]; eh = [1, fp16(e^-0.5)] = 0.6064453125 (1242/2048)
    e = 1242 / 2048
    assert np.float16(np.exp(-0.5)) == e
    p1 = np.rint(np.float16(e * 127))                         # fp16(77.0166) = 77.0 -> 77
    assert p1 == 77
    oi = np.array([127 * 3 + 77 * 7, 127 * -5 + 77 * 9], dtype=np.float32)
    expected = half_away16((oi * np.float32(2.0**-7)) / np.float32(1 + e))
    np.testing.assert_array_equal(_int8_case(scale_value=0.5), expected)
    # dequant_scale2 as a trans_quant_param word, and a float32 with low bits (FP19-truncated)
    q = np.array([[[1, 1]]], np.int8)
    k = np.array([[[1, 0], [0, 0]]], np.int8)
    v = np.array([[[3, -5], [7, 9]]], np.int8)
    base = dict(dequant_scale1=trans_quant_param(np.array([1.0], np.float32)),
                quant_scale1=np.array([127.0], np.float32), scale_value=0.5)
    w = incre_flash_attention(q, k, v, dequant_scale2=trans_quant_param(
        np.array([2.0**-7], np.float32)), **base).reshape(-1)
    np.testing.assert_array_equal(w, expected)
    dirty = f32_bits(0x3C001FFF)                               # 2^-7 with 13 low bits set
    x = incre_flash_attention(q, k, v, dequant_scale2=dirty, **base).reshape(-1)
    np.testing.assert_array_equal(x, expected)


def test_scenario_a_is_quant2_of_b():
    o_b = _int8_case()
    sc = np.array([10.0], np.float32)
    off = np.array([-1.0], np.float32)
    a = _int8_case(quant_scale2=sc, quant_offset2=off)
    # o ~ [4.0549, -1.2107]; fp16 then *10, -1, rint: independent of B's final rounding
    o = (np.array([710, -212], np.float32) * np.float32(2.0**-7)) / np.float32(1 + 1507 / 4096)
    y = np.float16(np.float16(np.float16(o) * np.float16(10.0)) + np.float16(-1.0))
    np.testing.assert_array_equal(a, np.rint(y.astype(np.float64)))
    assert a[0] == 40 and a[1] == -13
    assert np.all(np.abs(o_b - o) < 2e-3)


def test_int8_multi_head_gqa_matches_single_head_calls_and_masks():
    rng = np.random.default_rng(16)
    b, nq, nkv, s, d = 2, 4, 2, 6, 16
    q = rng.integers(-20, 20, (b, nq, d)).astype(np.int8)
    k = rng.integers(-20, 20, (b, nkv, s, d)).astype(np.int8)
    v = rng.integers(-128, 128, (b, nkv, s, d)).astype(np.int8)
    mask = rng.random((b, s)) < 0.3
    mask[:, 1] = False
    params = dict(dequant_scale1=np.array([0.01], np.float32),
                  quant_scale1=np.array([127.0], np.float32),
                  dequant_scale2=np.array([1 / 127], np.float32), scale_value=0.25)
    full = ifa(q, k, v, "BNSD", nq, nkv, atten_mask=mask, actual_seq_lengths=[4, 6], **params)
    for bb in range(b):
        n = [4, 6][bb]
        for h in range(nq):
            keep = ~mask[bb, :n]
            one = incre_flash_attention(q[bb:bb + 1, h:h + 1, None],
                                        k[bb:bb + 1, h // 2:h // 2 + 1, :n][:, :, keep],
                                        v[bb:bb + 1, h // 2:h // 2 + 1, :n][:, :, keep],
                                        input_layout="BNSD", **params)
            np.testing.assert_array_equal(full[bb, h], one.reshape(-1))
    # float attention on the dequantised inputs is close (P quantised to 8 bits)
    qf = q.astype(np.float64)
    masked = np.broadcast_to(mask[:, None], (b, nq, s))
    ref = plain_attention(qf * 0.1, k * 0.1, v.astype(np.float64), 0.25,
                          ranges=[(0, 4), (0, 6)], masked=masked)
    np.testing.assert_allclose(full, ref, atol=1.5)


def test_int8_query_requires_scenario_params():
    q = np.zeros((1, 1, 2), np.int8)
    with pytest.raises(ValueError):
        incre_flash_attention(q, q, q)
    with pytest.raises(ValueError):
        incre_flash_attention(np.zeros((1, 1, 2)), np.zeros((1, 1, 2)), np.zeros((1, 1, 2)),
                              dequant_scale1=np.array([1.0], np.float32))
