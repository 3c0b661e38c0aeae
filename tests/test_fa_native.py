"""The native FA CPU kernels (csrc/cpu/flash_attention_*.cpp) against the eager torch kernel.

Both implement semantics.md §2-§6 with the same rounding points; they differ only in the order of
fp32 accumulation (BLAS blocking, vector lanes) and in exp's last bit, so they agree to a few fp32
ulps, and to one unit of the input dtype where a rounding point (P, dS, outputs) falls on the other
side of a boundary. Both are checked against the float64 reference elsewhere (test_flash_attention
runs on both paths); this file pins their agreement over every feature in one place, with tiles
small enough that every tile kind (skipped, partial, full) and the online softmax occur.
"""
import pytest
import torch

import ascend_attn
from ascend_attn import native
from ascend_attn.native import flash_attention as native_fa
from ascend_attn.testing.samples import fa_case

from test_determinism import assert_bit_identical, threads

MODES = [0, 1, 2, 3, 4, 6, 7, 8]
DTYPES = ["float32", "float16", "bfloat16"]
# fp32 agreement bound, relative to the largest magnitude; low precision adds units of the dtype.
EPS = {"float32": 2e-6, "float16": 2 ** -10, "bfloat16": 2 ** -7}


@pytest.fixture(autouse=True)
def native_built():
    assert native.unavailable_reason() is None, native.unavailable_reason()


def run(path, args, kwargs, blocks=(0, 0)):
    """Forward + backward through autograd on ``path``; blocks = native tile sizes (0 = default)."""
    q, k, v = (x.detach().clone().requires_grad_() for x in args[:3])
    old = native_fa.BLOCK_Q, native_fa.BLOCK_K
    native_fa.BLOCK_Q, native_fa.BLOCK_K = blocks
    try:
        with native.forced(path):
            out, smax, ssum = ascend_attn.flash_attention_varlen_score(q, k, v, *args[3:], **kwargs)
            dy = torch.randn(out.shape, generator=torch.Generator().manual_seed(5)).to(out.dtype)
            out.backward(dy)
    finally:
        native_fa.BLOCK_Q, native_fa.BLOCK_K = old
    return [out.detach(), smax, ssum, q.grad, k.grad, v.grad]


def assert_agree(native_res, eager_res, dtype):
    names = ("out", "softmax_max", "softmax_sum", "dq", "dk", "dv")
    for name, a, b in zip(names, native_res, eager_res):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        a, b = a.double(), b.double()
        assert torch.equal(a == 0, b == 0) or name not in ("softmax_max", "softmax_sum"), name  # same tails
        eps = 2e-6 if name.startswith("softmax") else EPS[dtype]
        bound = 4 * eps * max(1.0, float(b.abs().max()))
        err = float((a - b).abs().max())
        assert err <= bound, (name, err, bound)


def long_case(dtype, mode, **extra):
    """Several query / key tiles per sequence at 16 x 32 tiles, a one-row sequence and (without pse,
    which forbids it) an empty one."""
    empty = 0 if extra.get("pse_type") is None else 3
    seq_q, seq_kv = ((40, 1, empty, 65), (40, 9, 3, 67)) if mode != 8 else ((40, 9, 0, 65), (39, 9, 0, 65))
    return fa_case(dtype, seq_q, seq_kv, heads_q=4, heads_kv=2, head_dim=24, sparse_mode=mode, seed=mode, **extra)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", MODES)
def test_native_agrees_with_eager_in_every_mode(mode, dtype):
    # alternate the extra features over the cases: dropout, both statistics layouts, pse forms
    extra = {"dropout": mode % 2 == 0, "softmax_layout": "same_as_input" if mode in (1, 4, 8) else ""}
    if mode in (0, 3, 4):
        extra["pse_type"] = 1 if dtype == "float32" else 0
    elif mode in (2, 6):
        extra["pse_type"] = 3 if dtype == "bfloat16" else 2
    args, kwargs = long_case(dtype, mode, **extra)
    if mode == 8 and "pse" in kwargs:
        kwargs.update(q_start_idx=[0], kv_start_idx=[0])
    eager = run("eager", args, kwargs)
    assert_agree(run("native", args, kwargs, blocks=(16, 32)), eager, dtype)
    assert_agree(run("native", args, kwargs), eager, dtype)


@pytest.mark.parametrize("heads_q,heads_kv,head_dim", [(8, 2, 16), (6, 1, 33), (3, 3, 8)])
def test_native_agrees_with_eager_for_gqa_and_odd_head_dims(heads_q, heads_kv, head_dim):
    args, kwargs = fa_case("float32", (33, 70), (50, 70), heads_q, heads_kv, head_dim, sparse_mode=3, seed=head_dim)
    assert_agree(run("native", args, kwargs, blocks=(8, 16)), run("eager", args, kwargs), "float32")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_native_agrees_with_eager_for_broadcast_row_and_compressed_alibi_pse(dtype):
    gen = torch.Generator().manual_seed(3)
    # row pse: 1-D [N1 * sum S2] rows broadcast over the query positions
    args, kwargs = fa_case(dtype, (9, 30), (20, 30), sparse_mode=1, seed=4)
    kwargs.update(pse=torch.randn(4 * 50, generator=gen).to(args[0].dtype), pse_type=1)
    assert_agree(run("native", args, kwargs, blocks=(8, 8)), run("eager", args, kwargs), dtype)
    # ALiBi-compressed [1, N1, 1024, S]: Toeplitz, equal lengths, one sequence longer than 1024
    s = 1030
    slopes = torch.rand(2, generator=gen)
    i = torch.arange(s - 1024, s).view(-1, 1)
    j = torch.arange(s).view(1, -1)
    pse = (-slopes.view(-1, 1, 1) * (i - j).abs()).unsqueeze(0).to(args[0].dtype)
    args, kwargs = fa_case(dtype, (s,), (s,), 2, 1, 8, sparse_mode=3, seed=5)
    kwargs.update(pse=pse, pse_type=0)
    assert_agree(run("native", args, kwargs), run("eager", args, kwargs), dtype)


