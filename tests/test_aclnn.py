"""The NPU call paths, checked without an NPU: one aclnn table (aclnn.py) against the kernel package's
OpDef sources and the torch glue's calls; the IFA entry choice; MindSpore's aot route on a faked Ascend
(``ops.Custom`` recorded instead of built) passing arguments in IR order."""
import re
from pathlib import Path

import pytest

from ascend_attn import aclnn, backends
from ascend_attn.testing import samples

ROOT = Path(__file__).resolve().parents[1]
# OpDef spellings -> the table's (validation) names
ALIASES = {"pre_tockens": "pre_tokens", "next_tockens": "next_tokens"}


def opdef_ir(op_folder: str):
    """(inputs, attrs, outputs) in IR order from an op's OpDef source."""
    src = next((ROOT / "ops_kernels" / op_folder / "op_host").glob("*_def.cpp")).read_text()
    body = src[src.index(": OpDef(name)"):]
    inputs = re.findall(r'(?:this->Input|\bin)\("(\w+)"', body)
    attrs = [ALIASES.get(a, a) for a in re.findall(r'this->Attr\("(\w+)"', body)]
    outputs = re.findall(r'this->Output\("(\w+)"', body)
    for group in re.findall(r'for \(const char\* \w+ : \{([^}]*)\}\)', body):
        outputs += re.findall(r'"(\w+)"', group)
    return inputs, attrs, outputs


@pytest.mark.parametrize("api, folder, renamed", [
    (aclnn.FA_GRAD_V4, "flash_attention_unpadding_score_grad_v4", {"pse_shift": "pse"}),
    (aclnn.IFA_PACKAGE_V2, "incre_flash_attention_v2", {}),
])
def test_package_entries_follow_the_opdef_ir_order(api, folder, renamed):
    assert api.source == "package"
    inputs, attrs, outputs = opdef_ir(folder)
    assert tuple(renamed.get(n, n) for n in inputs) == api.inputs
    assert tuple(attrs) == api.attrs
    assert tuple(outputs) == api.outputs


def exec_calls():
    """{aclnn api: number of arguments} of every EXEC_NPU_CMD in the torch glue."""
    src = (ROOT / "ascend_attn" / "csrc" / "npu_ops.cpp").read_text()
    calls = {}
    for match in re.finditer(r"EXEC_NPU_CMD\(", src):
        depth, i, args, start = 1, match.end(), [], match.end()
        while depth:
            ch = src[i]
            if ch in "({":
                depth += 1
            elif ch in ")}":
                depth -= 1
            if (ch == "," and depth == 1) or depth == 0:
                args.append(src[start:i].strip())
                start = i + 1
            i += 1
        calls[args[0]] = len(args) - 1
    return calls


def test_torch_glue_calls_every_entry_with_its_ir_argument_count():
    calls = exec_calls()
    for api in aclnn.APIS:
        assert calls[api.api] == len(api.inputs) + len(api.attrs) + len(api.outputs), api.api


def ifa_plan(**features):
    import importlib
    ifa = importlib.import_module("ascend_attn.torch_ops.incre_flash_attention")
    args, kwargs = samples.ifa_case(**features)
    return ifa.check(ifa.IFA.bind(ifa.incre_flash_attention.op_arguments(*args, **kwargs), {}), known=True)


@pytest.mark.parametrize("features, package_can_run, reason", [
    ({}, True, None),
    ({"layout": "BNSD"}, False, "input_layout BNSD"),
    ({"kv_form": "paged"}, False, "paged key/value"),
    ({"kv_form": "list"}, False, "list key/value"),
    ({"pse": True}, False, "pse_shift"),
    ({"antiquant": "channel"}, False, "antiquant"),
    ({"head_dim": 40}, False, "head dim 40"),
])
def test_ifa_entry_is_the_package_kernel_only_where_it_implements_the_input(features, package_can_run, reason):
    plan = ifa_plan(**features)
    reasons = aclnn.ifa_plan_reasons(plan)
    assert (not reasons) == package_can_run
    assert reason is None or any(reason in r for r in reasons)
    assert aclnn.ifa_api(plan, package_usable=True) is (aclnn.IFA_PACKAGE_V2 if package_can_run else aclnn.IFA_CANN_V4)
    assert aclnn.ifa_api(plan, package_usable=False) is aclnn.IFA_CANN_V4


# ----------------------------------------------------------------------------- MindSpore on a faked Ascend

class RecordedCustom:
    """Stands in for ops.Custom: records how it was built and what it was called with."""

    built = []

    def __init__(self, func, out_shape=None, out_dtype=None, func_type="pyfunc", bprop=None, reg_info=None):
        self.func, self.func_type, self.bprop = func, func_type, bprop
        self.out_shape, self.out_dtype = out_shape, out_dtype
        self.calls = []
        RecordedCustom.built.append(self)

    def __call__(self, *args):
        self.calls.append(args)
        return tuple(f"out{i}" for i in range(4))


class Sentinel(str):
    """A named stand-in for a tensor (construct only passes inputs through on this route)."""

    shape = (2, 1, 64)


