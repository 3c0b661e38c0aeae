"""Native CPU kernels of IncreFlashAttention and RingAttentionUpdate against the eager kernels.

The reference comparisons of test_incre_flash_attention.py / test_ring_attention_update.py run on
both paths (``cpu_path``); here: the two paths agree with each other (bit for bit where the
specified dataflow is exact), the native results do not depend on the thread count (work split
into fixed KV chunks merged in a fixed order), and NaN in an attended input propagates.
"""
import pytest
import torch

import ascend_attn
from ascend_attn import native
from ascend_attn.testing.samples import ifa_case, rau_torch_sample_inputs
from test_determinism import bits, threads

@pytest.fixture(autouse=True, scope="module")
def _native_built():
    assert native.unavailable_reason() is None, native.unavailable_reason()
    assert {"incre_flash_attention", "ring_attention_update"} <= set(native.OPS)


def both_paths(fn):
    with native.forced("native"):
        got = fn()
    with native.forced("eager"):
        want = fn()
    return got, want


# ----------------------------------------------------------------------------- IFA: float dataflow
FLOAT_CASES = {
    "bsh-fp16-gqa": dict(layout="BSH", dtype="float16"),
    "bnsd-bf16-mha": dict(layout="BNSD", dtype="bfloat16", heads_kv=8),
    "bsnd-fp16-mask-pse": dict(layout="BSND", dtype="float16", mask="B,N,1,S", pse=True),
    "list-fp16": dict(layout="BSH", kv_form="list", lengths=[7, 30, 1]),
    "paged-bsh-bf16": dict(layout="BSH", dtype="bfloat16", kv_form="paged", lengths=[40, 17, 0]),
    "paged-bnsd-fp16": dict(layout="BNSD", kv_form="paged", paged_layout="BNSD", lengths=[33, 40, 5]),
    "antiquant-channel-paged": dict(layout="BSH", antiquant="channel", kv_form="paged", block_size=32),
    "antiquant-tensor-bnsd-bf16": dict(layout="BNSD", dtype="bfloat16", antiquant="tensor", mask="B,1,S"),
    "odd-head-dim": dict(layout="BSND", dtype="bfloat16", head_dim=20, heads_q=6, heads_kv=3),
}


@pytest.mark.parametrize("name", list(FLOAT_CASES))
def test_ifa_native_agrees_with_eager(name):
    args, kwargs = ifa_case(**FLOAT_CASES[name], seed=len(name))
    got, want = both_paths(lambda: ascend_attn.incre_flash_attention(*args, **kwargs))
    assert got.dtype == want.dtype and got.shape == want.shape
    # Different exp implementations and chunk/accumulation orders: a few fp32 roundings of the
    # softmax, then possibly one output ulp where the two fall on either side of a rounding point.
    eps = {torch.float16: 2 ** -10, torch.bfloat16: 2 ** -7, torch.float32: 2 ** -20}[got.dtype]
    torch.testing.assert_close(got.float(), want.float(), rtol=eps, atol=eps * float(want.float().abs().max()))


def test_ifa_scenario_c_agrees_with_eager():
    for channel in (False, True):
        args, kwargs = ifa_case("BSH", "bfloat16", kv_len=300, seed=10)
        scale = torch.rand(8 * 32 if channel else 1, generator=torch.Generator().manual_seed(3)) * 40 + 10
        kwargs.update(quant_scale2=scale, quant_offset2=torch.full_like(scale, 2.0))
        got, want = both_paths(lambda: ascend_attn.incre_flash_attention(*args, **kwargs))
        assert got.dtype == torch.int8
        diff = (got.int() - want.int()).abs()
        assert diff.max() <= 1 and (diff == 0).float().mean() > 0.97


# ----------------------------------------------------------------------------- IFA: full int8 (A/B)
def int8_case(equal_keys: bool, scenario: str, seed=0):
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randint(-100, 101, s, generator=gen, dtype=torch.int8)
    batch, heads, kv_heads, dim, kv_len = 2, 8, 2, 64, 1500  # two KV chunks per row
    q, k, v = r(batch, 1, heads * dim), r(batch, kv_len, kv_heads * dim), r(batch, kv_len, kv_heads * dim)
    if equal_keys:  # every score of a row equal: eh = 1 exactly, the whole dataflow is exact
        k[:] = k[:, :1]
    mask = torch.rand(batch, 1, 1, kv_len, generator=gen) < 0.3
    kw = {"num_heads": heads, "num_key_value_heads": kv_heads, "scale_value": dim ** -0.5,
          "actual_seq_lengths": [kv_len, kv_len - 400], "atten_mask": mask,
          "dequant_scale1": ascend_attn.trans_quant_param(torch.tensor([3e-4])), "quant_scale1": torch.tensor([127.0]),
          "dequant_scale2": torch.tensor([2e-4])}
    if scenario == "A":
        kw.update(quant_scale2=torch.tensor([30.0]), quant_offset2=torch.tensor([1.0]))
    return (q, k, v), kw


