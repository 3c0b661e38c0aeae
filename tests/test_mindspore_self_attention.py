"""MindSpore ATB SelfAttention: PyNative and GRAPH_MODE give the torch op's bits (output and updated caches);
constraints raise the shared validation's errors; MindSpore inputs are never modified."""
import numpy as np
import pytest

ms = pytest.importorskip("mindspore")
torch = pytest.importorskip("torch")
from mindspore import nn  # noqa: E402

import ascend_attn  # noqa: E402
from ascend_attn.mindspore.self_attention import INPUTS, SelfAttention, self_attention  # noqa: E402
from ascend_attn.testing.sa_samples import sa_case  # noqa: E402
from frontends import as_numpy  # noqa: E402

ATTRS = ("head_num", "kv_head_num", "qk_scale", "q_scale", "calc_type", "kernel_type", "clamp_type", "clamp_min",
         "clamp_max", "mask_type", "kv_cache_cfg", "scale_type", "quant_type", "out_data_type", "input_layout",
         "batch_run_status_enable")


def to_ms(x):
    if isinstance(x, list) and x and isinstance(x[0], torch.Tensor):
        return [to_ms(t) for t in x]
    if not isinstance(x, torch.Tensor):
        return x
    if x.dtype == torch.bfloat16:
        return ms.Tensor(x.float().numpy()).astype(ms.bfloat16)
    return ms.Tensor(x.numpy())


CASES = {
    "pa-fp16-alibi-compress-sqrt-hp": lambda: sa_case(("compressed", "high_precision"), mask_type=5),
    "cache-write-bf16-norm-mask": lambda: sa_case(("split",), calc_type=0, dtype="bfloat16", mask_type=1, seed=2),
    "decoder-dynamic-batch-clamp-logn": lambda: sa_case(("dynamic_batch", "clamp", "logn"), seed=1),
    "tensor-list-decoder": lambda: sa_case(("tensor_list",)),
    "bnsd-bypass-causal": lambda: sa_case(("bnsd", "compressed")),
    "quant-online-bf16": lambda: sa_case(("quant",), quant_type=3, dtype="bfloat16"),
    "quant-offline-fp16-mask": lambda: sa_case(("quant",), quant_type=2, mask_type=2),
}
GRAPH_CASES = ["pa-fp16-alibi-compress-sqrt-hp", "cache-write-bf16-norm-mask", "tensor-list-decoder"]


def split(args, kwargs):
    """torch call -> (MindSpore inputs by name, attributes)."""
    inputs = dict(zip(INPUTS, (to_ms(a) for a in args)))
    inputs.update({k: to_ms(v) for k, v in kwargs.items() if k in INPUTS})
    return inputs, {k: v for k, v in kwargs.items() if k in ATTRS}


def torch_result(name):
    """(output, cache_k, cache_v) of the torch op (the caches as it left them)."""
    args, kwargs = CASES[name]()
    out = ascend_attn.self_attention(*args, **kwargs)
    return out, args[3], args[4]


def assert_same(got, want):
    assert got.dtype == getattr(ms, str(want.dtype).rsplit(".", 1)[-1])
    assert tuple(got.shape) == tuple(want.shape)
    np.testing.assert_array_equal(as_numpy(got), as_numpy(want))


def assert_result(got, name):
    out, cache_k, cache_v = torch_result(name)
    if isinstance(got, tuple):  # the op wrote the caches: returned updated
        assert len(got) == 3
        assert_same(got[1], cache_k)
        assert_same(got[2], cache_v)
        got = got[0]
    assert_same(got, out)


def snapshot(inputs):
    out = {}
    for name, v in inputs.items():
        for i, t in enumerate(v if isinstance(v, list) else [v]):
            if isinstance(t, ms.Tensor):
                out[f"{name}[{i}]"] = as_numpy(t).copy()
    return out


@pytest.fixture
def pynative():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield
    ms.set_context(mode=ms.PYNATIVE_MODE)


@pytest.mark.parametrize("name", list(CASES))
def test_pynative_equals_torch(name, pynative):
    inputs, attrs = split(*CASES[name]())
    before = snapshot(inputs)
    assert_result(self_attention(**inputs, **attrs), name)
    prim = SelfAttention(**attrs)
    assert prim.writes_cache == isinstance(self_attention(**inputs, **attrs), tuple)
    assert_result(prim(*(inputs.get(n) for n in INPUTS)), name)
    after = snapshot(inputs)
    for n, array in before.items():
        np.testing.assert_array_equal(after[n], array, err_msg=f"{n} was modified")


class PrimitiveNet(nn.Cell):
    """The primitive nested in a graph: host lists as int64 tensors, the infer functions validate."""

    def __init__(self, attrs, cache_list):
        super().__init__()
        self.prim = SelfAttention(**attrs)
        self.cache_list = cache_list

    def construct(self, q, k, v, ck, cv, mask, token_offset, seq_len, layer_id, status, slopes, qkd, qko, vpvd, vpvo,
                  ps, log_n):
        return self.prim(q, k, v, ck, cv, mask, token_offset, seq_len, layer_id, status, slopes, qkd, qko, vpvd,
                         vpvo, ps, log_n)


