"""IncreFlashAttention (torch op) against the independent reference (testing/ifa_reference.py)."""
import numpy as np
import pytest
import torch

import ascend_attn
from ascend_attn.kernels import incre_flash_attention as kernel
from ascend_attn.testing import ifa_reference as R
from ascend_attn.testing.samples import ifa_case, numpy_kwargs

pytestmark = pytest.mark.usefixtures("cpu_path")


def run_ref(args, kwargs, round_dtype=None):
    q, k, v = args
    conv = lambda x: [t.numpy() if t.dtype != torch.bfloat16 else t.double().numpy() for t in x] if isinstance(x, list) \
        else (x.double().numpy() if x.dtype == torch.bfloat16 else x.numpy())
    return R.incre_flash_attention(conv(q), conv(k), conv(v), round_dtype=round_dtype, **numpy_kwargs(kwargs))


def assert_float_output_ok(args, kwargs):
    got = ascend_attn.incre_flash_attention(*args, **kwargs)
    q = args[0]
    assert got.shape == q.shape and got.dtype == q.dtype
    dtype = {torch.float16: "float16", torch.bfloat16: "bfloat16"}[q.dtype]
    exact = run_ref(args, kwargs)
    low = run_ref(args, kwargs, round_dtype=dtype)
    eps = {"float16": 2 ** -11, "bfloat16": 2 ** -8}[dtype]
    err = np.abs(got.double().numpy() - exact)
    bound = 3 * np.abs(low - exact).max() + 2 * eps * max(1.0, np.abs(exact).max())
    assert np.isfinite(got.double().numpy()).all()
    assert err.max() <= bound, (err.max(), bound)
    return got


@pytest.mark.parametrize("layout", ["BSH", "BSND", "BNSD"])
@pytest.mark.parametrize("heads_q,heads_kv", [(4, 4), (4, 2), (8, 2), (8, 1)])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_layouts_and_gqa(layout, heads_q, heads_kv, dtype):
    args, kwargs = ifa_case(layout, dtype, heads_q=heads_q, heads_kv=heads_kv, seed=heads_q + heads_kv)
    assert_float_output_ok(args, kwargs)


@pytest.mark.parametrize("layout", ["BSH", "BNSD"])
def test_tensor_list_kv(layout):
    args, kwargs = ifa_case(layout, kv_form="list", lengths=[7, 30, 1], seed=1)
    assert_float_output_ok(args, kwargs)


def test_tensor_list_equals_padded_tensor():
    args, kwargs = ifa_case("BSND", kv_form="list", lengths=[9, 20, 4], seed=2)
    q, keys, values = args
    pad = lambda xs: torch.cat([torch.nn.functional.pad(x, (0, 0, 0, 0, 0, 20 - x.shape[1])) for x in xs])
    listed = ascend_attn.incre_flash_attention(q, keys, values, **kwargs)
    padded = ascend_attn.incre_flash_attention(q, pad(keys), pad(values), **kwargs)
    assert torch.equal(listed, padded)


@pytest.mark.parametrize("mask", ["B,S", "B,1,S", "B,1,1,S", "B,N,1,S", "1,N,1,S"])
def test_masks(mask):
    args, kwargs = ifa_case("BSH", mask=mask, seed=3)
    assert_float_output_ok(args, kwargs)


def test_lengths_zero_and_broadcast():
    args, kwargs = ifa_case("BSND", lengths=[0, 17, 40], seed=4)
    got = assert_float_output_ok(args, kwargs)
    assert torch.all(got[0] == 0)
    args, kwargs = ifa_case("BSND", lengths=[13], seed=4)
    assert len(kwargs["actual_seq_lengths"]) == 1
    got = assert_float_output_ok(args, kwargs)
    one = ascend_attn.incre_flash_attention(args[0][1:2], args[1][1:2], args[2][1:2], **kwargs)
    assert torch.equal(got[1:2], one)


def test_pse_shift():
    args, kwargs = ifa_case("BNSD", pse=True, seed=5)
    assert_float_output_ok(args, kwargs)


def test_left_padding():
    """kv_padding_size: the valid range is [S - pad - L, S - pad); equals right padding shifted."""
    args, kwargs = ifa_case("BSH", kv_len=40, lengths=[10, 25, 3], seed=6)
    kwargs["kv_padding_size"] = torch.tensor([5])
    got = assert_float_output_ok(args, kwargs)
    q, k, v = args
    lens = kwargs["actual_seq_lengths"]
    for b, length in enumerate(lens):
        ks, vs = k[b:b + 1, 35 - length:35], v[b:b + 1, 35 - length:35]
        right = ascend_attn.incre_flash_attention(q[b:b + 1], ks, vs, **dict(kwargs, actual_seq_lengths=[length],
                                                                                kv_padding_size=None))
        assert torch.equal(got[b:b + 1], right)


