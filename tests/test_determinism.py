"""Determinism (issue 8): bit-identical outputs and gradients run to run, and thread-count claims.

Claim (measured on the CPU fallback, torch 2.13, 1/2/4 intra-op threads): every op gives
**bit-identical results regardless of ``torch.set_num_threads``** -- forward outputs, softmax
statistics and all gradients. The kernels reduce in a fixed order (fixed key blocks of the online
softmax, per-block ``bmm``/``baddbmm`` accumulation, GQA sums in a fixed head order); intra-op
threads only split independent work. The tests below pin that claim for 1 vs 2 threads (and 4)
on shapes large enough to span several key blocks (FA ``BLOCK_K`` = 512, several IFA KV blocks)
so that a future change introducing thread-dependent reductions is caught.

FA runs on both CPU kernel paths: the native kernels split work over (sequence, kv head, query
block) in the forward and (sequence, kv head) in the backward, each item reducing in a fixed order.

Comparisons are on the raw bit patterns (NaN-safe), not on values.
"""
from __future__ import annotations

import contextlib

import pytest
import torch

import ascend_attn
from ascend_attn import native
from ascend_attn.testing.samples import fa_case, ifa_case, rau_torch_sample_inputs

_INT_VIEW = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16,
             torch.float64: torch.int64}


def bits(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().contiguous()
    return t.view(_INT_VIEW[t.dtype]) if t.dtype in _INT_VIEW else t


def assert_bit_identical(a, b):
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b)):
        assert x.shape == y.shape and x.dtype == y.dtype, i
        assert torch.equal(bits(x), bits(y)), f"result {i} differs: max |diff| = " \
            f"{(x.double() - y.double()).abs().nan_to_num(0).max().item()}"


@contextlib.contextmanager
def threads(n):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# ----------------------------------------------------------------------------- one call per op

def run_rau():
    out = []
    for args, kwargs in rau_torch_sample_inputs():
        out += list(ascend_attn.ring_attention_update(*args, **kwargs))
    g = torch.Generator().manual_seed(0)
    t, n, d = 300, 4, 128
    big = [torch.randn(t, n, d, generator=g), torch.randn(t, n, 8, generator=g) * 5, torch.rand(t, n, 8, generator=g) + 1,
           torch.randn(t, n, d, generator=g), torch.randn(t, n, 8, generator=g) * 5, torch.rand(t, n, 8, generator=g) + 1]
    big[0], big[3] = big[0].half(), big[3].half()
    out += list(ascend_attn.ring_attention_update(*big, actual_seq_qlen=[0, 100, 300], input_layout="TND",
                                                  input_softmax_layout="TND"))
    return out


def fa_inputs(dtype, **extra):
    # seq 1 spans two key blocks (BLOCK_K = 512) and two query blocks (BLOCK_Q = 128)
    return fa_case(dtype, seq_q=(5, 150, 37), seq_kv=(9, 600, 40), heads_q=4, heads_kv=2, head_dim=32, seed=7,
                   **extra)


def run_fa(dtype, **extra):
    args, kwargs = fa_inputs(dtype, **extra)
    q, k, v = (x.detach().clone().requires_grad_() for x in args[:3])
    out, smax, ssum = ascend_attn.flash_attention_varlen_score(q, k, v, *args[3:], **kwargs)
    dy = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out.dtype)
    out.backward(dy)
    return [out, smax, ssum, q.grad, k.grad, v.grad]


def run_fa_grad_op(dtype):
    args, kwargs = fa_inputs(dtype, sparse_mode=3, softmax_layout="same_as_input")
    out, smax, ssum = ascend_attn.flash_attention_varlen_score(*args, **kwargs)
    layout = kwargs.pop("softmax_out_layout")
    dy = torch.randn(out.shape, generator=torch.Generator().manual_seed(2)).to(out.dtype)
    dq, dk, dv, dpse = ascend_attn.flash_attention_unpadding_score_grad(
        *args[:3], dy, *args[3:], smax, ssum, out, softmax_in_layout=layout, **kwargs)
    return [dq, dk, dv, dpse]


def run_ifa(dtype="float16", **extra):
    args, kwargs = ifa_case("BSND", dtype, batch=3, heads_q=8, heads_kv=2, head_dim=32, kv_len=700,
                            lengths=extra.pop("lengths", [700, 333, 1]), seed=9, **extra)
    return [ascend_attn.incre_flash_attention(*args, **kwargs)]


