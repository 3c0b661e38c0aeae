"""ATB SelfAttention (ascend_attn.self_attention): every feature against the float64 reference.

The reference (``testing/sa_reference.py``) is independent numpy; the inputs come from
``testing/sa_samples.sa_case``, which builds a valid call for any set of the coexistence table's features.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import ascend_attn
from ascend_attn.testing import sa_reference as R
from ascend_attn.testing.sa_samples import compressed_alibi, reference_inputs, sa_case
from frontends import tensors_in

TOL = {"float16": 4e-3, "bfloat16": 3e-2}


def expected(args, kwargs):
    rargs, rkw = reference_inputs(args, kwargs)
    return R.self_attention(*rargs, **rkw), rkw["dtype"]


def quant_step(args, kwargs):
    """Full quantization: one unit of an int8 P element (the kernel's P, rounded from fp32, may sit on the other
    side of a rounding boundary than the float64 reference's) moves an output by up to |V| * vpv_descale."""
    if kwargs.get("quant_type") in (None, 0):
        return 0.0
    unit = float(kwargs["vpv_descale"].max()) * float(args[2].abs().max())
    return 2 * unit / (127 if kwargs["quant_type"] in (3, "QKV_ONLINE") else 1)


def assert_matches(got, want, dtype, atol=0.0):
    g = got.double().numpy()
    np.testing.assert_array_equal(np.isnan(g), np.isnan(want))
    ok = np.isnan(want) | (np.abs(g - want) <= atol + TOL[dtype] * (1.0 + np.abs(want)))
    assert ok.all(), f"max error {np.nanmax(np.abs(g - want))}"


def check_case(features, **kw):
    args, kwargs = sa_case(features, **kw)
    (want, want_k, want_v), dtype = expected(args, kwargs)
    got = ascend_attn.self_attention(*args, **kwargs)
    assert got.shape == args[0].shape and got.dtype == getattr(torch, dtype)
    assert_matches(got, want, dtype, quant_step(args, kwargs))
    for cache, ref in ((args[3], want_k), (args[4], want_v)):
        if cache is not None:  # the cache update (or, with kv-bypass, no change)
            for c, r in zip(cache if isinstance(cache, list) else [cache], ref if isinstance(ref, list) else [ref]):
                np.testing.assert_array_equal(c.double().numpy(), r)
    return args, kwargs, got


# ----------------------------------------------------------------------------- features vs the reference

FEATURE_CASES = [
    # calc types: PA_ENCODER, ENCODER (prefill with a prefix row), DECODER, the combined default
    ("pa-encoder", (), dict(calc_type=3)),
    ("pa-encoder-bf16", (), dict(calc_type=3, dtype="bfloat16", seed=1)),
    ("encoder", ("split",), dict(calc_type=1)),
    ("decoder", ("split",), dict(calc_type=2, seed=1)),
    ("combined-default", (), dict(calc_type=0, seed=2)),
    ("combined-bf16", (), dict(calc_type=0, dtype="bfloat16", seed=3)),
    # kv-bypass, BNSD, the kv tensor list, dynamic batch
    ("bypass", ("bypass",), dict(seed=0)),
    ("bypass-decoder-bf16", ("bypass",), dict(calc_type=2, dtype="bfloat16")),
    ("bnsd", ("bnsd",), dict(seed=0)),
    ("bnsd-decoder", ("bnsd",), dict(calc_type=2, seed=1)),
    ("tensor-list", ("tensor_list",), dict(seed=0)),
    ("dynamic-batch", ("dynamic_batch",), dict(seed=0)),
    ("dynamic-batch-decoder-list", ("dynamic_batch", "tensor_list"), dict(seed=1)),
    # kernel types and clamp
    ("high-precision", ("high_precision",), dict(calc_type=0, seed=0)),
    ("high-precision-pa", ("high_precision",), dict(calc_type=3, seed=2)),
    ("clamp", ("clamp",), dict(calc_type=3, seed=0)),
    ("clamp-decoder-bf16", ("clamp",), dict(calc_type=2, dtype="bfloat16")),
    # masks: explicit NORM (additive / 0-1), ALiBi (per head, per batch and head), compressed
    ("norm-2d", (), dict(calc_type=0, mask_type=1, seed=2)),
    ("norm-batch-hp", ("high_precision",), dict(calc_type=3, mask_type=1, seed=0)),
    ("alibi-head", (), dict(calc_type=3, mask_type=2, seed=0)),
    ("alibi-batch-head", (), dict(calc_type=0, mask_type=2, seed=2)),
    ("norm-compress-pa", ("compressed",), dict(calc_type=3, mask_type=3)),
    ("norm-compress-decoder-hp", ("compressed", "high_precision"), dict(calc_type=2, mask_type=3)),
    ("norm-compress-combined-bf16", ("compressed",), dict(calc_type=0, mask_type=3, dtype="bfloat16")),
    ("alibi-compress", ("compressed", "high_precision"), dict(mask_type=4)),
    ("alibi-compress-sqrt", ("compressed", "high_precision"), dict(mask_type=5)),
    ("alibi-compress-left", ("compressed", "high_precision"), dict(mask_type=6)),
    ("alibi-compress-bf16-default", ("compressed",), dict(mask_type=4, dtype="bfloat16")),
    ("alibi-compress-negated", ("compressed", "high_precision"), dict(mask_type=4, convention="negated")),
    ("alibi-compress-sqrt-negated", ("compressed",), dict(mask_type=5, dtype="bfloat16", convention="negated")),
    ("alibi-compress-left-negated", ("compressed", "high_precision"), dict(mask_type=6, convention="negated")),
    # logN: PA_ENCODER (per query position, high precision) and DECODER (per batch)
    ("logn-pa", ("logn", "high_precision"), dict(seed=0)),
    ("logn-decoder", ("logn",), dict(seed=1)),
    ("logn-decoder-bf16-bypass", ("logn", "bypass"), dict(dtype="bfloat16")),
    # full quantization, offline and online, fp16 / bf16 output
    ("quant-offline-fp16", ("quant",), dict(quant_type=2)),
    ("quant-online-fp16", ("quant",), dict(quant_type=3)),
    ("quant-offline-bf16", ("quant",), dict(quant_type=2, dtype="bfloat16", seed=1)),
    ("quant-online-bf16-mask", ("quant",), dict(quant_type=3, dtype="bfloat16", mask_type=1)),
    ("quant-online-alibi-compress-hp", ("quant", "compressed", "high_precision"), dict(quant_type=3, mask_type=5)),
]


@pytest.mark.parametrize("name,features,kw", FEATURE_CASES, ids=[c[0] for c in FEATURE_CASES])
def test_matches_reference(name, features, kw):
    check_case(features, **kw)


def test_enum_names_and_ints_are_the_same_call():
    args, kwargs = sa_case(("compressed", "high_precision"), mask_type=4, seed=3)
    want = ascend_attn.self_attention(*args, **kwargs)
    names = dict(kwargs, calc_type="PA_ENCODER", kernel_type="kerneltype_high_precision",
                 mask_type="MASK_TYPE_ALIBI_COMPRESS")
    assert torch.equal(ascend_attn.self_attention(*args, **names), want)
    names = dict(kwargs, calc_type="calc_type_pa_encoder", kernel_type="HIGH_PRECISION", mask_type="alibi_compress")
    assert torch.equal(ascend_attn.self_attention(*args, **names), want)


# ----------------------------------------------------------------------------- KV cache and dynamic batch

def test_cache_update_writes_only_the_new_rows_of_the_layer():
    args, kwargs = sa_case(("split",), calc_type=0, seed=5)
    q, k, v, cache_k, cache_v, mask = args
    before_k, before_v = cache_k.clone(), cache_v.clone()
    ascend_attn.self_attention(*args, **kwargs)
    layer = kwargs["layer_id"][0]
    written = torch.zeros(cache_k.shape[:3], dtype=torch.bool)
    row = 0
    for b, (s1, s2) in enumerate(zip(kwargs["seq_len"], kwargs["token_offset"])):
        written[layer, b, s2 - s1: s2] = True
        torch.testing.assert_close(cache_k[layer, b, s2 - s1: s2], k[row: row + s1], rtol=0, atol=0)
        torch.testing.assert_close(cache_v[layer, b, s2 - s1: s2], v[row: row + s1], rtol=0, atol=0)
        row += s1
    assert torch.equal(cache_k[~written], before_k[~written]) and torch.equal(cache_v[~written], before_v[~written])


def test_cache_flow_is_incremental_decoding():
    """Prefill then two decode steps through the cache equal one PA_ENCODER prefill of the whole sequence
    (causal mask): the cache bookkeeping of token_offset / seq_len / layer_id."""
    gen = torch.Generator().manual_seed(6)
    n, d, total = 2, 16, 7
    q, k, v = (torch.randn(total, n * d, generator=gen).half() for _ in range(3))
    causal = torch.triu(torch.full((128, 128), -torch.inf), 1).half()
    common = dict(head_num=n, qk_scale=0.25, mask_type="NORM_COMPRESS", attention_mask=causal)
    whole = ascend_attn.self_attention(q, k, v, seq_len=[total], calc_type="PA_ENCODER", **common)
    cache_k = torch.zeros(3, 1, 16, n * d, dtype=torch.float16)
    cache_v = torch.zeros_like(cache_k)
    outs = [ascend_attn.self_attention(q[:5], k[:5], v[:5], cache_k, cache_v, seq_len=[5], token_offset=[5],
                                       layer_id=2, calc_type="ENCODER", **common)]
    for t in (5, 6):
        outs.append(ascend_attn.self_attention(q[t:t + 1], k[t:t + 1], v[t:t + 1], cache_k, cache_v, seq_len=[1],
                                               token_offset=[t + 1], layer_id=2, calc_type="DECODER", **common))
    torch.testing.assert_close(torch.cat(outs), whole, rtol=0, atol=2e-3)
    assert torch.equal(cache_k[2, 0, :total], k) and not cache_k[:2].any() and not cache_k[2, 0, total:].any()


def test_dynamic_batch_leaves_skipped_batches_alone():
    args, kwargs = sa_case(("dynamic_batch",), calc_type=0, seed=7)
    cache_k = args[3]
    before = cache_k.clone()
    out = ascend_attn.self_attention(*args, **kwargs)
    skipped = [b for b, s in enumerate(kwargs["batch_run_status"]) if s == 0]
    offsets = np.concatenate([[0], np.cumsum(kwargs["seq_len"])])
    for b in skipped:
        assert not out[offsets[b]: offsets[b + 1]].any()  # rows of a skipped batch are 0
        assert torch.equal(cache_k[b], before[b])  # and its cache is not written
    assert out[offsets[0]: offsets[1]].abs().sum() > 0
    # all batches on: the computed batches give the same rows
    full = ascend_attn.self_attention(*sa_case(("dynamic_batch",), calc_type=0, seed=7)[0],
                                      **dict(kwargs, batch_run_status=[1, 1, 1]))
    kept = [b for b in range(3) if b not in skipped]
    for b in kept:
        assert torch.equal(out[offsets[b]: offsets[b + 1]], full[offsets[b]: offsets[b + 1]])


def test_bypass_reads_but_never_writes_the_caches():
    args, kwargs = sa_case(("bypass",), calc_type=1, seed=8)
    copies = [t.clone() for t in tensors_in(args)]
    ascend_attn.self_attention(*args, **kwargs)
    assert all(torch.equal(a, c) for a, c in zip(tensors_in(args), copies))


# ----------------------------------------------------------------------------- high precision

def overflow_case(kernel_type):
    """q.k = 2 * 200 * 200 * 16 ... > 65504 in fp16 for the first key."""
    q = torch.full((2, 1, 16), 60.0, dtype=torch.float16)
    k = torch.randn(2, 1, 16, generator=torch.Generator().manual_seed(9)).half()
    k[0] = 80.0
    v = torch.randn(2, 1, 16, generator=torch.Generator().manual_seed(10)).half()
    return (q, k, v), dict(seq_len=[2], head_num=1, qk_scale=2 ** -10, calc_type="PA_ENCODER", kernel_type=kernel_type)


def test_default_kernel_overflows_in_fp16_and_high_precision_does_not():
    for kernel_type in (0, 1):
        args, kwargs = overflow_case(kernel_type)
        (want, _, _), dtype = expected(args + (None, None, None), kwargs)
        got = ascend_attn.self_attention(*args, **kwargs)
        assert_matches(got, want, dtype)
        assert torch.isnan(got).all() == (kernel_type == 0)  # Q.K^T = 76800 > 65504: inf - inf = NaN
        assert torch.isfinite(got).all() == (kernel_type == 1)


def test_high_precision_mask_convention():
    """The same masked positions: -10000 (default kernel, additive) and 1 (high precision: -inf replaced by 1)."""
    args, kwargs = sa_case((), calc_type=3, mask_type=1, seed=0)
    additive = ascend_attn.self_attention(*args, **kwargs)
    mask = args[5]
    binary = (mask != 0).half()
    hp = ascend_attn.self_attention(*args[:5], binary, **dict(kwargs, kernel_type="HIGH_PRECISION"))
    torch.testing.assert_close(hp, additive, rtol=0, atol=2e-3)
    with pytest.raises(ValueError, match="^self_attention: attention_mask only supports values 0 .keep. and 1"):
        ascend_attn.self_attention(*args, **dict(kwargs, kernel_type="HIGH_PRECISION"))


# ----------------------------------------------------------------------------- clamp, logN, compressed masks

def test_clamp_applies_to_the_scaled_scores():
    """clamp_min == clamp_max makes every score equal: the output is the mean of V over the kept keys."""
    args, kwargs = sa_case((), calc_type=3, mask_type=0, seed=11)
    out = ascend_attn.self_attention(*args, **dict(kwargs, clamp_type="MIN_MAX", clamp_min=0.3, clamp_max=0.3))
    q, k, v = args[:3]
    mean_v = v[:5].float().mean(0, keepdim=True).repeat_interleave(2, 1)  # kv head of each query head
    torch.testing.assert_close(out[:5], mean_v.expand(5, 4, 16).half(), rtol=0, atol=2e-3)


def test_logn_scales_the_scores_per_query_position():
    """A constant log_n c equals qk_scale * c."""
    args, kwargs = sa_case(("logn", "high_precision"), seed=12)
    c = 1.75
    got = ascend_attn.self_attention(*args, **dict(kwargs, log_n=torch.full_like(kwargs["log_n"], c)))
    plain = {k: x for k, x in kwargs.items() if k not in ("log_n", "scale_type")}
    want = ascend_attn.self_attention(*args, **dict(plain, qk_scale=kwargs["qk_scale"] * c))
    torch.testing.assert_close(got, want, rtol=0, atol=2e-3)


@pytest.mark.parametrize("mask_type", [4, 6])
def test_left_aligned_alibi_equals_right_aligned(mask_type):
    """slope * j and slope * (j - i) differ by a constant per row: the same softmax."""
    args, kwargs = sa_case(("compressed", "high_precision"), mask_type=4, seed=13)
    right = ascend_attn.self_attention(*args, **kwargs)
    left = ascend_attn.self_attention(*args[:5], compressed_alibi(6, torch.float16), **dict(kwargs, mask_type=6))
    torch.testing.assert_close(left, right, rtol=0, atol=2e-3)


def test_compressed_masks_are_checked():
    args, kwargs = sa_case(("compressed",), calc_type=3, mask_type=3, seed=14)
    flipped = torch.tril(torch.full((128, 128), -torch.inf), -1).half()
    with pytest.raises(ValueError, match="^self_attention: attention_mask only supports the compressed causal mask"):
        ascend_attn.self_attention(*args[:5], flipped, **kwargs)
    args, kwargs = sa_case(("compressed", "high_precision"), mask_type=5, seed=14)
    bad = args[5].clone()
    bad[100, 3] = 7.0
    with pytest.raises(ValueError, match=r"^self_attention: attention_mask only supports a compressed ALiBi bias .*"
                                         r"but got C\[100, 3\] = 7.0"):
        ascend_attn.self_attention(*args[:5], bad, **kwargs)


# ----------------------------------------------------------------------------- quantization formulas

def test_quant_formulas_on_one_row():
    """One query row, one head, two keys: the documented dataflow written out by hand."""
    q = torch.tensor([[[3, -2]]], dtype=torch.int8)
    k = torch.tensor([[[1, 4]], [[5, 2]]], dtype=torch.int8)
    v = torch.tensor([[[10, -20]], [[30, 40]]], dtype=torch.int8)
    qkd, vpv, ps, qk_scale = 0.05, 0.01, 1 / 100, 0.5
    common = dict(seq_len=[1], head_num=1, calc_type="PA_ENCODER", qk_scale=qk_scale, kernel_type=1,
                  qk_descale=torch.tensor([qkd]), qk_offset=torch.zeros(1, dtype=torch.int32),
                  vpv_descale=torch.tensor([vpv]), vpv_offset=torch.zeros(1, dtype=torch.int32),
                  out_data_type="float16")
    # seq_len 1: only key 0 -> P = [1]
    s = np.array([3 * 1 - 2 * 4, 3 * 5 - 2 * 2], float) * qkd * qk_scale
    for quant_type, p8 in (("QKV_ONLINE", lambda p: np.rint(p * 127)), ("QKV_OFFLINE", lambda p: np.rint(p / ps))):
        kw = dict(common, quant_type=quant_type, **({"p_scale": torch.tensor([ps])} if "OFF" in quant_type else {}))
        qq, kk, vv = torch.cat([q, q]), k, v  # two tokens: batch of length 2
        out = ascend_attn.self_attention(qq, kk, vv, **dict(kw, seq_len=[2]))
        # row 1 of the sequence sees both keys (no mask)
        e = np.exp(s - s.max())
        pq = p8(e)
        scale = vpv / 127 if quant_type == "QKV_ONLINE" else vpv
        want = (pq @ v[:, 0].double().numpy()) * scale / e.sum()
        np.testing.assert_allclose(out[1, 0].double().numpy(), want, rtol=2e-3)
        assert out.dtype == torch.float16


# ----------------------------------------------------------------------------- opcheck and compile

OPCHECK_CASES = [("pa-alibi", ("compressed", "high_precision"), dict(mask_type=4)),
                 ("cache-write", ("split",), dict(calc_type=0, seed=2)),
                 ("list-dynamic-batch", ("tensor_list", "dynamic_batch"), dict()),
                 ("quant", ("quant",), dict(quant_type=3))]


@pytest.mark.parametrize("name,features,kw", OPCHECK_CASES, ids=[c[0] for c in OPCHECK_CASES])
def test_opcheck_and_compile(name, features, kw):
    args, kwargs = sa_case(features, **kw)
    q, k, v, ck, cv, mask = args
    torch.library.opcheck(torch.ops.ascend_attn.self_attention.default,
                          ascend_attn.self_attention.op_arguments(q, k, v, ck, cv, mask, **kwargs))
    fresh, _ = sa_case(features, **kw)
    eager = ascend_attn.self_attention(*fresh, **kwargs)
    fresh2, _ = sa_case(features, **kw)
    fn = torch.compile(lambda *a: ascend_attn.self_attention(*a, **kwargs), fullgraph=True)
    assert torch.equal(fn(*fresh2), eager)
    for a, b in zip(tensors_in(fresh), tensors_in(fresh2)):  # the compiled call wrote the caches too
        assert torch.equal(a, b)