def test_left_padding_past_the_start_gives_zeros():
    args, kwargs = ifa_case("BSH", kv_len=20, lengths=[18, 5, 2], seed=7)
    kwargs["kv_padding_size"] = torch.tensor([4])  # batch 0: start = 20 - 4 - 18 < 0
    got = ascend_attn.incre_flash_attention(*args, **kwargs)
    assert torch.all(got[0] == 0) and not torch.all(got[1] == 0)


@pytest.mark.parametrize("paged_layout,layout", [("BSH", "BSH"), ("BSH", "BSND"), ("BNSD", "BNSD")])
def test_paged_cache(paged_layout, layout):
    args, kwargs = ifa_case(layout, kv_form="paged", paged_layout=paged_layout, lengths=[33, 1, 48], kv_len=48, seed=8)
    got = assert_float_output_ok(args, kwargs)  # NaN fills every unused page: never read
    # the same data as a contiguous cache
    q, k, v = args
    table = kwargs["block_table"].long()
    def contiguous(cache):
        rows = cache[table]  # [B, M, ...]
        if paged_layout == "BSH":
            return rows.reshape(3, -1, cache.shape[-1]) if layout == "BSH" else rows.reshape(3, -1, 2, 32)
        return rows.permute(0, 2, 1, 3, 4).reshape(3, 2, -1, 32)
    flat = dict(kwargs, block_table=None, block_size=0)
    assert torch.equal(got, ascend_attn.incre_flash_attention(q, contiguous(k), contiguous(v), **flat))


@pytest.mark.parametrize("antiquant", ["channel", "tensor"])
@pytest.mark.parametrize("layout", ["BSH", "BSND", "BNSD"])
def test_antiquant_int8_cache(antiquant, layout):
    args, kwargs = ifa_case(layout, antiquant=antiquant, seed=9)
    assert args[1].dtype == torch.int8
    assert_float_output_ok(args, kwargs)


def test_antiquant_with_paged_cache():
    args, kwargs = ifa_case("BSH", antiquant="channel", kv_form="paged", block_size=32, kv_len=64,
                            lengths=[64, 31, 2], seed=10)
    assert_float_output_ok(args, kwargs)


def test_nan_beyond_lengths_is_never_read():
    args, kwargs = ifa_case("BSH", lengths=[10, 20, 30], kv_len=40, seed=11)
    clean = ascend_attn.incre_flash_attention(*args, **kwargs)
    q, k, v = args
    k, v = k.clone(), v.clone()
    for b, length in enumerate(kwargs["actual_seq_lengths"]):
        k[b, length:] = float("nan")
        v[b, length:] = float("nan")
    assert torch.equal(ascend_attn.incre_flash_attention(q, k, v, **kwargs), clean)


def test_fully_masked_row_gives_zero():
    args, kwargs = ifa_case("BSH", mask="B,S", seed=12)
    kwargs["atten_mask"][1] = True
    got = ascend_attn.incre_flash_attention(*args, **kwargs)
    assert torch.all(got[1] == 0) and torch.isfinite(got.float()).all()


# ----------------------------------------------------------------------------- quantisation

def one_key_case(v_values, heads=2, dim=16, dtype=torch.float16):
    """One valid key: softmax weight 1, so the float output is V exactly and quant2 is testable."""
    q = torch.randn(1, 1, heads * dim).to(dtype)
    k = torch.randn(1, 1, heads * dim).to(dtype)
    v = torch.tensor(v_values, dtype=torch.float32).to(dtype).reshape(1, 1, heads * dim)
    return (q, k, v), {"num_heads": heads}


def test_scenario_c_per_tensor_rounds_half_even_and_saturates():
    vals = [2.5, 3.5, -2.5, 0.5, 1.5, 200.0, -300.0, 126.5] * 4
    args, kwargs = one_key_case(vals)
    got = ascend_attn.incre_flash_attention(*args, **kwargs, quant_scale2=torch.tensor([1.0]))
    assert got.dtype == torch.int8
    assert got.reshape(-1)[:8].tolist() == [2, 4, -2, 0, 2, 127, -128, 126]


