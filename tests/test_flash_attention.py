"""FlashAttention varlen forward V4 + grad V4 (torch op) against the float64 reference."""
import numpy as np
import pytest
import torch

import ascend_attn
from ascend_attn import native
from ascend_attn import validation as V
from ascend_attn.kernels import flash_attention as kernel
from ascend_attn.native import flash_attention as native_fa
from ascend_attn.testing import fa_reference as R
from ascend_attn.testing.samples import compressed_mask, fa_case, fa_reference_kwargs

MODES = [0, 1, 2, 3, 4, 6, 7, 8]
# Every test runs on both CPU kernel paths: the native C++ kernels and the eager torch code.
pytestmark = pytest.mark.usefixtures("cpu_path")


def lengths_for(mode):
    """Odd lengths valid for every mode's constraints (mode 8 with pse needs S1 == S2 past b=0)."""
    return ((5, 3, 9), (6, 3, 9)) if mode == 8 else ((5, 3, 7), (6, 3, 9))


def forward_backward(args, kwargs, dy_seed=1):
    q, k, v = (x.detach().clone().requires_grad_() for x in args[:3])
    out, smax, ssum = ascend_attn.flash_attention_varlen_score(q, k, v, *args[3:], **kwargs)
    dy = torch.randn(out.shape, generator=torch.Generator().manual_seed(dy_seed)).to(out.dtype)
    out.backward(dy)
    return (out.detach(), smax, ssum), (q.grad, k.grad, v.grad), dy


def reference(args, kwargs, dy, round_dtype=None, from_dtype=True):
    """float64 reference on the same (dtype-valued) inputs; round_dtype emulates the NPU roundings."""
    f = lambda t: t.detach().double().numpy()
    q, k, v = (f(x) for x in args[:3])
    kw = fa_reference_kwargs(kwargs)
    layout = kw.pop("softmax_out_layout")
    fwd = R.flash_attention_forward(q, k, v, *args[3:], softmax_out_layout=layout, round_dtype=round_dtype, **kw)
    grads = R.flash_attention_backward(q, k, v, f(dy), *args[3:], fwd[1], fwd[2], fwd[0],
                                       softmax_in_layout=layout, round_dtype=round_dtype, **kw)
    return fwd, grads


def max_err(a, b):
    return float(np.abs(a.detach().double().numpy() - b).max())