@pytest.mark.parametrize("scenario", ["A", "B"])
def test_ifa_full_int8_bit_exact_where_the_dataflow_is_exact(scenario):
    args, kwargs = int8_case(equal_keys=True, scenario=scenario)
    got, want = both_paths(lambda: ascend_attn.incre_flash_attention(*args, **kwargs))
    assert got.dtype == (torch.int8 if scenario == "A" else torch.float16)
    assert torch.equal(bits(got), bits(want))
    if scenario == "B":  # and by hand: o = fp32(p8 * sum_kept v) * deq2 / n_kept, rounded half away
        q, k, v = args
        p8 = float(torch.tensor(127.0).half())
        keep = ~kwargs["atten_mask"][0, 0, 0, :1500]
        oi = (v[0, :1500][keep].double() * p8).sum(0)
        dq2 = float(torch.tensor(2e-4).view(torch.int32).bitwise_and(-8192).view(torch.float32))
        o = (oi.float() * dq2) / float(keep.sum())
        torch.testing.assert_close(got[0, 0, :64].float(), o[:64].half().float(), rtol=2 ** -10, atol=0)


@pytest.mark.parametrize("scenario", ["A", "B"])
def test_ifa_full_int8_agrees_with_eager(scenario):
    args, kwargs = int8_case(equal_keys=False, scenario=scenario, seed=1)
    got, want = both_paths(lambda: ascend_attn.incre_flash_attention(*args, **kwargs))
    if scenario == "A":
        diff = (got.int() - want.int()).abs()
        assert diff.max() <= 1 and (diff == 0).float().mean() > 0.97
    else:
        torch.testing.assert_close(got.float(), want.float(), rtol=2 ** -9, atol=2 ** -14)


# ----------------------------------------------------------------------------- thread counts
def _ifa_runs():
    long = dict(batch=1, heads_q=8, heads_kv=2, head_dim=32, kv_len=2600, lengths=[2600])  # 3 chunks, B*Nkv = 2
    return {
        "fp16-flash-decoding": lambda: ifa_case("BSH", **long, seed=1),
        "bf16-paged-bnsd-mask": lambda: ifa_case("BNSD", "bfloat16", **long, kv_form="paged", paged_layout="BNSD",
                                                 block_size=64, mask="B,1,1,S", seed=2),
        "antiquant": lambda: ifa_case("BSND", **long, antiquant="channel", seed=3),
        "scenario-A": lambda: int8_case(equal_keys=False, scenario="A", seed=4),
    }


@pytest.mark.parametrize("name", list(_ifa_runs()))
def test_ifa_native_bit_identical_for_any_thread_count(name):
    args, kwargs = _ifa_runs()[name]()
    results = []
    with native.forced("native"):
        for n in (1, 2, 3):
            with threads(n):
                results.append(ascend_attn.incre_flash_attention(*args, **kwargs))
    for r in results[1:]:
        assert torch.equal(bits(r), bits(results[0]))


@pytest.mark.parametrize("long_rows", [False, True], ids=["short", "several-units"])
def test_rau_native_bit_identical_for_any_thread_count_and_close_to_eager(long_rows):
    for args, kwargs in rau_torch_sample_inputs(long_rows=long_rows):
        runs = []
        with native.forced("native"):
            for n in (1, 2, 3):
                with threads(n):
                    runs.append(ascend_attn.ring_attention_update(*args, **kwargs))
        with native.forced("eager"):
            eager = ascend_attn.ring_attention_update(*args, **kwargs)
        for a, b in zip(runs[0], runs[1]):
            assert torch.equal(bits(a), bits(b))
        out, m, s = runs[0]
        assert torch.equal(m, eager[1])  # the max is exact
        torch.testing.assert_close(s, eager[2], rtol=4e-7, atol=0)
        eps = {torch.float16: 2 ** -10, torch.bfloat16: 2 ** -7, torch.float32: 2 ** -21}[out.dtype]
        scale = float(args[0].float().abs().max() + args[3].float().abs().max())
        torch.testing.assert_close(out.float(), eager[0].float(), rtol=eps, atol=4 * eps * scale)