def test_scenario_c_per_channel_rounds_half_away():
    vals = [2.5, 3.5, -2.5, 0.5, 1.5, 200.0, -300.0, 100.49] * 4
    args, kwargs = one_key_case(vals, dtype=torch.float32 if False else torch.float16)
    scale = torch.ones(2 * 16)
    got = ascend_attn.incre_flash_attention(*args, **kwargs, quant_scale2=scale, quant_offset2=torch.zeros(2 * 16))
    # 100.49 is stored in fp16 as 100.5 -> half-away -> 101 (the semantics page's example)
    assert got.reshape(-1)[:8].tolist() == [3, 4, -3, 1, 2, 127, -128, 101]


def test_scenario_c_per_channel_is_indexed_by_query_head():
    args, kwargs = one_key_case([1.0] * 32)
    scale = torch.cat([torch.full((16,), 3.0), torch.full((16,), 5.0)])  # head 0: x3, head 1: x5
    got = ascend_attn.incre_flash_attention(*args, **kwargs, quant_scale2=scale.view(2, 16))
    assert got.reshape(2, 16)[:, 0].tolist() == [3, 5]


@pytest.mark.parametrize("channel", [False, True])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_scenario_c_against_reference(channel, dtype):
    args, kwargs = ifa_case("BSND", dtype, seed=13)
    n = 8 * 32
    kwargs["quant_scale2"] = (torch.rand(n) * 60 + 20) if channel else torch.tensor([50.0])
    kwargs["quant_offset2"] = torch.round(torch.rand(kwargs["quant_scale2"].shape) * 6 - 3)
    if dtype == "bfloat16":
        kwargs["quant_scale2"], kwargs["quant_offset2"] = kwargs["quant_scale2"].bfloat16(), kwargs["quant_offset2"].bfloat16()
    got = ascend_attn.incre_flash_attention(*args, **kwargs)
    want = run_ref(args, kwargs, round_dtype=dtype)
    diff = np.abs(got.numpy().astype(np.int64) - want)
    assert diff.max() <= 1 and (diff == 0).mean() > 0.95  # float rounding can move a value over a tie


def int8_case(seed=14, batch=2, heads=4, dim=32, kv_len=50, scenario="B"):
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randint(-60, 61, s, generator=gen, dtype=torch.int8)
    q, k, v = r(batch, 1, heads * dim), r(batch, kv_len, heads * dim), r(batch, kv_len, heads * dim)
    s_q, s_k, s_v = 0.02, 0.015, 0.03
    kw = {"num_heads": heads, "scale_value": dim ** -0.5, "actual_seq_lengths": [kv_len, kv_len - 13],
          "dequant_scale1": ascend_attn.trans_quant_param(torch.tensor([s_q * s_k])),
          "quant_scale1": torch.tensor([127.0]), "dequant_scale2": torch.tensor([s_v / 127.0])}
    if scenario == "A":
        kw["quant_scale2"] = torch.tensor([40.0])
        kw["quant_offset2"] = torch.tensor([1.0])
    return (q, k, v), kw


@pytest.mark.parametrize("scenario", ["A", "B"])
def test_full_int8_scenarios_follow_the_specified_dataflow(scenario):
    args, kwargs = int8_case(scenario=scenario)
    got = ascend_attn.incre_flash_attention(*args, **kwargs)
    want = run_ref(args, kwargs)
    assert got.dtype == (torch.int8 if scenario == "A" else torch.float16)
    diff = np.abs(got.double().numpy() - want)
    if scenario == "A":
        assert diff.max() <= 1 and (diff == 0).mean() > 0.95
    else:
        assert np.all(diff <= 2 * 2 ** -10 * np.maximum(np.abs(want), 2 ** -14))


def test_full_int8_approximates_float_attention():
    """Scenario B with realistic scales stays close to float attention on the dequantised data."""
    args, kwargs = int8_case()
    got = ascend_attn.incre_flash_attention(*args, **kwargs).float()
    q, k, v = (x.float() for x in args)
    qd, kd, vd = q * 0.02, k * 0.015, v * 0.03
    ref = ascend_attn.incre_flash_attention(qd.half(), kd.half(), vd.half(), num_heads=4,
                                            scale_value=kwargs["scale_value"], actual_seq_lengths=[50, 37]).float()
    assert (got - ref).abs().max() < 0.05 * ref.abs().max()


def test_dequant_word_and_float_scale_agree():
    args, kwargs = int8_case()
    as_word = ascend_attn.incre_flash_attention(*args, **kwargs)
    as_float = ascend_attn.incre_flash_attention(*args, **dict(kwargs, dequant_scale1=torch.tensor([0.02 * 0.015])))
    assert torch.equal(as_word, as_float)  # both reduce to the same FP19 value