def assert_matches_reference(args, kwargs, dtype):
    (out, smax, ssum), grads, dy = forward_backward(args, kwargs)
    ref_fwd, ref_grads = reference(args, kwargs, dy)
    np.testing.assert_array_equal(smax.numpy() == 0, ref_fwd[1] == 0)  # same tail / layout
    np.testing.assert_allclose(smax.numpy(), ref_fwd[1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ssum.numpy(), ref_fwd[2], rtol=1e-4)
    got = [out] + list(grads)
    want = [ref_fwd[0]] + list(ref_grads)
    if dtype == "float32":
        for name, g, w in zip(("out", "dq", "dk", "dv"), got, want):
            assert max_err(g, w) <= 2e-5 * max(1.0, np.abs(w).max()), name
        return
    # Low precision: error at most a small multiple of the same reference computed with the
    # dtype's rounding points (plus a floor for outputs that round exactly).
    low_fwd, low_grads = reference(args, kwargs, dy, round_dtype=dtype)
    low = [low_fwd[0]] + list(low_grads)
    eps = {"float16": 2 ** -11, "bfloat16": 2 ** -8}[dtype]
    for name, g, w, lw in zip(("out", "dq", "dk", "dv"), got, want, low):
        bound = 3 * float(np.abs(lw - w).max()) + 2 * eps * max(1.0, float(np.abs(w).max()))
        assert max_err(g, w) <= bound, (name, max_err(g, w), bound)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_every_sparse_mode_matches_reference(mode, dtype):
    seq_q, seq_kv = lengths_for(mode)
    args, kwargs = fa_case(dtype, seq_q, seq_kv, sparse_mode=mode, seed=mode)
    assert_matches_reference(args, kwargs, dtype)


@pytest.mark.parametrize("pse_type", [0, 1, 2, 3])
@pytest.mark.parametrize("mode", [0, 3, 4, 8])
def test_every_pse_type_matches_reference(pse_type, mode):
    seq_q, seq_kv = ((5, 4, 7), (5, 4, 7)) if mode == 8 else lengths_for(mode)
    args, kwargs = fa_case("float32", seq_q, seq_kv, sparse_mode=mode, pse_type=pse_type, seed=10 + pse_type)
    if mode == 8 and pse_type in (2, 3):
        kwargs.update(q_start_idx=[0], kv_start_idx=[0])
    assert_matches_reference(args, kwargs, "float32")


@pytest.mark.parametrize("heads_q,heads_kv", [(3, 3), (4, 2), (8, 2), (4, 1)])
@pytest.mark.parametrize("head_dim", [1, 17, 64])
def test_gqa_ratios_and_head_dims(heads_q, heads_kv, head_dim):
    args, kwargs = fa_case("float32", (1, 6, 4), (3, 7, 2), heads_q, heads_kv, head_dim, sparse_mode=1, seed=head_dim)
    assert_matches_reference(args, kwargs, "float32")


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("layout", ["", "same_as_input"])
def test_dropout_and_both_statistics_layouts(dtype, layout):
    args, kwargs = fa_case(dtype, sparse_mode=3, dropout=True, softmax_layout=layout, pse_type=1, seed=3)
    assert_matches_reference(args, kwargs, dtype)


def test_drop_mask_of_any_shape_is_read_flat():
    args, kwargs = fa_case("float32", sparse_mode=3, dropout=True)
    flat = forward_backward(args, kwargs)
    mask = kwargs["drop_mask"]
    padded = torch.cat([mask, mask.new_zeros(-len(mask) % 4)])  # extra bytes are ignored (§6)
    shaped = forward_backward(args, dict(kwargs, drop_mask=padded.view(-1, 4)))
    for a, b in zip(flat[0] + flat[1], shaped[0] + shaped[1]):
        assert torch.equal(a, b)


def test_global_full_mask_form():
    args, kwargs = fa_case("float32", sparse_mode=0, full_mask="global", seed=4)
    assert kwargs["atten_mask"].shape == (args[0].shape[0], args[1].shape[0])
    assert_matches_reference(args, kwargs, "float32")


def test_no_mask_means_full_attention_in_every_mode():
    base_args, base_kw = fa_case("float32", sparse_mode=1, full_mask=None, seed=5)
    base = ascend_attn.flash_attention_varlen_score(*base_args, **base_kw)[0]
    for mode in (2, 3, 4):
        kw = dict(base_kw, sparse_mode=mode)
        assert torch.equal(ascend_attn.flash_attention_varlen_score(*base_args, **kw)[0], base)


def test_tiling_is_exact_and_skips_masked_blocks(monkeypatch):
    """Tiny blocks (many partial / skipped blocks, several row blocks) give the same results."""
    for mode in MODES:
        seq_q, seq_kv = lengths_for(mode)
        args, kwargs = fa_case("float32", (37,) + seq_q, (41,) + seq_kv, sparse_mode=mode, dropout=True, seed=mode)
        big = forward_backward(args, kwargs)
        for module in (kernel, native_fa):  # whichever path runs
            monkeypatch.setattr(module, "BLOCK_Q", 4)
            monkeypatch.setattr(module, "BLOCK_K", 8)
        small = forward_backward(args, kwargs)
        monkeypatch.undo()
        for a, b in zip(big[0] + big[1], small[0] + small[1]):
            torch.testing.assert_close(a, b, rtol=2e-6, atol=2e-6)
        ref_fwd, ref_grads = reference(args, kwargs, small[2])
        assert max_err(small[0][0], ref_fwd[0]) < 2e-5 and max_err(small[1][0], ref_grads[0]) < 5e-5


def test_causal_blocks_are_skipped(monkeypatch):
    """Mode 2 on a long sequence computes about half of the score blocks (the eager kernel's
    count; the native kernel's skipping shows as the causal / full ratio of ``ascend-attn bench``)."""
    with native.forced("eager"):
        calls = []
        real = kernel._scores
        monkeypatch.setattr(kernel, "_scores", lambda *a: calls.append(1) or real(*a))
        monkeypatch.setattr(kernel, "BLOCK_Q", 16)
        monkeypatch.setattr(kernel, "BLOCK_K", 16)
        args, kwargs = fa_case("float32", (256,), (256,), 2, 2, 8, sparse_mode=2, tail_rows=0)
        ascend_attn.flash_attention_varlen_score(*args, **kwargs)
        causal = len(calls)
        calls.clear()
        ascend_attn.flash_attention_varlen_score(*args, **dict(kwargs, atten_mask=None))
        assert causal == 16 * 17 // 2 and len(calls) == 256


def test_mode3_equals_explicit_bottom_right_causal_mask():
    seq_q, seq_kv = (4, 7, 2), (9, 7, 5)
    args, kwargs = fa_case("float32", seq_q, seq_kv, sparse_mode=3, tail_rows=0, seed=6)
    t1, t2 = sum(seq_q), sum(seq_kv)
    mask = torch.ones(t1, t2, dtype=torch.bool)
    oq = ok = 0
    for s1, s2 in zip(seq_q, seq_kv):
        i = torch.arange(s1).unsqueeze(1)
        j = torch.arange(s2).unsqueeze(0)
        mask[oq:oq + s1, ok:ok + s2] = j > i + (s2 - s1)
        oq, ok = oq + s1, ok + s2
    causal = ascend_attn.flash_attention_varlen_score(*args, **kwargs)
    explicit = ascend_attn.flash_attention_varlen_score(*args, **dict(kwargs, sparse_mode=1, atten_mask=mask))
    for a, b in zip(causal, explicit):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_max_plus_log_sum_is_the_logsumexp():
    args, kwargs = fa_case("float32", sparse_mode=1, full_mask=None, softmax_layout="same_as_input", tail_rows=0)
    q, k = (x.double() for x in args[:2])
    _, smax, ssum = ascend_attn.flash_attention_varlen_score(*args, **kwargs)
    lse = smax[..., 0].double() + ssum[..., 0].double().log()
    oq = ok = 0
    for s1, s2 in zip((5, 3, 7), (6, 3, 9)):
        kk = k[ok:ok + s2].repeat_interleave(2, dim=1)
        z = torch.einsum("qnd,knd->qnk", q[oq:oq + s1], kk) * kwargs["scale_value"]
        torch.testing.assert_close(lse[oq:oq + s1], torch.logsumexp(z, -1), rtol=1e-6, atol=1e-6)
        oq, ok = oq + s1, ok + s2


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_single_query_single_key(dtype):
    args, kwargs = fa_case(dtype, (1, 1), (1, 1), 2, 1, 16, sparse_mode=1, full_mask=None, tail_rows=0)
    (out, _, _), (dq, dk, dv), dy = forward_backward(args, kwargs)
    v = args[2]
    assert torch.equal(out, v.repeat_interleave(2, dim=1))  # one key: out is V exactly
    assert torch.all(dq.abs() <= 1e-6) and torch.all(dk.abs() <= 1e-6)
    torch.testing.assert_close(dv.float(), dy.float().view(2, 1, 2, 16).sum(2), rtol=0, atol=1e-2)


def test_one_key_per_sequence_has_no_nan():
    args, kwargs = fa_case("float16", (3, 1, 4), (1, 1, 1), 2, 2, 8, sparse_mode=1, full_mask=None)
    (out, smax, ssum), grads, _ = forward_backward(args, kwargs)
    for t in (out, smax, ssum) + grads:
        assert torch.isfinite(t).all()


def test_zero_length_and_trailing_sequences_and_empty_rows():
    # lengths q 3,0,4 then two switched-off batches; kv 4,2,0: sequence 2 has no key at all.
    args, kwargs = fa_case("float32", (3, 0, 4), (4, 2, 0), sparse_mode=1, full_mask=None, tail_rows=2)
    args = args[:4] + (args[4] + [0, 0], args[5] + [0, 0])
    (out, smax, ssum), (dq, dk, dv), dy = forward_backward(args, kwargs)
    rows = slice(3, 7)  # sequence 2: every row is fully masked (S2 = 0)
    assert torch.all(out[rows] == 0) and torch.all(dq[rows] == 0)
    flt = torch.finfo(torch.float32).max
    tnd_max = R.ntd_to_tnd(smax.numpy(), [3, 0, 4, 0, 0])
    tnd_sum = R.ntd_to_tnd(ssum.numpy(), [3, 0, 4, 0, 0])
    assert np.all(tnd_max[rows] == -flt) and np.all(tnd_sum[rows] == flt)
    assert torch.all(out[7:] == 0) and torch.all(smax.view(-1)[7 * 4 * 8:] == 0)  # tail rows
    assert torch.all(dk[4:6] == 0) and torch.all(dk[6:] == 0)  # kv of the S1=0 sequence, tail
    ref_fwd, ref_grads = reference(args, kwargs, dy)
    assert max_err(out, ref_fwd[0]) < 1e-5 and max_err(dk, ref_grads[1]) < 1e-5


def test_nan_beyond_the_lengths_is_never_read():
    args, kwargs = fa_case("float32", sparse_mode=3, tail_rows=3)
    clean = forward_backward(args, kwargs)
    dirty = [x.detach().clone() for x in args[:3]]
    for x in dirty:
        x[-3:] = float("nan")
    got = forward_backward(tuple(dirty) + args[3:], kwargs)
    for a, b in zip(clean[0] + clean[1], got[0] + got[1]):
        assert torch.equal(a, b)


def test_repeated_backward_is_bit_identical():
    args, kwargs = fa_case("bfloat16", sparse_mode=4, dropout=True, pse_type=2)
    first = forward_backward(args, kwargs)
    second = forward_backward(args, kwargs)
    for a, b in zip(first[0] + first[1], second[0] + second[1]):
        assert torch.equal(a, b)


def test_half_away_rounding_of_outputs():
    """fp16 outputs round ties away from zero (CANN CAST_ROUND), unlike torch's RNE."""
    x = torch.tensor([1 + 2 ** -11, -(1 + 2 ** -11), 1 + 3 * 2 ** -11, 2 ** -25, 65519.0, 65520.0, 0.1])
    got = kernel.round_half_away_fp16(x).double().numpy()
    np.testing.assert_array_equal(got, R.half_away16(x.double().numpy()))
    assert got[0] == 1 + 2 ** -10 and x[0].half().item() == 1.0


def test_grad_op_directly_and_dpse_is_empty():
    args, kwargs = fa_case("float32", sparse_mode=3)
    out, smax, ssum = ascend_attn.flash_attention_varlen_score(*args, **kwargs)
    layout = kwargs.pop("softmax_out_layout")
    dy = torch.ones_like(out)
    dq, dk, dv, dpse = ascend_attn.flash_attention_unpadding_score_grad(
        *args[:3], dy, *args[3:], smax, ssum, out, softmax_in_layout=layout, **kwargs)
    assert dpse.numel() == 0 and dq.shape == args[0].shape and dk.shape == args[1].shape
    _, ref_grads = reference(args, dict(kwargs, softmax_out_layout=layout), dy)
    assert max_err(dq, ref_grads[0]) < 2e-5


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_float64(mode):
    seq_q, seq_kv = ((3, 2), (4, 3)) if mode != 8 else ((3, 2), (4, 2))
    args, kwargs = fa_case("float64", seq_q, seq_kv, 2, 1, 3, sparse_mode=mode, dropout=mode == 3,
                           pse_type={0: 0, 1: 1, 3: 2, 4: 3}.get(mode), seed=mode, tail_rows=1)

    def f(q, k, v):
        return ascend_attn.flash_attention_varlen_score(q, k, v, *args[3:], **kwargs)[0]
    inputs = tuple(x.detach().requires_grad_() for x in args[:3])
    with V.allow_float64():
        assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5)