def run_ifa_quant():
    args, kwargs = ifa_case("BSH", "bfloat16", kv_len=300, seed=10)
    kwargs["quant_scale2"] = torch.rand(8 * 32, generator=torch.Generator().manual_seed(3)) * 40 + 10
    out = [ascend_attn.incre_flash_attention(*args, **kwargs)]
    gen = torch.Generator().manual_seed(11)
    r = lambda *s: torch.randint(-60, 61, s, generator=gen, dtype=torch.int8)
    q, k, v = r(2, 1, 128), r(2, 300, 128), r(2, 300, 128)
    kw = {"num_heads": 4, "scale_value": 32 ** -0.5, "actual_seq_lengths": [300, 77],
          "dequant_scale1": ascend_attn.trans_quant_param(torch.tensor([3e-4])), "quant_scale1": torch.tensor([127.0]),
          "dequant_scale2": torch.tensor([2e-4])}
    out.append(ascend_attn.incre_flash_attention(q, k, v, **kw))                       # scenario B
    out.append(ascend_attn.incre_flash_attention(q, k, v, quant_scale2=torch.tensor([30.0]), **kw))  # A
    return out


RUNS = {
    "rau": run_rau,
    "fa-fp32-mask-dropout": lambda: run_fa("float32", sparse_mode=0, dropout=True),
    "fa-fp16-causal-pse": lambda: run_fa("float16", sparse_mode=3, pse_type=1),
    "fa-bf16-band-alibi": lambda: run_fa("bfloat16", sparse_mode=4, pse_type=2),
    "fa-bf16-prefix-tnd-stats": lambda: run_fa("bfloat16", sparse_mode=6, softmax_layout="same_as_input"),
    "fa-grad-op-fp16": lambda: run_fa_grad_op("float16"),
    "ifa-fp16": run_ifa,
    "ifa-bf16-mask-pse": lambda: run_ifa("bfloat16", mask="B,N,1,S", pse=True),
    "ifa-paged": lambda: run_ifa(kv_form="paged", block_size=64, lengths=[700, 64, 0]),
    "ifa-antiquant": lambda: run_ifa(antiquant="channel"),
    "ifa-quant-scenarios": run_ifa_quant,
    "trans-quant-param": lambda: [ascend_attn.trans_quant_param(torch.linspace(1e-4, 3.0, 4097),
                                                                 torch.linspace(-300.0, 300.0, 4097))],
}


# FA runs on both CPU kernel paths (native C++ and eager torch); the other ops on the default one.
CASES = [(name, path) for name in RUNS for path in (("native", "eager") if name.startswith("fa") else (None,))]


def case_id(case):
    return case[0] if case[1] is None else f"{case[0]}-{case[1]}"


def run_on(name, path):
    with contextlib.nullcontext() if path is None else native.forced(path):
        return RUNS[name]()


@pytest.mark.parametrize("name,path", CASES, ids=[case_id(c) for c in CASES])
def test_run_to_run_bit_identical(name, path):
    with threads(2):
        first = run_on(name, path)
        second = run_on(name, path)
    assert_bit_identical(first, second)


@pytest.mark.parametrize("name,path", CASES, ids=[case_id(c) for c in CASES])
def test_results_do_not_depend_on_thread_count(name, path):
    """The documented claim: 1, 2 and 4 intra-op threads give bit-identical results."""
    with threads(1):
        one = run_on(name, path)
    with threads(2):
        two = run_on(name, path)
    assert_bit_identical(one, two)
    if name.startswith("fa-fp32") or name == "ifa-fp16" or path == "native":
        with threads(4):
            four = run_on(name, path)
        assert_bit_identical(one, four)


@pytest.mark.usefixtures("cpu_path")
def test_fa_gradients_identical_through_autograd_and_grad_op():
    """The autograd backward and the explicit grad op are the same computation, bit for bit."""
    args, kwargs = fa_inputs("float16", sparse_mode=3, softmax_layout="same_as_input")
    q, k, v = (x.detach().clone().requires_grad_() for x in args[:3])
    out, smax, ssum = ascend_attn.flash_attention_varlen_score(q, k, v, *args[3:], **kwargs)
    dy = torch.randn(out.shape, generator=torch.Generator().manual_seed(2)).to(out.dtype)
    out.backward(dy)
    layout = kwargs.pop("softmax_out_layout")
    dq, dk, dv, _ = ascend_attn.flash_attention_unpadding_score_grad(
        *args[:3], dy, *args[3:], smax, ssum, out.detach(), softmax_in_layout=layout, **kwargs)
    assert_bit_identical([q.grad, k.grad, v.grad], [dq, dk, dv])