def test_native_is_bit_identical_for_any_thread_count_and_tile_order():
    """1, 2 and 4 threads give the same bits (work items own their outputs, fixed reduction order)."""
    args, kwargs = long_case("bfloat16", 3, dropout=True, pse_type=1)
    with threads(1):
        one = run("native", args, kwargs, blocks=(16, 32))
    for n in (2, 4):
        with threads(n):
            assert_bit_identical(one, run("native", args, kwargs, blocks=(16, 32)))


def test_float64_and_forward_hooks_stay_on_the_eager_path():
    query = torch.zeros(2, 1, 4)
    assert native_fa.supported(native_fa.FORWARD_OP, query)
    assert not native_fa.supported(native_fa.FORWARD_OP, query.double())
    assert not native_fa.supported(native_fa.FORWARD_OP, query, hooks=lambda seq: None)
    with native.forced("eager"):
        assert not native_fa.supported(native_fa.GRAD_OP, query)


def test_mindspore_cpu_path_runs_the_native_kernels(monkeypatch):
    """MindSpore's CPU primitives reach the native kernels through their torch core (bf16 crosses
    the pyfunc boundary as fp32 and back), with the numbers of the torch op."""
    ms = pytest.importorskip("mindspore")
    from ascend_attn import mindspore as ams
    calls = []
    for name in ("forward", "backward"):
        real = getattr(native_fa, name)
        monkeypatch.setattr(native_fa, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    ms.set_context(mode=ms.PYNATIVE_MODE)
    args, kw = fa_case("bfloat16", sparse_mode=3, seed=8)
    q, k, v, heads, seq_q, seq_kv = args
    to_ms = lambda t: ms.Tensor(t.float().numpy()).astype(ms.bfloat16) if t.dtype == torch.bfloat16 else ms.Tensor(t.numpy())
    attrs = dict(scale_value=kw["scale_value"], sparse_mode=3)
    mask = to_ms(kw["atten_mask"])
    out, smax, ssum = ams.FlashAttentionVarLenScoreV4(heads, **attrs)(
        to_ms(q), to_ms(k), to_ms(v), attn_mask=mask, actual_seq_qlen=seq_q, actual_seq_kvlen=seq_kv)
    dy = torch.randn(q.shape, generator=torch.Generator().manual_seed(1)).to(q.dtype)
    grads = ams.FlashAttentionUnpaddingScoreGradV4(heads, **attrs)(
        to_ms(q), to_ms(k), to_ms(v), to_ms(dy), atten_mask=mask, softmax_max=smax, softmax_sum=ssum,
        attention_in=out, actual_seq_qlen=seq_q, actual_seq_kvlen=seq_kv)
    got = [torch.from_numpy(t.astype(ms.float32).asnumpy()) for t in (out, smax, ssum, *grads[:3])]  # syncs
    assert calls == ["forward", "backward"]
    want = ascend_attn.flash_attention_varlen_score(*args, **kw)
    want_grads = ascend_attn.flash_attention_unpadding_score_grad(
        q, k, v, dy, heads, seq_q, seq_kv, want[1], want[2], want[0], atten_mask=kw["atten_mask"], **attrs)
    for g, ref in zip(got, [*want, *want_grads[:3]]):
        assert torch.equal(g, ref.float())


_PORTABLE_SCRIPT = """
import sys, torch
sys.path.insert(0, {tests!r})
from test_fa_native import long_case, run
from ascend_attn import native
results = {{"gemm": native.gemm_kind()}}
for dtype, mode, extra in {cases!r}:
    args, kwargs = long_case(dtype, mode, **extra)
    results[(dtype, mode)] = (run("native", args, kwargs, blocks=(16, 32)), run("eager", args, kwargs))
torch.save(results, sys.argv[1])
"""


def test_portable_products_agree_with_eager(tmp_path):
    """CPUs without AVX2 run the products on the BLAS (or plain loops) and the scalar row ops: the
    same contract, checked on this CPU by forcing that path in a subprocess."""
    import os
    import subprocess
    import sys
    cases = [("float32", 3, {"dropout": True}), ("bfloat16", 0, {"pse_type": 0}), ("float16", 7, {})]
    script = _PORTABLE_SCRIPT.format(tests=os.path.dirname(__file__), cases=cases)
    out = tmp_path / "portable.pt"
    env = dict(os.environ, ASCEND_ATTN_CPU_ISA="scalar")
    proc = subprocess.run([sys.executable, "-c", script, str(out)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = torch.load(out)
    assert "avx2" not in results.pop("gemm")
    assert len(results) == len(cases)
    for (dtype, _), (native_res, eager_res) in results.items():
        assert_agree(native_res, eager_res, dtype)
