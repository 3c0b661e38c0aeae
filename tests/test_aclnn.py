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
    inputs = []
    for group in re.findall(r'const char\* const inputs\[\] = \{([^}]*)\}', body):  # loop over a name array
        inputs += re.findall(r'"(\w+)"', group)
    inputs += re.findall(r'(?:this->Input|\bin)\("(\w+)"', body)
    attrs = [ALIASES.get(a, a) for a in re.findall(r'this->Attr\("(\w+)"', body)]
    outputs = re.findall(r'this->Output\("(\w+)"', body)
    for group in re.findall(r'for \(const char\* \w+ : \{([^}]*)\}\)', body):
        outputs += re.findall(r'"(\w+)"', group)
    return inputs, attrs, outputs


PACKAGE_OPS = {  # folder -> the table's entry
    "ring_attention_update": aclnn.RAU_PACKAGE,
    "flash_attention_unpadding_score_grad_v4": aclnn.FA_GRAD_PACKAGE,
    "incre_flash_attention_v2": aclnn.IFA_PACKAGE_V2,
}
# CANN's built-in attention OpTypes (ops-transformer attention/, CANN 8.x aclnn API list): a package OpType
# equal to one of them would compete with CANN's op (issue 19).
CANN_BUILTIN_OP_TYPES = {
    "RingAttentionUpdate", "RingAttentionUpdateV2", "FlashAttentionScore", "FlashAttentionScoreV2",
    "FlashAttentionVarLenScore", "FlashAttentionVarLenScoreV2", "FlashAttentionVarLenScoreV3",
    "FlashAttentionVarLenScoreV4", "FlashAttentionScoreGrad", "FlashAttentionScoreGradV2",
    "FlashAttentionUnpaddingScoreGrad", "FlashAttentionUnpaddingScoreGradV2", "FlashAttentionUnpaddingScoreGradV3",
    "FlashAttentionUnpaddingScoreGradV4", "IncreFlashAttention", "IncreFlashAttentionV2", "IncreFlashAttentionV3",
    "IncreFlashAttentionV4", "PromptFlashAttention", "PromptFlashAttentionV2", "PromptFlashAttentionV3",
    "FusedInferAttentionScore", "FusedInferAttentionScoreV2", "FusedInferAttentionScoreV3",
}


def cmake_op_list(name: str) -> list[str]:
    src = (ROOT / "ops_kernels" / "CMakeLists.txt").read_text()
    return re.search(rf"set\({name}\s+([^)]*)\)", src).group(1).split()