# ----------------------------------------------------------------------------- NaN propagation
def test_ifa_native_propagates_nan_from_query_and_attended_keys():
    """NaN in the query or in a kept key/value row reaches the output; masked rows and positions
    beyond the lengths are not read, and a fully masked row stays 0."""
    args, kwargs = ifa_case("BSND", "float16", batch=3, heads_q=4, heads_kv=2, kv_len=40, lengths=[40, 30, 20],
                            mask="B,1,S", seed=7)
    q, k, v = (x.clone() for x in args)
    mask = kwargs["atten_mask"].clone()
    mask[2] = True  # batch 2 fully masked
    q[0, 0, 1] = float("nan")  # batch 0, query head 1 (KV head 0)
    kept = int((~mask[1, 0, :30]).nonzero()[0])
    k[1, kept, 1, 5] = float("nan")  # batch 1, KV head 1: query heads 2 and 3
    k[1, 35, 0] = float("nan")  # beyond the length of batch 1: never read
    k[2, :, :] = float("nan")  # batch 2: fully masked
    with native.forced("native"):
        out = ascend_attn.incre_flash_attention(q, k, v, **dict(kwargs, atten_mask=mask))
    nan = torch.isnan(out)
    assert nan[0, 0, 1].all() and not nan[0, 0, [0, 2, 3]].any()
    assert nan[1, 0, 2:].all() and not nan[1, 0, :2].any()
    assert torch.all(out[2] == 0)
    kept0 = int((~kwargs["atten_mask"][0, 0]).nonzero()[0])
    v2 = args[2].clone()
    v2[0, kept0, 0, 7] = float("nan")  # a kept value row of batch 0, KV head 0 (query heads 0, 1)
    with native.forced("native"):
        out = ascend_attn.incre_flash_attention(args[0], args[1], v2, **kwargs)
    assert torch.isnan(out[0, 0, :2, 7]).all() and not torch.isnan(out[0, 0, 2:]).any()


# ----------------------------------------------------------------------------- scalar fallback
_SCALAR_SCRIPT = """
import sys, torch, ascend_attn
from ascend_attn import native
sys.path.insert(0, {tests!r})
from test_native_decode import ifa_case, int8_case
from ascend_attn.testing.samples import rau_torch_sample_inputs
torch.set_num_threads(1)
outs = []
with native.forced("native"):
    for case in ({cases!r}):
        args, kwargs = int8_case(False, "A", seed=4) if case == "A" else ifa_case(**case, seed=5)
        outs.append(ascend_attn.incre_flash_attention(*args, **kwargs))
    # NaN in a query row and in a kept key: P's rounding must carry NaN the same way in both builds
    (q, k, *rest), kwargs = ifa_case("BSH", "float16", seed=6)
    q, k = q.clone(), k.clone()
    q[0, 0, 5] = float("nan")
    k[1, 3, 7] = float("nan")
    outs.append(ascend_attn.incre_flash_attention(q, k, *rest, **kwargs))
    for args, kwargs in rau_torch_sample_inputs():
        outs += list(ascend_attn.ring_attention_update(*args, **kwargs))
torch.save(outs, sys.argv[1])
"""


def test_scalar_fallback_gives_the_same_bits_as_simd(tmp_path):
    """CPUs without AVX2 run the portable code: same operations in the same order, same bits."""
    import os
    import subprocess
    import sys
    cases = [dict(layout="BSH", dtype="float16", kv_len=1100, head_dim=36, lengths=[1100, 500, 3]),
             dict(layout="BNSD", dtype="bfloat16", antiquant="channel", mask="B,N,1,S", pse=True, head_dim=32),
             dict(layout="BSH", kv_form="paged", block_size=32, dtype="bfloat16"), "A"]
    script = _SCALAR_SCRIPT.format(tests=os.path.dirname(__file__), cases=tuple(cases))
    results = {}
    for isa in ("scalar", "native"):
        env = dict(os.environ, ASCEND_ATTN_CPU_ISA=isa)
        out = tmp_path / f"{isa}.pt"
        run = subprocess.run([sys.executable, "-c", script, str(out)], env=env, capture_output=True, text=True,
                             timeout=600)
        assert run.returncode == 0, run.stderr[-2000:]
        results[isa] = torch.load(out)
    assert len(results["scalar"]) == len(results["native"]) > 4
    for a, b in zip(results["scalar"], results["native"]):
        assert torch.equal(bits(a), bits(b))
