"""MindSpore IncreFlashAttention: PyNative and GRAPH_MODE give the torch op's bits; constraints raise."""
import numpy as np
import pytest

ms = pytest.importorskip("mindspore")
torch = pytest.importorskip("torch")
from mindspore import nn  # noqa: E402

import ascend_attn  # noqa: E402
from ascend_attn.mindspore.incre_flash_attention import (IncreFlashAttentionV2,  # noqa: E402
                                                         incre_flash_attention)
from ascend_attn.testing.samples import ifa_case  # noqa: E402
from frontends import as_numpy, ms_tensor  # noqa: E402

# MindSpore's call inputs after query, key, value (IncreFlashAttention order).
OPTIONAL = ("attn_mask", "actual_seq_lengths", "pse_shift", "dequant_scale1", "quant_scale1", "dequant_scale2",
            "quant_scale2", "quant_offset2", "antiquant_scale", "antiquant_offset", "block_table", "kv_padding_size")
ATTRS = ("num_heads", "input_layout", "scale_value", "num_key_value_heads", "block_size", "inner_precise")


def to_ms(x):
    """torch tensor (or list of them) -> MindSpore, same dtype and values; other values unchanged."""
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], torch.Tensor):
        return [to_ms(t) for t in x]
    if not isinstance(x, torch.Tensor):
        return x
    if x.is_floating_point():
        name = str(x.dtype).rsplit(".", 1)[-1]
        return ms_tensor(x.float().numpy() if x.dtype == torch.bfloat16 else x.numpy(), name)
    return ms.Tensor(x.numpy())


def int8_case(batch=2, heads=4, dim=32, kv_len=50, seed=14):
    """Scenario B inputs (int8 query / key / value, per-tensor scales) as the torch tests build them."""
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randint(-60, 61, s, generator=gen, dtype=torch.int8)  # noqa: E731
    args = (r(batch, 1, heads * dim), r(batch, kv_len, heads * dim), r(batch, kv_len, heads * dim))
    kw = {"num_heads": heads, "scale_value": dim ** -0.5, "actual_seq_lengths": [kv_len, kv_len - 13],
          "dequant_scale1": torch.tensor([0.02 * 0.015]), "quant_scale1": torch.tensor([127.0]),
          "dequant_scale2": torch.tensor([0.03 / 127.0])}
    return args, kw


def case(name):
    """(torch args, torch kwargs) of a named case."""
    if name == "fp16-BSH-gqa-lengths-mask":
        return ifa_case("BSH", "float16", heads_q=8, heads_kv=2, lengths=[40, 17, 1], mask="B,S", seed=1)
    if name == "bf16-BNSD-pse":
        return ifa_case("BNSD", "bfloat16", heads_q=4, heads_kv=4, pse=True, mask="B,N,1,S", seed=2)
    if name == "paged-BSH":
        return ifa_case("BSH", "float16", kv_form="paged", block_size=16, mask="B,1,S", seed=3)
    if name == "paged-BNSD-cache":
        return ifa_case("BNSD", "bfloat16", kv_form="paged", paged_layout="BNSD", block_size=16, seed=4)
    if name == "antiquant-channel-BSND":
        return ifa_case("BSND", "float16", antiquant="channel", seed=5)
    if name == "antiquant-tensor-bf16-BSH":
        return ifa_case("BSH", "bfloat16", antiquant="tensor", seed=6)
    if name == "tensor-list-BSND":
        return ifa_case("BSND", "float16", kv_form="list", lengths=[30, 7, 19], seed=7)
    if name == "left-padding-mask-pse":
        args, kw = ifa_case("BSH", "float16", kv_len=40, lengths=[10, 25, 3], mask="B,S", pse=True, seed=10)
        kw["kv_padding_size"] = torch.tensor([5])
        return args, kw
    if name == "scenario-C-channel":
        args, kw = ifa_case("BSH", "float16", heads_q=4, heads_kv=2, head_dim=16, seed=8)
        gen = torch.Generator().manual_seed(80)
        kw["quant_scale2"] = torch.rand(4 * 16, generator=gen) * 60 + 20
        kw["quant_offset2"] = torch.round(torch.rand(4 * 16, generator=gen) * 6 - 3)
        return args, kw
    if name == "scenario-C-bf16-tensor":
        args, kw = ifa_case("BNSD", "bfloat16", heads_q=4, heads_kv=1, head_dim=16, seed=9)
        kw["quant_scale2"] = torch.tensor([50.0]).bfloat16()
        return args, kw
    if name == "scenario-B-float-scales":
        return int8_case()
    if name == "scenario-B-int64-words":
        args, kw = int8_case()
        kw["dequant_scale1"] = ascend_attn.trans_quant_param(kw["dequant_scale1"])
        kw["dequant_scale2"] = ascend_attn.trans_quant_param(kw["dequant_scale2"])
        return args, kw
    if name == "scenario-A":
        args, kw = int8_case()
        kw["quant_scale2"], kw["quant_offset2"] = torch.tensor([40.0]), torch.tensor([1.0])
        return args, kw
    raise KeyError(name)