@pytest.fixture
def fake_ascend(monkeypatch):
    ms = pytest.importorskip("mindspore")
    import importlib
    from ascend_attn.mindspore import _aclnn, flash_attention
    incre_flash_attention = importlib.import_module("ascend_attn.mindspore.incre_flash_attention")
    get_context = ms.get_context
    monkeypatch.setattr(ms, "get_context", lambda k: "Ascend" if k == "device_target" else get_context(k))
    monkeypatch.setattr(_aclnn.ops, "Custom", RecordedCustom)
    monkeypatch.setattr(backends, "probe_mindspore_ascend", lambda: None)
    monkeypatch.setattr(backends, "probe_kernel_package", lambda: None)
    RecordedCustom.built.clear()
    flash_attention.aclnn_op.cache_clear()
    incre_flash_attention.aclnn_op.cache_clear()
    yield
    flash_attention.aclnn_op.cache_clear()
    incre_flash_attention.aclnn_op.cache_clear()


def names(*items):
    return [Sentinel(n) for n in items]


def test_mindspore_rau_tnd_statistics_run_cann_v2_as_an_aot_op(fake_ascend):
    from ascend_attn.mindspore.ring_attention_update import RingAttentionUpdate
    prim = RingAttentionUpdate("TND", "TND")
    assert prim.backend == "mindspore.kernels"
    (op,) = RecordedCustom.built
    assert (op.func, op.func_type) == ("aclnnRingAttentionUpdateV2", "aot")
    inputs = names(*aclnn.RAU_V2.inputs)
    prim.construct(*inputs)
    assert op.calls == [(*inputs, "TND", "TND")]


def test_mindspore_fa_forward_and_grad_run_aclnn_in_ir_order(fake_ascend):
    from ascend_attn.mindspore.flash_attention import FlashAttentionVarLenScoreV4
    prim = FlashAttentionVarLenScoreV4(head_num=4, scale_value=0.5, sparse_mode=3, softmax_out_layout="same_as_input")
    assert prim.backend == "mindspore.kernels"
    grad_op, fwd_op = RecordedCustom.built
    assert (fwd_op.func, grad_op.func) == ("aclnnFlashAttentionVarLenScoreV4", "aclnnFlashAttentionUnpaddingScoreGradV4")
    fwd = dict(zip(aclnn.FA_FORWARD_V4.inputs, names(*aclnn.FA_FORWARD_V4.inputs)))
    fwd["padding_mask"] = None  # reserved: never passed
    out = prim.construct(fwd["query"], fwd["key"], fwd["value"], fwd["pse"], fwd["drop_mask"], None,
                         fwd["atten_mask"], fwd["prefix"], fwd["actual_seq_qlen"], fwd["actual_seq_kvlen"],
                         fwd["q_start_idx"], fwd["kv_start_idx"])
    attrs = (0.5, 1.0, 2147483647, 2147483647, 4, "TND", 0, 3, 1, "same_as_input")
    assert fwd_op.calls == [(*aclnn.FA_FORWARD_V4.input_values(fwd), *attrs)]
    assert out == ("out3", "out0", "out1")  # IR outputs (max, sum, softmax_out, out) -> (out, max, sum)
    # bprop: the package's grad op, with the forward's statistics and output, lengths as int64 tensors
    lengths = {n: None for n in ("prefix", "actual_seq_kvlen", "q_start_idx", "kv_start_idx")}
    given = dict(fwd, **lengths, actual_seq_qlen=(3, 5), pse=None, drop_mask=None, atten_mask=None)
    fwd_op.bprop(*aclnn.FA_FORWARD_V4.input_values(given), *attrs, ("m", "s", "so", "o"), ("d0", "d1", "d2", "dy"))
    (call,) = grad_op.calls
    got = dict(zip(aclnn.FA_GRAD_V4.inputs + aclnn.FA_GRAD_V4.attrs, call))
    assert (got["dy"], got["softmax_max"], got["softmax_sum"], got["attention_in"]) == ("dy", "m", "s", "o")
    assert got["actual_seq_qlen"].asnumpy().tolist() == [3, 5]
    assert got["softmax_in_layout"] == "same_as_input" and (got["seed"], got["offset"]) == (0, 0)


@pytest.mark.parametrize("layout, package, expected", [
    ("BSH", True, "package"), ("BSH", False, "native"), ("BNSD", True, "native")])
def test_mindspore_ifa_runs_the_package_kernel_or_mindsporess_own_op(fake_ascend, monkeypatch, layout, package,
                                                                      expected):
    import importlib
    ms_ifa = importlib.import_module("ascend_attn.mindspore.incre_flash_attention")
    if not package:
        monkeypatch.setattr(backends, "probe_kernel_package", lambda: "no package (faked)")
    native = []
    monkeypatch.setattr(ms_ifa.ops, "incre_flash_attention", lambda *args: native.append(args) or "native out")
    prim = ms_ifa.IncreFlashAttentionV2(num_heads=4, input_layout=layout, num_key_value_heads=2)
    assert prim.backend == "mindspore.kernels"
    query, key, value, scale2 = names("query", "key", "value", "quant_scale2")
    out = prim.construct(query, key, value, quant_scale2=scale2)
    if expected == "package":
        (op,) = RecordedCustom.built
        assert op.func == "aclnnIncreFlashAttentionV2"
        values = dict(query=query, key=key, value=value, quant_scale2=scale2)
        assert op.calls == [(*aclnn.IFA_PACKAGE_V2.input_values(values), 4, 1.0, layout, 2, 0, 1)]
        import mindspore as ms
        assert op.out_dtype(ms.float16) == ms.int8  # quant_scale2 -> int8 output (scenario C)
    else:
        assert out == "native out" and native[0][:3] == (query, [key], [value])