def test_float64_is_rejected_outside_the_test_hook():
    args, kwargs = fa_case("float64")
    with pytest.raises(TypeError, match="query"):
        ascend_attn.flash_attention_varlen_score(*args, **kwargs)


SAMPLES = [dict(sparse_mode=3), dict(sparse_mode=0, dropout=True, softmax_layout="same_as_input"),
           dict(sparse_mode=4, pse_type=2), dict(sparse_mode=1, full_mask="global", pse_type=1)]


@pytest.mark.parametrize("sample", range(len(SAMPLES)))
def test_opcheck_forward_and_grad(sample):
    args, kwargs = fa_case("float32", requires_grad=True, **SAMPLES[sample])
    op_args = ascend_attn.flash_attention_varlen_score.op_arguments(*args, **kwargs)  # lengths as tensors
    torch.library.opcheck(torch.ops.ascend_attn.flash_attention_varlen_score.default, op_args)
    out, smax, ssum = torch.ops.ascend_attn.flash_attention_varlen_score(*op_args)
    layout = kwargs.pop("softmax_out_layout")
    grad_args = ascend_attn.flash_attention_unpadding_score_grad.op_arguments(
        *(a.detach() for a in args[:3]), torch.randn_like(out), *args[3:], smax, ssum, out.detach(),
        **dict(kwargs, softmax_in_layout=layout))
    torch.library.opcheck(torch.ops.ascend_attn.flash_attention_unpadding_score_grad.default, grad_args)