CASES = ["fp16-BSH-gqa-lengths-mask", "bf16-BNSD-pse", "paged-BSH", "paged-BNSD-cache", "antiquant-channel-BSND",
         "antiquant-tensor-bf16-BSH", "tensor-list-BSND", "left-padding-mask-pse", "scenario-C-channel",
         "scenario-C-bf16-tensor", "scenario-B-float-scales", "scenario-B-int64-words", "scenario-A"]
GRAPH_CASES = ["fp16-BSH-gqa-lengths-mask", "bf16-BNSD-pse", "paged-BSH", "antiquant-channel-BSND",
               "tensor-list-BSND", "left-padding-mask-pse", "scenario-C-channel", "scenario-B-float-scales",
               "scenario-B-int64-words"]


def torch_result(args, kw):
    return ascend_attn.incre_flash_attention(*args, **kw)


def split(kw):
    """torch kwargs -> (MindSpore tensor inputs by MindSpore name, attributes)."""
    tensors = {("attn_mask" if k == "atten_mask" else k): to_ms(v) for k, v in kw.items() if k not in ATTRS}
    attrs = {k: v for k, v in kw.items() if k in ATTRS}
    return tensors, attrs


def expected_dtype(want):
    return getattr(ms, str(want.dtype).rsplit(".", 1)[-1])


def assert_same(got, want):
    assert got.dtype == expected_dtype(want)
    assert tuple(got.shape) == tuple(want.shape)
    np.testing.assert_array_equal(as_numpy(got), as_numpy(want))


def snapshot(values):
    out = {}
    for name, v in values.items():
        if isinstance(v, list) and v and isinstance(v[0], ms.Tensor):
            out.update({f"{name}[{i}]": as_numpy(t).copy() for i, t in enumerate(v)})
        elif isinstance(v, ms.Tensor):
            out[name] = as_numpy(v).copy()
    return out


@pytest.fixture
def pynative():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        yield
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)


@pytest.mark.parametrize("name", CASES)
def test_pynative_equals_torch(name, pynative):
    args, kw = case(name)
    want = torch_result(args, kw)
    q, k, v = (to_ms(a) for a in args)
    tensors, attrs = split(kw)
    before = snapshot({"query": q, "key": k, "value": v, **tensors})
    got = incre_flash_attention(q, k, v, **tensors, **attrs)
    assert_same(got, want)
    prim = IncreFlashAttentionV2(**attrs)
    assert_same(prim(q, k, v, *(tensors.get(n) for n in OPTIONAL)), want)
    after = snapshot({"query": q, "key": k, "value": v, **tensors})
    for n, array in before.items():
        np.testing.assert_array_equal(after[n], array, err_msg=f"{n} was modified")


class PrimitiveNet(nn.Cell):
    """The primitive nested in a graph: the graph compiler's infer functions validate."""

    def __init__(self, attrs):
        super().__init__()
        self.prim = IncreFlashAttentionV2(**attrs)

    def construct(self, q, k, v, attn_mask, seq, pse_shift, ds1, qs1, ds2, qs2, qo2, aqs, aqo, table, pad):
        return self.prim(q, k, v, attn_mask, seq, pse_shift, ds1, qs1, ds2, qs2, qo2, aqs, aqo, table, pad)


class FunctionalNet(nn.Cell):
    """The functional form in a graph, with constant attributes and a constant length list."""

    def __init__(self, attrs, seq):
        super().__init__()
        self.attrs, self.seq = attrs, seq

    def construct(self, q, k, v, attn_mask, pse_shift, ds1, qs1, ds2, qs2, qo2, aqs, aqo, table, pad):
        a = self.attrs
        return incre_flash_attention(q, k, v, attn_mask, self.seq, pse_shift, ds1, qs1, ds2, qs2, qo2, aqs, aqo,
                                     table, a.get("num_heads", 1), a.get("input_layout", "BSH"),
                                     a.get("scale_value", 1.0), a.get("num_key_value_heads", 0),
                                     a.get("block_size", 0), 1, pad)