def test_dequant_word_with_offset_bits_is_rejected():
    args, kwargs = int8_case()
    kwargs["dequant_scale1"] = ascend_attn.trans_quant_param(torch.tensor([0.1]), torch.tensor([3.0]))
    with pytest.raises(ValueError, match="dequant_scale1"):
        ascend_attn.incre_flash_attention(*args, **kwargs)


def test_trans_quant_param_matches_reference():
    scale = torch.tensor([1.0, 0.3, 1e-3, 7.25])
    offset = torch.tensor([-1.0, 2.5, 300.0, -400.0])
    got = ascend_attn.trans_quant_param(scale, offset)
    assert got.dtype == torch.int64
    np.testing.assert_array_equal(got.numpy(), R.trans_quant_param(scale.numpy(), offset.numpy()))
    np.testing.assert_array_equal(ascend_attn.trans_quant_param(scale).numpy(), R.trans_quant_param(scale.numpy()))


FORBIDDEN = [
    ("B-with-quant-offset2-only", "B", {"quant_offset2": torch.tensor([1.0])}, "quant_offset2"),
    ("B-missing-quant-scale1", "B", {"quant_scale1": None}, "quant_scale1"),
    ("A-missing-dequant-scale2", "A", {"dequant_scale2": None}, "dequant_scale2"),
    ("C-with-dequant-scale1", "C", {"dequant_scale1": torch.tensor([1.0])}, "dequant_scale1"),
    ("C-with-quant-scale1", "C", {"quant_scale1": torch.tensor([1.0])}, "quant_scale1"),
    ("float-with-dequant-scale2", "float", {"dequant_scale2": torch.tensor([1.0])}, "dequant_scale2"),
    ("offset-shape", "C", {"quant_offset2": torch.zeros(2)}, "quant_offset2"),
    ("scale2-shape", "C", {"quant_scale2": torch.ones(7)}, "quant_scale2"),
    ("dequant-two-elements", "B", {"dequant_scale1": torch.ones(2)}, "dequant_scale1"),
    ("dequant-dtype", "B", {"dequant_scale1": torch.ones(1, dtype=torch.float16)}, "dequant_scale1"),
]


@pytest.mark.parametrize("row", FORBIDDEN, ids=[r[0] for r in FORBIDDEN])
def test_quant_parameter_combinations(row):
    _, scenario, change, arg = row
    if scenario in ("A", "B"):
        args, kwargs = int8_case(scenario=scenario)
    else:
        args, kwargs = ifa_case("BSH", seed=15)
        if scenario == "C":
            kwargs["quant_scale2"] = torch.tensor([10.0])
    kwargs.update(change)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    copies = [a.clone() for a in args]
    with pytest.raises((ValueError, TypeError)) as info:
        ascend_attn.incre_flash_attention(*args, **kwargs)
    assert str(info.value).startswith("incre_flash_attention: ") and arg in str(info.value), str(info.value)
    assert all(torch.equal(a, c) for a, c in zip(args, copies))


def test_streaming_blocks_are_exact(monkeypatch):
    """Tiny KV blocks (many online-softmax steps, several pages per step) change nothing material."""
    for case in (dict(), dict(kv_form="paged", kv_len=64), dict(antiquant="tensor")):
        args, kwargs = ifa_case("BSH", "float16", kv_len=case.pop("kv_len", 40), seed=16, **case)
        big = ascend_attn.incre_flash_attention(*args, **kwargs)
        monkeypatch.setattr(kernel, "BLOCK_KV", 16)
        small = ascend_attn.incre_flash_attention(*args, **kwargs)
        monkeypatch.undo()
        torch.testing.assert_close(small.float(), big.float(), rtol=0, atol=2e-3)


@pytest.mark.parametrize("case", ["float", "paged", "C", "B"])
def test_opcheck_and_compile(case):
    if case in ("float", "paged", "C"):
        args, kwargs = ifa_case("BSND", kv_form="paged" if case == "paged" else "tensor", kv_len=48, seed=17)
        if case == "C":
            kwargs["quant_scale2"] = torch.tensor([30.0])
    else:
        args, kwargs = int8_case()
        kwargs["dequant_scale1"] = torch.tensor([3e-4])  # float form (uint64 is not opcheck-friendly)
    q, k, v = args
    torch.library.opcheck(torch.ops.ascend_attn.incre_flash_attention.default,
                          ascend_attn.incre_flash_attention.op_arguments(q, k, v, **kwargs))
    fn = torch.compile(lambda q, k, v: ascend_attn.incre_flash_attention(q, k, v, **kwargs), fullgraph=True)
    assert torch.equal(fn(q, k, v), ascend_attn.incre_flash_attention(q, k, v, **kwargs))
