"""Every documented RingAttentionUpdate constraint (semantics.md §10) in every frontend.

One row per constraint: the error type, the argument named in the message, and that no input
tensor changed. The same rows run on the torch op, MindSpore PyNative and MindSpore GRAPH_MODE.
"""
import copy

import numpy as np
import pytest

from ascend_attn.testing.reference import tnd_to_ntd
from ascend_attn.testing.samples import RAU_TENSOR_NAMES, rau_arrays
from frontends import as_numpy, ms_tensor, seq_arg, torch_tensor


def base(layout):
    if layout == "SBH":
        arrays = rau_arrays("SBH", s_len=4, batch=2, heads=2, head_dim=32)
        kwargs = {"actual_seq_qlen": None, "input_layout": "SBH", "input_softmax_layout": ""}
    else:
        arrays = rau_arrays("TND", seq_lens=(3, 2), heads=2, head_dim=64)
        for n in RAU_TENSOR_NAMES[1:3] + RAU_TENSOR_NAMES[4:6]:
            arrays[n] = tnd_to_ntd(arrays[n], (3, 2))
        kwargs = {"actual_seq_qlen": arrays["actual_seq_qlen"], "input_layout": "TND", "input_softmax_layout": ""}
    return {"tensors": {n: (arrays[n], "float32") for n in RAU_TENSOR_NAMES}, "kwargs": kwargs}


def with_tensor(name, array=None, dtype=None):
    def change(case):
        old_array, old_dtype = case["tensors"][name]
        case["tensors"][name] = (old_array if array is None else array(old_array), dtype or old_dtype)
    return change


def with_kw(**kw):
    return lambda case: case["kwargs"].update(kw)


def both(*changes):
    def change(case):
        for c in changes:
            c(case)
    return change


stats = ("prev_softmax_max", "prev_softmax_sum", "cur_softmax_max", "cur_softmax_sum")


def with_stats(fn):
    return both(*(with_tensor(n, fn) for n in stats))


def tnd_of(t, n, d):
    """A TND case with T rows, N heads, D dims (TND statistics)."""
    def change(case):
        rng = np.random.default_rng(0)
        for name in RAU_TENSOR_NAMES:
            shape = (t, n, d) if name.endswith("attn_out") else (t, n, 8)
            case["tensors"][name] = (rng.uniform(1, 2, shape).astype(np.float32), "float32")
        case["kwargs"].update(actual_seq_qlen=[0, t], input_softmax_layout="TND")
    return change


# (id, base layout, change, error type, argument named, frontends: "all" or a tuple)
ROWS = [
    ("layout-unknown", "SBH", with_kw(input_layout="BSH"), ValueError, "layout", "all"),
    ("softmax-layout-unknown", "TND", with_kw(input_softmax_layout="NTD"), ValueError, "input_softmax_layout", "all"),
    ("attn-dtype-float64", "SBH", both(with_tensor("prev_attn_out", dtype="float64"), with_tensor("cur_attn_out", dtype="float64")), TypeError, "prev_attn_out", "all"),
    ("attn-dtype-mismatch", "TND", with_tensor("cur_attn_out", dtype="float16"), TypeError, "cur_attn_out", "all"),
    ("stats-dtype-fp16", "SBH", with_tensor("prev_softmax_max", dtype="float16"), TypeError, "prev_softmax_max", "all"),
    ("stats-dtype-fp64", "TND", with_tensor("cur_softmax_sum", dtype="float64"), TypeError, "cur_softmax_sum", "all"),
    ("attn-shape-mismatch", "SBH", with_tensor("cur_attn_out", lambda a: a[:3]), ValueError, "cur_attn_out", "all"),
    ("stats-last-dim-not-8", "SBH", with_stats(lambda a: a[..., :4]), ValueError, "prev_softmax_max", "all"),
    ("stats-shape-mismatch", "TND", with_tensor("cur_softmax_max", lambda a: a[:4]), ValueError, "cur_softmax_max", "all"),
    ("sbh-attn-rank", "SBH", both(with_tensor("prev_attn_out", lambda a: a[0]), with_tensor("cur_attn_out", lambda a: a[0])), ValueError, "prev_attn_out", "all"),
    ("sbh-stats-rank", "SBH", with_stats(lambda a: a[0]), ValueError, "prev_softmax_max", "all"),
    ("sbh-stats-batch-mismatch", "SBH", with_stats(lambda a: a[:1]), ValueError, "prev_softmax_max", "all"),
    ("sbh-hidden-not-divisible", "SBH", both(with_tensor("prev_attn_out", lambda a: a[..., :63]), with_tensor("cur_attn_out", lambda a: a[..., :63])), ValueError, "prev_attn_out", "all"),
    ("tnd-head-dim-not-64-aligned", "TND", tnd_of(2, 1, 96), ValueError, "prev_attn_out", "all"),
    ("tnd-head-dim-over-768", "TND", tnd_of(1, 1, 832), ValueError, "prev_attn_out", "all"),
    ("tnd-heads-over-256", "TND", tnd_of(1, 257, 64), ValueError, "prev_attn_out", "all"),
    ("tnd-stats-rank", "TND", with_stats(lambda a: a[None]), ValueError, "prev_softmax_max", "all"),
    ("tnd-stats-rows-mismatch", "TND", with_stats(lambda a: a[:4]), ValueError, "prev_softmax_max", "all"),
    ("tnd-seq-missing", "TND", with_kw(actual_seq_qlen=None), ValueError, "actual_seq_qlen", "all"),
    ("tnd-seq-not-from-0", "TND", with_kw(actual_seq_qlen=[1, 3, 5]), ValueError, "actual_seq_qlen", "all"),
    ("tnd-seq-decreasing", "TND", with_kw(actual_seq_qlen=[0, 4, 3, 5]), ValueError, "actual_seq_qlen", "all"),
    ("tnd-seq-not-to-T", "TND", with_kw(actual_seq_qlen=[0, 3, 4]), ValueError, "actual_seq_qlen", "all"),
    ("tnd-seq-float-tensor", "TND", with_kw(actual_seq_qlen=("tensor", [0.0, 3.0, 5.0], "float32")), TypeError, "actual_seq_qlen", "all"),
    ("tnd-seq-2d-tensor", "TND", with_kw(actual_seq_qlen=("tensor", [[0, 3, 5]], "int64")), ValueError, "actual_seq_qlen", "all"),
    ("tnd-seq-non-integer-element", "TND", with_kw(actual_seq_qlen=[0, 2.5, 5]), TypeError, "actual_seq_qlen", ("torch", "mindspore-pynative")),
    # MindSpore's V1 document limits TND rows by UB size; N=64, D=128 fp32 needs 265728 bytes.
    ("ms-ub-size", "TND", tnd_of(1, 64, 128), ValueError, "prev_attn_out", ("mindspore-pynative", "mindspore-graph")),
]