@pytest.mark.parametrize("name", GRAPH_CASES)
def test_graph_mode_equals_torch(name):
    args, kw = case(name)
    want = torch_result(args, kw)
    q, k, v = (to_ms(a) for a in args)
    tensors, attrs = split(kw)
    seq = kw.get("actual_seq_lengths")
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        inputs = [tensors.get(n) for n in OPTIONAL]
        inputs[1] = None if seq is None else ms.Tensor(np.array(seq, np.int64))
        assert_same(PrimitiveNet(attrs)(q, k, v, *inputs), want)
        rest = [tensors.get(n) for n in OPTIONAL if n != "actual_seq_lengths"]
        assert_same(FunctionalNet(attrs, seq)(q, k, v, *rest), want)
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)


@pytest.mark.parametrize("mode", ["pynative", "graph"])
def test_uint64_dequant_words(mode):
    """MindSpore's pyfunc carries uint64: the words of trans_quant_param as uint64 give the same bits."""
    args, kw = case("scenario-B-int64-words")
    want = torch_result(args, kw)
    q, k, v = (to_ms(a) for a in args)
    tensors, attrs = split(kw)
    for n in ("dequant_scale1", "dequant_scale2"):
        tensors[n] = ms.Tensor(kw[n].numpy().view(np.uint64))
        assert tensors[n].dtype == ms.uint64
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    try:
        if mode == "graph":
            rest = [tensors.get(n) for n in OPTIONAL if n != "actual_seq_lengths"]
            got = FunctionalNet(attrs, kw["actual_seq_lengths"])(q, k, v, *rest)
        else:
            got = incre_flash_attention(q, k, v, **tensors, **attrs)
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    assert_same(got, want)


# ----------------------------------------------------------------------------- constraints

def small():
    return ifa_case("BSH", "float16", batch=2, heads_q=4, heads_kv=2, head_dim=16, kv_len=20, seed=11)


def row_bad_layout():
    args, kw = small()
    return args, dict(kw, input_layout="SBH")


def row_offset_without_scale():
    args, kw = small()
    return args, dict(kw, quant_offset2=torch.tensor([1.0]))


def row_int8_kv_without_antiquant():
    args, kw = ifa_case("BSH", "float16", batch=2, heads_q=4, heads_kv=2, head_dim=16, kv_len=20,
                        antiquant="channel", seed=12)
    kw = {n: x for n, x in kw.items() if not n.startswith("antiquant")}
    return args, kw


def row_mask_shape():
    args, kw = small()
    return args, dict(kw, atten_mask=torch.zeros(2, 3, 20, dtype=torch.bool))


def row_mask_dtype():
    args, kw = small()
    return args, dict(kw, atten_mask=torch.zeros(2, 20, dtype=torch.float16))


def row_lengths_too_long():
    args, kw = small()
    return args, dict(kw, actual_seq_lengths=[20, 21])


def row_heads():
    args, kw = small()
    return args, dict(kw, num_heads=3, num_key_value_heads=0)


# (name, make, error type, argument named)
CONSTRAINTS = [
    ("bad input_layout", row_bad_layout, ValueError, "input_layout"),
    ("quant_offset2 without quant_scale2", row_offset_without_scale, ValueError, "quant_offset2"),
    ("int8 key/value without antiquant_scale", row_int8_kv_without_antiquant, ValueError, "antiquant_scale"),
    ("wrong mask shape", row_mask_shape, ValueError, "attn_mask"),
    ("wrong mask dtype", row_mask_dtype, TypeError, "attn_mask"),
    ("num_heads not a divisor", row_heads, ValueError, "num_heads"),
    ("lengths beyond the cache", row_lengths_too_long, ValueError, "actual_seq_lengths"),
]


class GraphCall(nn.Cell):
    """The functional form nested in a graph, attributes as constants (built lazily in the graph)."""

    def __init__(self, attrs):
        super().__init__()
        self.attrs = attrs

    def construct(self, q, k, v, attn_mask, seq, pse_shift, ds1, qs1, ds2, qs2, qo2, aqs, aqo, table, pad):
        a = self.attrs
        return incre_flash_attention(q, k, v, attn_mask, seq, pse_shift, ds1, qs1, ds2, qs2, qo2, aqs, aqo, table,
                                     a.get("num_heads", 1), a.get("input_layout", "BSH"), a.get("scale_value", 1.0),
                                     a.get("num_key_value_heads", 0), a.get("block_size", 0), 1, pad)