def snake(op_type: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", op_type).lower()


def test_no_package_op_type_is_a_cann_builtin_name():
    """Every OpType the package registers (CMake list, OP_ADD, the aclnn table) carries the vendor prefix,
    is none of CANN's built-in names, and its kernel entry is the OpType in snake case."""
    folders, op_types = cmake_op_list("ASCEND_ATTN_OP_DIRS"), cmake_op_list("ASCEND_ATTN_OP_TYPES")
    assert len(folders) == len(op_types) and set(folders) == set(PACKAGE_OPS)
    for folder, op_type in zip(folders, op_types):
        assert op_type.startswith(aclnn.PACKAGE_PREFIX) and op_type not in CANN_BUILTIN_OP_TYPES, op_type
        assert PACKAGE_OPS[folder].op_type == op_type
        opdef = next((ROOT / "ops_kernels" / folder / "op_host").glob("*_def.cpp")).read_text()
        assert re.findall(r"OP_ADD\((\w+)\)", opdef) == [op_type]
        kernel = (ROOT / "ops_kernels" / folder / "op_kernel" / f"{folder}.cpp").read_text()
        assert re.search(rf"__global__ __aicore__ void {snake(op_type)}\(", kernel), snake(op_type)
    for api in aclnn.APIS:
        assert (api.source == "package") == api.op_type.startswith(aclnn.PACKAGE_PREFIX), api.op_type
        assert api.source == "package" or api.op_type in CANN_BUILTIN_OP_TYPES, api.op_type
    assert not {api.api for api in aclnn.APIS if api.source == "package"} & {"aclnn" + t for t in CANN_BUILTIN_OP_TYPES}


@pytest.mark.parametrize("api, folder, renamed", [
    (aclnn.FA_GRAD_PACKAGE, "flash_attention_unpadding_score_grad_v4", {"pse_shift": "pse"}),
    (aclnn.IFA_PACKAGE_V2, "incre_flash_attention_v2", {}),
    (aclnn.RAU_PACKAGE, "ring_attention_update", {}),
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
    ({"layout": "BNSD"}, True, None),
    ({"layout": "BSND"}, True, None),
    ({"kv_form": "list"}, True, None),
    ({"layout": "BNSD", "kv_form": "list"}, True, None),
    ({"kv_form": "paged"}, False, "paged key/value"),
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


def fa_grad_plan(sparse_mode=0, mask_form=None, pse_form=None, dropout=False, head_dim=128):
    from types import SimpleNamespace
    return SimpleNamespace(sparse_mode=sparse_mode, mask_form=mask_form, pse_form=pse_form, dropout=dropout,
                           head_dim=head_dim)


def test_fag_entry_is_the_package_kernel_only_where_it_implements_the_input():
    plan = fa_grad_plan(sparse_mode=3, mask_form="compressed")
    assert aclnn.fag_plan_reasons(plan) == []
    assert aclnn.fag_api(plan, package_usable=True) is aclnn.FA_GRAD_PACKAGE
    assert aclnn.fag_api(plan, package_usable=False) is aclnn.FA_GRAD_CANN_V4  # never lose a CANN feature
    too_wide = fa_grad_plan(head_dim=1024)
    assert any("head dim 1024" in r for r in aclnn.fag_plan_reasons(too_wide))
    assert aclnn.fag_api(too_wide, package_usable=True) is aclnn.FA_GRAD_CANN_V4
    with pytest.raises(TypeError):
        aclnn.fag_package_reasons(0, False, False, False, 128)  # keyword-only


@pytest.mark.parametrize("sparse_mode", [0, 1, 2, 3, 4, 6, 7, 8])
def test_fag_package_kernel_runs_every_sparse_mode_with_mask_pse_and_dropout(sparse_mode):
    for pse_form in (None, "full", "row", "alibi", "slopes"):
        for dropout in (False, True):
            assert aclnn.fag_package_reasons(sparse_mode=sparse_mode, has_mask=True, has_pse=pse_form is not None,
                                             has_dropout=dropout, head_dim=128, pse_form=pse_form) == []


def test_info_names_the_entry_per_input_class():
    rows = aclnn.entry_report(None)
    entries = {(op, what): api for op, what, api, _ in rows}
    assert entries[("flash_attention_unpadding_score_grad", "no atten_mask")] == aclnn.FA_GRAD_PACKAGE.api
    assert entries[("incre_flash_attention", "paged K/V")] == aclnn.IFA_CANN_V4.api
    assert entries[("ring_attention_update", "SBH / TND, any statistics layout")] == aclnn.RAU_PACKAGE.api
    assert all(api.startswith("aclnn") and why for _, _, api, why in rows)
    without = aclnn.entry_report("not installed")
    assert all(not api.startswith("aclnn" + aclnn.PACKAGE_PREFIX) for _, _, api, _ in without)


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
    for cached in (flash_attention.aclnn_op, flash_attention.grad_aot_op, incre_flash_attention.aclnn_op):
        cached.cache_clear()
    yield
    for cached in (flash_attention.aclnn_op, flash_attention.grad_aot_op, incre_flash_attention.aclnn_op):
        cached.cache_clear()


def names(*items):
    return [Sentinel(n) for n in items]


@pytest.mark.parametrize("package", [True, False])
def test_mindspore_rau_tnd_statistics_run_the_package_or_cann_v2_as_an_aot_op(fake_ascend, monkeypatch, package):
    from ascend_attn.mindspore.ring_attention_update import RingAttentionUpdate
    if not package:
        monkeypatch.setattr(backends, "probe_kernel_package", lambda: "no package (faked)")
    prim = RingAttentionUpdate("TND", "TND")
    assert prim.backend == "mindspore.kernels"
    (op,) = RecordedCustom.built
    api = aclnn.RAU_PACKAGE if package else aclnn.RAU_V2
    assert (op.func, op.func_type) == (api.api, "aot")
    inputs = names(*api.inputs)
    prim.construct(*inputs)
    assert op.calls == [(*inputs, "TND", "TND")]


def test_mindspore_fa_forward_and_grad_run_aclnn_in_ir_order(fake_ascend):
    from ascend_attn.mindspore.flash_attention import FlashAttentionVarLenScoreV4
    prim = FlashAttentionVarLenScoreV4(head_num=4, scale_value=0.5, sparse_mode=3, softmax_out_layout="same_as_input")
    assert prim.backend == "mindspore.kernels"
    (fwd_op,) = RecordedCustom.built  # the grad entry depends on the input: built by the bprop
    assert fwd_op.func == "aclnnFlashAttentionVarLenScoreV4"
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
    _, grad_op = RecordedCustom.built
    assert grad_op.func == "aclnnAscendAttnFlashAttentionUnpaddingScoreGradV4"
    (call,) = grad_op.calls
    got = dict(zip(aclnn.FA_GRAD_PACKAGE.inputs + aclnn.FA_GRAD_PACKAGE.attrs, call))
    assert (got["dy"], got["softmax_max"], got["softmax_sum"], got["attention_in"]) == ("dy", "m", "s", "o")
    assert got["actual_seq_qlen"].asnumpy().tolist() == [3, 5]
    assert got["softmax_in_layout"] == "same_as_input" and (got["seed"], got["offset"]) == (0, 0)


@pytest.mark.parametrize("layout, package, expected", [
    ("BSH", True, "package"), ("BSH", False, "native"), ("BNSD", True, "package")])
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
        assert op.func == "aclnnAscendAttnIncreFlashAttentionV2"
        values = dict(query=query, key=key, value=value, quant_scale2=scale2)
        assert op.calls == [(*aclnn.IFA_PACKAGE_V2.input_values(values), 4, 1.0, layout, 2, 0, 1)]
        import mindspore as ms
        assert op.out_dtype(ms.float16) == ms.int8  # quant_scale2 -> int8 output (scenario C)
    else:
        assert out == "native out" and native[0][:3] == (query, [key], [value])


@pytest.mark.parametrize("package", [True, False])
def test_mindspore_fa_grad_runs_the_package_or_cann_entry(fake_ascend, monkeypatch, package):
    from ascend_attn.mindspore.flash_attention import FlashAttentionUnpaddingScoreGradV4
    if not package:
        monkeypatch.setattr(backends, "probe_kernel_package", lambda: "no package (faked)")
    prim = FlashAttentionUnpaddingScoreGradV4(head_num=4, scale_value=0.5, sparse_mode=2)
    assert prim.backend == "mindspore.kernels" and RecordedCustom.built == []
    query, key, value, dy, smax, ssum, out, mask = names("query", "key", "value", "dy", "m", "s", "o", "mask")
    prim.construct(query, key, value, dy, atten_mask=mask, softmax_max=smax, softmax_sum=ssum, attention_in=out,
                   actual_seq_qlen=(3, 5), actual_seq_kvlen=(3, 5))
    (op,) = RecordedCustom.built
    api = aclnn.FA_GRAD_PACKAGE if package else aclnn.FA_GRAD_CANN_V4
    assert op.func == api.api
    (call,) = op.calls
    got = dict(zip(api.inputs + api.attrs, call))
    assert (got["query"], got["atten_mask"], got["attention_in"], got["sparse_mode"]) == ("query", "mask", "o", 2)
    if package:  # value-dependent int64 tensor inputs
        assert got["actual_seq_kvlen"].asnumpy().tolist() == [3, 5]
    else:  # CANN's op: host int arrays
        assert got["actual_seq_kvlen"] == (3, 5)