def run_torch(case):
    import ascend_attn
    tensors = {n: torch_tensor(a, d) for n, (a, d) in case["tensors"].items()}
    kw = dict(case["kwargs"])
    kw["actual_seq_qlen"] = seq_arg(kw["actual_seq_qlen"], torch_tensor)
    originals = {n: t.clone() for n, t in tensors.items()}
    try:
        ascend_attn.ring_attention_update(*(tensors[n] for n in RAU_TENSOR_NAMES), **kw)
    finally:
        for n, t in tensors.items():
            assert t.equal(originals[n]), f"{n} was modified"


def run_mindspore(case, graph: bool):
    import mindspore as ms
    from mindspore import nn

    from ascend_attn.mindspore import RingAttentionUpdate
    ms.set_context(mode=ms.GRAPH_MODE if graph else ms.PYNATIVE_MODE)
    tensors = {n: ms_tensor(a, d) for n, (a, d) in case["tensors"].items()}
    originals = {n: as_numpy(t).copy() for n, t in tensors.items()}
    kw = case["kwargs"]
    seq = seq_arg(kw["actual_seq_qlen"], ms_tensor)
    if isinstance(seq, list):
        seq = ms.Tensor(np.array(seq)) if all(isinstance(v, int) for v in seq) else seq
    try:
        prim = RingAttentionUpdate(kw["input_layout"], kw["input_softmax_layout"])
        args = [tensors[n] for n in RAU_TENSOR_NAMES]
        if graph:
            class Net(nn.Cell):  # nested: the graph compiler's infer functions validate
                def __init__(self):
                    super().__init__()
                    self.prim = prim

                def construct(self, a, b, c, d, e, f, s):
                    return self.prim(a, b, c, d, e, f, s)

                def construct_no_seq(self, a, b, c, d, e, f):
                    return self.prim(a, b, c, d, e, f)
            net = Net()
            if seq is None:
                net.construct = net.construct_no_seq
                net(*args)
            else:
                net(*args, seq)
        else:
            prim(*args, seq)
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
        for n, t in tensors.items():
            np.testing.assert_array_equal(as_numpy(t), originals[n], err_msg=f"{n} was modified")


FRONTENDS = {
    "torch": run_torch,
    "mindspore-pynative": lambda case: run_mindspore(case, graph=False),
    "mindspore-graph": lambda case: run_mindspore(case, graph=True),
}


PARAMS = [pytest.param(row, frontend, id=f"{row[0]}-{frontend}")
          for row in ROWS for frontend in FRONTENDS if row[5] == "all" or frontend in row[5]]


@pytest.mark.parametrize("row,frontend", PARAMS)
def test_constraint_raises(row, frontend):
    name, layout, change, error, arg, _ = row
    if frontend.startswith("mindspore"):
        pytest.importorskip("mindspore")
    case = base(layout)
    change(case)
    case = copy.deepcopy(case)
    expected_arg = "input_layout" if arg == "layout" and frontend == "torch" else arg
    with pytest.raises(error) as info:
        FRONTENDS[frontend](case)
    message = str(info.value)
    assert "ring_attention_update: " in message and expected_arg in message and "but got" in message, message


def test_ms_ub_limit_is_not_a_torch_limit():
    """The V2 (torch) contract has no UB-size rule: the shape MindSpore's V1 rejects runs."""
    case = base("TND")
    tnd_of(1, 64, 128)(case)
    run_torch(case)


def test_tnd_statistics_layout_accepts_any_integer_lengths():
    """With "TND" statistics actual_seq_qlen is unused; torch_npu's own test passes [2, 5]."""
    case = base("TND")
    case["kwargs"].update(input_softmax_layout="TND", actual_seq_qlen=[2, 5])
    run_torch(case)