def test_torch_compile_fullgraph_forward_and_backward():
    args, kwargs = fa_case("float32", sparse_mode=3, dropout=True)

    def loss_fn(q, k, v):
        out, _, _ = ascend_attn.flash_attention_varlen_score(q, k, v, *args[3:], **kwargs)
        return (out.float() ** 2).sum()

    compiled = torch.compile(loss_fn, fullgraph=True)
    eager_in = [x.detach().clone().requires_grad_() for x in args[:3]]
    comp_in = [x.detach().clone().requires_grad_() for x in args[:3]]
    eager_loss, comp_loss = loss_fn(*eager_in), compiled(*comp_in)
    eager_loss.backward()
    comp_loss.backward()
    torch.testing.assert_close(comp_loss, eager_loss)
    for a, b in zip(eager_in, comp_in):
        torch.testing.assert_close(b.grad, a.grad)


def test_alibi_compressed_pse_matches_reference_and_rejects_uncovered_positions():
    """[1, N1, 1024, S] holds the last 1024 rows of a Toeplitz pse (semantics.md §5)."""
    s, heads = 1030, 2
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(s, heads, 8, generator=gen) for _ in range(3))
    i = torch.arange(s).view(-1, 1)
    j = torch.arange(s).view(1, -1)
    full = -(i - j).abs().float() * torch.tensor([0.5, 0.25]).view(-1, 1, 1)  # Toeplitz per head
    pse = full[:, -1024:, :].unsqueeze(0).contiguous()
    args = (q, k, v, heads, [s], [s])
    kwargs = dict(pse=pse, pse_type=1, sparse_mode=3, atten_mask=compressed_mask(3), scale_value=0.3,
                  softmax_out_layout="")
    got = forward_backward(args, kwargs)
    ref_fwd, ref_grads = reference(args, kwargs, got[2])
    assert max_err(got[0][0], ref_fwd[0]) < 1e-5 and max_err(got[1][0], ref_grads[0]) < 1e-4
    with pytest.raises(ValueError, match="pse"):
        ascend_attn.flash_attention_varlen_score(*args, **dict(kwargs, sparse_mode=0, atten_mask=None))


@pytest.mark.parametrize("heads_kv", [1, 2])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_inputs_are_never_modified(heads_kv, dtype):
    """fp32 with one kv head makes internal views alias the caller's tensors: nothing may write them."""
    args, kwargs = fa_case(dtype, heads_q=4, heads_kv=heads_kv, sparse_mode=3, dropout=True, pse_type=1)
    copies = [a.clone() for a in args[:3]]
    out, smax, ssum = ascend_attn.flash_attention_varlen_score(*args, **kwargs)
    layout = kwargs.pop("softmax_out_layout")
    dy = torch.ones_like(out)
    dy_copy, stats_copy = dy.clone(), (smax.clone(), ssum.clone(), out.clone())
    ascend_attn.flash_attention_unpadding_score_grad(*args[:3], dy, *args[3:], smax, ssum, out,
                                                     softmax_in_layout=layout, **kwargs)
    for a, c in zip(args[:3], copies):
        assert torch.equal(a, c)
    assert torch.equal(dy, dy_copy) and all(torch.equal(a, b) for a, b in zip((smax, ssum, out), stats_copy))