class ListNet(nn.Cell):
    """A kv tensor list built inside the graph, the functional form with constant host lists."""

    def __init__(self, attrs, host):
        super().__init__()
        self.attrs, self.host = attrs, host

    def construct(self, q, k0, k1, k2, v0, v1, v2, mask):
        a, h = self.attrs, self.host
        return self_attention(q, None, None, [k0, k1, k2], [v0, v1, v2], mask, h["token_offset"], h["seq_len"],
                              h["layer_id"], head_num=a["head_num"], kv_head_num=a["kv_head_num"],
                              qk_scale=a["qk_scale"], calc_type=a["calc_type"], kernel_type=a["kernel_type"],
                              mask_type=a["mask_type"], kv_cache_cfg=a["kv_cache_cfg"])


@pytest.mark.parametrize("name", GRAPH_CASES)
def test_graph_mode_equals_torch(name):
    inputs, attrs = split(*CASES[name]())
    before = snapshot(inputs)
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        if name == "tensor-list-decoder":
            args, kwargs = CASES[name]()
            host = {n: kwargs.get(n) for n in ("token_offset", "seq_len", "layer_id")}
            got = ListNet(attrs, host)(inputs["query"], *inputs["cache_k"], *inputs["cache_v"],
                                       inputs["attention_mask"])
        else:
            for n in ("token_offset", "seq_len", "layer_id", "batch_run_status"):
                if inputs.get(n) is not None:
                    inputs[n] = ms.Tensor(np.asarray(inputs[n], np.int64))
            got = PrimitiveNet(attrs, False)(*(inputs.get(n) for n in INPUTS))
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    assert_result(got, name)
    after = snapshot({n: v for n, v in split(*CASES[name]())[0].items()})
    for n, array in before.items():
        np.testing.assert_array_equal(after[n], array, err_msg=f"{n} was modified")


# ----------------------------------------------------------------------------- constraints

def bad_inverted_causal():
    args, kwargs = sa_case(("compressed",), calc_type=3, mask_type=3)
    return args[:5] + (args[5].T.contiguous(),), kwargs


def bad_token_offset():
    args, kwargs = sa_case(("split",), calc_type=0, seed=2)
    return args, dict(kwargs, token_offset=[5, 1, 13])


def bad_cache_dtype():
    args, kwargs = sa_case(("split",), calc_type=0, seed=2)
    return args[:3] + (args[3].bfloat16(), args[4].bfloat16()) + args[5:], kwargs


def bad_mask_shape():
    args, kwargs = sa_case((), calc_type=3, mask_type=1)
    return args[:5] + (args[5][..., :6, :6],), kwargs


# (name, make, error, argument named). In GRAPH_MODE the infer functions find the shape / dtype rows at
# compile time; host-value rows (token_offset, mask rows vs seq_len, mask content) surface from the pyfunc
# at run time, which MindSpore makes slow (seconds), so one of them stands for all in GRAPH_MODE.
CONSTRAINTS = [
    ("compressed causal mask inverted", bad_inverted_causal, ValueError, "attention_mask"),
    ("token_offset beyond the cache", bad_token_offset, ValueError, "token_offset"),
    ("cache dtype", bad_cache_dtype, TypeError, "cache_k"),
    ("mask too small", bad_mask_shape, ValueError, "attention_mask"),
]
GRAPH_ROWS = ("token_offset beyond the cache", "cache dtype")
CONSTRAINT_PARAMS = [pytest.param(*c, mode, id=f"{c[0]}-{mode}") for c in CONSTRAINTS for mode in ("pynative", "graph")
                     if mode == "pynative" or c[0] in GRAPH_ROWS]


@pytest.mark.parametrize("name,make,error,arg,mode", CONSTRAINT_PARAMS)
def test_constraint_raises(name, make, error, arg, mode):
    inputs, attrs = split(*make())
    before = snapshot(inputs)
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    try:
        with pytest.raises(error) as info:
            if mode == "graph":
                for n in ("token_offset", "seq_len", "layer_id", "batch_run_status"):
                    if inputs.get(n) is not None:
                        inputs[n] = ms.Tensor(np.asarray(inputs[n], np.int64))
                out = PrimitiveNet(attrs, False)(*(inputs.get(n) for n in INPUTS))
                as_numpy(out[0] if isinstance(out, tuple) else out)
            else:
                self_attention(**inputs, **attrs)
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    message = str(info.value)
    assert message.startswith(f"self_attention: {arg} only supports"), message
    after = snapshot(inputs)
    for n, array in before.items():
        if n in after:
            np.testing.assert_array_equal(after[n], array, err_msg=f"{n} was modified")


def test_constructor_checks_the_coexistence_table(pynative):
    with pytest.raises(ValueError) as info:
        SelfAttention(4, calc_type="PA_ENCODER", quant_type="QKV_ONLINE", out_data_type="float16",
                      scale_type="LOGN", kernel_type="HIGH_PRECISION")
    message = str(info.value)
    assert message.startswith("self_attention: quant_type only supports") and "logN缩放" in message \
        and "qkv全量化" in message
    prim = SelfAttention(8, 2, 0.125, calc_type="pa_encoder", mask_type="MASK_TYPE_ALIBI_COMPRESS", kernel_type=1)
    assert (prim.attrs.calc_type, prim.attrs.mask_type, prim.backend) == (3, 4, "mindspore.fallback")
    assert not prim.writes_cache
