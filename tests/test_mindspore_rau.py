"""MindSpore RingAttentionUpdate: PyNative and GRAPH_MODE give the torch path's numbers."""
import numpy as np
import pytest

ms = pytest.importorskip("mindspore")
from mindspore import nn  # noqa: E402

import ascend_attn  # noqa: E402
from ascend_attn import mindspore as ams  # noqa: E402
from ascend_attn.testing.reference import tnd_to_ntd  # noqa: E402
from ascend_attn.testing.samples import RAU_TENSOR_NAMES, rau_arrays  # noqa: E402
from frontends import as_numpy, ms_tensor, torch_tensor  # noqa: E402

CASES = [("SBH", ""), ("TND", ""), ("TND", "TND")]


def inputs(layout, sm_layout, seed):
    if layout == "SBH":
        arrays = rau_arrays("SBH", s_len=6, batch=3, heads=4, head_dim=16, seed=seed)
    else:
        arrays = rau_arrays("TND", seq_lens=(4, 1, 6), heads=3, head_dim=64, seed=seed)
        if sm_layout == "":
            for n in RAU_TENSOR_NAMES[1:3] + RAU_TENSOR_NAMES[4:6]:
                arrays[n] = tnd_to_ntd(arrays[n], (4, 1, 6))
    return arrays


def torch_result(arrays, layout, sm_layout, dtype):
    ts = [torch_tensor(arrays[n], dtype if n.endswith("attn_out") else "float32") for n in RAU_TENSOR_NAMES]
    return [as_numpy(x) for x in ascend_attn.ring_attention_update(*ts, arrays.get("actual_seq_qlen"), layout, sm_layout)]


def ms_args(arrays, dtype):
    args = [ms_tensor(arrays[n], dtype if n.endswith("attn_out") else "float32") for n in RAU_TENSOR_NAMES]
    seq = arrays.get("actual_seq_qlen")
    return args, (None if seq is None else ms.Tensor(np.array(seq, np.int64)))


@pytest.fixture
def pynative():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield
    ms.set_context(mode=ms.PYNATIVE_MODE)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("layout,sm_layout", CASES)
def test_pynative_primitive_equals_torch(layout, sm_layout, dtype, pynative):
    arrays = inputs(layout, sm_layout, seed=1)
    args, seq = ms_args(arrays, dtype)
    got = ams.RingAttentionUpdate(layout, sm_layout)(*args, seq)
    assert got[0].dtype == getattr(ms, dtype)
    for g, w in zip(got, torch_result(arrays, layout, sm_layout, dtype)):
        np.testing.assert_array_equal(as_numpy(g), w)


@pytest.mark.parametrize("layout", ["SBH", "TND"])
def test_functional_has_mindspore_signature(layout, pynative):
    """ring_attention_update(..., actual_seq_qlen=None, layout=...) as MindSpore's op."""
    arrays = inputs(layout, "", seed=2)
    args, seq = ms_args(arrays, "float16")
    got = ams.ring_attention_update(*args, actual_seq_qlen=seq, layout=layout)
    for g, w in zip(got, torch_result(arrays, layout, "", "float16")):
        np.testing.assert_array_equal(as_numpy(g), w)


class FoldNet(nn.Cell):
    """A graph that folds three partials with the functional form."""

    def __init__(self, layout):
        super().__init__()
        self.layout = layout

    def construct(self, a, b, c, d, e, f, g, h, i, seq):
        out, m, s = ams.ring_attention_update(a, b, c, d, e, f, seq, self.layout)
        return ams.ring_attention_update(out, m, s, g, h, i, seq, self.layout)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("layout", ["SBH", "TND"])
def test_graph_mode_equals_torch(layout, dtype):
    arrays = inputs(layout, "", seed=3)
    third = inputs(layout, "", seed=4)
    args, seq = ms_args(arrays, dtype)
    args3, _ = ms_args(third, dtype)
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        got = FoldNet(layout)(*args, *args3[3:], seq)
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    first = torch_result(arrays, layout, "", dtype)
    merged = {n: v for n, v in zip(RAU_TENSOR_NAMES[:3], first)}
    merged.update({n: third[n] for n in RAU_TENSOR_NAMES[3:]})
    merged["actual_seq_qlen"] = arrays.get("actual_seq_qlen")
    want = torch_result(merged, layout, "", dtype)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(as_numpy(g), w)


def test_graph_mode_tnd_statistics_primitive():
    arrays = inputs("TND", "TND", seed=5)
    args, seq = ms_args(arrays, "float16")
    prim = ams.RingAttentionUpdate("TND", "TND")

    class Net(nn.Cell):
        def __init__(self):
            super().__init__()
            self.prim = prim

        def construct(self, a, b, c, d, e, f, s):
            return self.prim(a, b, c, d, e, f, s)

    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        got = Net()(*args, seq)
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    for g, w in zip(got, torch_result(arrays, "TND", "TND", "float16")):
        np.testing.assert_array_equal(as_numpy(g), w)


def test_cpu_uses_the_pyfunc_fallback_backend(pynative):
    assert ams.RingAttentionUpdate("SBH").backend == "mindspore.fallback"


class _TndNet(nn.Cell):
    def construct(self, a, b, c, d, e, f, seq):
        return ams.ring_attention_update(a, b, c, d, e, f, seq, "TND")


@pytest.mark.parametrize("mode", ["pynative", "graph"])
def test_bf16_tnd_within_the_ub_rule_equals_torch(mode):
    """N=8, D=768 in bf16 fits MindSpore's UB rule with 2-byte data (it would not with 4): bf16 must
    be validated as bf16 at compile time, not as the float32 it crosses the pyfunc boundary in."""
    arrays = rau_arrays("TND", seq_lens=(3, 1), heads=8, head_dim=768, seed=3)
    for n in RAU_TENSOR_NAMES[1:3] + RAU_TENSOR_NAMES[4:6]:
        arrays[n] = tnd_to_ntd(arrays[n], (3, 1))
    want = torch_result(arrays, "TND", "", "bfloat16")
    args, seq = ms_args(arrays, "bfloat16")
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    try:
        got = _TndNet()(*args, seq)
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(as_numpy(g), w)