@pytest.mark.parametrize("mode", ["pynative", "graph"])
@pytest.mark.parametrize("name,make,error,arg", CONSTRAINTS, ids=[c[0] for c in CONSTRAINTS])
def test_constraint_raises(name, make, error, arg, mode):
    args, kw = make()
    q, k, v = (to_ms(a) for a in args)
    tensors, attrs = split(kw)
    before = snapshot({"query": q, "key": k, "value": v, **tensors})
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    try:
        with pytest.raises(error) as info:
            if mode == "graph":
                # nested: lengths travel as a tensor, the infer functions check shapes and dtypes at
                # compile time, the pyfunc the length values at run time
                seq = kw.get("actual_seq_lengths")
                inputs = [tensors.get(n) for n in OPTIONAL]
                inputs[1] = None if seq is None else ms.Tensor(np.array(seq, np.int64))
                as_numpy(GraphCall(attrs)(q, k, v, *inputs))
            else:
                as_numpy(incre_flash_attention(q, k, v, **tensors, **attrs))
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    message = str(info.value)
    assert message.startswith(f"incre_flash_attention: {arg} only supports"), message
    after = snapshot({"query": q, "key": k, "value": v, **tensors})
    for n, array in before.items():
        np.testing.assert_array_equal(after[n], array, err_msg=f"{n} was modified")


def test_pynative_device_values_are_checked_before_the_kernel(pynative):
    """block_table entries / dequant words are device data: __call__ reads them (PyNative swallows pyfunc errors)."""
    args, kw = case("paged-BSH")
    q, k, v = (to_ms(a) for a in args)
    tensors, attrs = split(kw)
    table = kw["block_table"].clone()
    table[0, 0] = 10_000
    tensors["block_table"] = to_ms(table)
    with pytest.raises(ValueError, match="^incre_flash_attention: block_table only supports"):
        incre_flash_attention(q, k, v, **tensors, **attrs)
    args, kw = case("scenario-B-int64-words")
    tensors, attrs = split(kw)
    tensors["dequant_scale1"] = to_ms(ascend_attn.trans_quant_param(torch.tensor([0.1]), torch.tensor([3.0])))
    with pytest.raises(ValueError, match="^incre_flash_attention: dequant_scale1 only supports"):
        incre_flash_attention(*(to_ms(a) for a in args), **tensors, **attrs)


def test_primitive_attributes_and_backend(pynative):
    prim = IncreFlashAttentionV2(8, "BNSD", 0.125, 2, 0, 0)
    assert (prim.num_heads, prim.input_layout, prim.scale_value, prim.num_key_value_heads, prim.block_size,
            prim.inner_precise) == (8, "BNSD", 0.125, 2, 0, 0)
    assert prim.backend == "mindspore.fallback"
    with pytest.raises(ValueError, match="^incre_flash_attention: inner_precise only supports"):
        IncreFlashAttentionV2(8, inner_precise=2)


@pytest.mark.parametrize("mode", ["pynative", "graph"])
def test_left_padding_mask_too_short_names_attn_mask(mode):
    """The mask must cover the KV end after left padding, a device value: checked by __call__ (PyNative)
    and by the pyfunc at run time (GRAPH_MODE), under MindSpore's name attn_mask."""
    args, kw = case("left-padding-mask-pse")
    kw = dict(kw, atten_mask=kw["atten_mask"][:, :30], pse_shift=None)  # covers max length 25, not the end 35
    q, k, v = (to_ms(a) for a in args)
    tensors, attrs = split(kw)
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    try:
        with pytest.raises(ValueError, match="^incre_flash_attention: attn_mask only supports a last dimension >= "
                                             "the KV end"):
            if mode == "graph":
                inputs = [tensors.get(n) for n in OPTIONAL]
                inputs[1] = ms.Tensor(np.array(kw["actual_seq_lengths"], np.int64))
                as_numpy(GraphCall(attrs)(q, k, v, *inputs))
            else:
                as_numpy(incre_flash_attention(q, k, v, **tensors, **attrs))
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)


class ListNet(nn.Cell):
    def __init__(self, attrs):
        super().__init__()
        self.prim = IncreFlashAttentionV2(**attrs)

    def construct(self, q, k0, k1, v0, v1):
        return self.prim(q, [k0, k1], [v0, v1])


def test_graph_mode_tensor_list_shape_mismatch_raises():
    """A list built inside the graph: its shapes are checked (validation's message) before the concatenation."""
    args, kw = ifa_case("BSND", "float16", batch=2, kv_form="list", lengths=[9, 5], seed=13)
    q, keys, values = to_ms(args[0]), to_ms(args[1]), to_ms(args[2])
    attrs = {n: kw[n] for n in ATTRS if n in kw}
    bad = to_ms(args[1][1][..., :-1, :])  # one head fewer
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        got = ListNet(attrs)(q, keys[0], keys[1], values[0], values[1])
        want = ascend_attn.incre_flash_attention(args[0], list(args[1]), list(args[2]),
                                                 **dict(kw, actual_seq_lengths=None))
        assert_same(got, want)
        with pytest.raises(ValueError, match=r"^incre_flash_attention: value\[1\] only supports the shape of key\[1\]"):
            ListNet(attrs)(q, keys[0], keys[1], values[0], bad)
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
