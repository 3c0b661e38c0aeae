"""Backend selection: NPU kernels > fallback, with availability faked (no NPU here)."""
import sys

import pytest

from ascend_attn import backends
from ascend_attn.torch_ops import npu


@pytest.fixture(autouse=True)
def fresh_probes():
    backends.clear_probe_cache()
    yield
    backends.clear_probe_cache()


def fake_npu(monkeypatch, torch_npu=True, package=True):
    monkeypatch.setattr(backends, "probe_torch_npu", lambda: None if torch_npu else "no torch_npu (faked)")
    monkeypatch.setattr(backends, "probe_kernel_package", lambda: None if package else "no package (faked)")


def test_cpu_tensors_always_take_a_cpu_backend(monkeypatch):
    fake_npu(monkeypatch)
    chosen, skipped = backends.select("torch", "ring_attention_update", "cpu")
    assert chosen.name in ("torch.cpu_native", "torch.fallback")  # native where the kernels are built
    assert any("runs on npu tensors, not cpu" in r for r in skipped["torch_npu.kernels"])


def test_npu_tensors_take_the_npu_kernel_when_usable(monkeypatch):
    fake_npu(monkeypatch)
    chosen, _ = backends.select("torch", "ring_attention_update", "npu")
    assert chosen.name == "torch_npu.kernels"


def test_npu_tensors_fall_back_and_say_why(monkeypatch):
    fake_npu(monkeypatch, torch_npu=False)
    chosen, skipped = backends.select("torch", "ring_attention_update", "npu")
    assert chosen.name == "torch.fallback"
    assert skipped["torch_npu.kernels"] == ["no torch_npu (faked)"]


def test_no_backend_error_lists_every_reason(monkeypatch):
    fake_npu(monkeypatch, torch_npu=False)
    monkeypatch.setattr(backends, "probe_torch", lambda: "torch is missing (faked)")
    with pytest.raises(backends.NoBackendError) as info:
        backends.select("torch", "ring_attention_update", "npu")
    assert "no torch_npu (faked)" in str(info.value) and "torch is missing (faked)" in str(info.value)


def test_unknown_op_is_not_supported():
    fallback = next(b for b in backends.BACKENDS if b.name == "torch.fallback")
    reasons = fallback.not_supported_reasons("no_such_op", "cpu")
    assert reasons == ["torch.fallback does not implement no_such_op"]


class RecordingOpDef:
    def __init__(self):
        self.devices = []

    def register_kernel(self, device):
        def record(fn):
            self.devices.append((device, fn))
            return fn
        return record


def test_npu_slot_is_filled_only_when_selected(monkeypatch):
    kernel = object()
    for usable, expected in ((True, [("npu", kernel)]), (False, [])):
        backends.clear_probe_cache()
        fake_npu(monkeypatch, torch_npu=usable)
        op_def = RecordingOpDef()
        chosen = npu.install({"ring_attention_update": op_def}, {"ring_attention_update": kernel})
        assert op_def.devices == expected
        assert chosen["ring_attention_update"] == ("torch_npu.kernels" if usable else "torch.fallback")


def test_every_op_has_an_npu_kernel_slot_with_its_own_requirements(monkeypatch):
    """RAU needs only torch_npu (CANN's op without the package); FA forward, FA grad and IFA also the
    glue (CANN's built-in op where the package is missing or its kernel can't run the input)."""
    from ascend_attn import torch_ops
    assert set(torch_ops.NPU_KERNELS) == set(backends.NPU_OPS) == set(torch_ops.OP_DEFS)
    assert set(backends.OPS) - set(backends.NPU_OPS) == {"self_attention"}
    monkeypatch.setattr(backends, "probe_torch_npu", lambda: None)
    monkeypatch.setattr(backends, "probe_npu_glue", lambda: "glue not built (faked)")
    monkeypatch.setattr(backends, "probe_kernel_package", lambda: "no package (faked)")
    chosen = {op: backends.select("torch", op, "npu") for op in backends.NPU_OPS}
    assert chosen["ring_attention_update"][0].name == "torch_npu.kernels"
    for op in ("flash_attention_varlen_score", "flash_attention_unpadding_score_grad", "incre_flash_attention"):
        assert chosen[op][0].name == "torch.fallback"
        assert "glue not built (faked)" in chosen[op][1]["torch_npu.kernels"]
    monkeypatch.setattr(backends, "probe_npu_glue", lambda: None)
    assert backends.select("torch", "flash_attention_varlen_score", "npu")[0].name == "torch_npu.kernels"
    assert backends.select("torch", "incre_flash_attention", "npu")[0].name == "torch_npu.kernels"
    # without the package, FA grad runs CANN's built-in FlashAttentionUnpaddingScoreGradV4 (aclnn.fag_api)
    assert backends.select("torch", "flash_attention_unpadding_score_grad", "npu")[0].name == "torch_npu.kernels"
    monkeypatch.setattr(backends, "probe_kernel_package", lambda: None)
    recorded = {op: RecordingOpDef() for op in backends.NPU_OPS}
    npu.install(recorded, torch_ops.NPU_KERNELS)
    assert all(r.devices == [("npu", torch_ops.NPU_KERNELS[op])] for op, r in recorded.items())


def test_broken_torch_npu_counts_as_no_npu(monkeypatch, tmp_path):
    """torch_npu without CANN fails on import; that must read as 'no NPU', not crash."""
    pkg = tmp_path / "torch_npu"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise RuntimeError('libhccl.so: cannot open shared object file')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "torch_npu", raising=False)
    reason = backends.probe_torch_npu()
    assert reason.startswith("torch_npu failed to import (RuntimeError: libhccl.so")


def test_missing_torch_npu_reason():
    assert "torch_npu is not installed" in backends.probe_torch_npu()


def test_kernel_package_found_in_custom_opp_path(monkeypatch, tmp_path):
    vendor = tmp_path / "vendors" / "ascend_attn"
    (vendor / "op_api").mkdir(parents=True)
    monkeypatch.setenv("ASCEND_HOME_PATH", str(tmp_path / "cann"))
    monkeypatch.setenv("ASCEND_CUSTOM_OPP_PATH", str(vendor))
    assert backends.probe_kernel_package() is None
    backends.clear_probe_cache()
    monkeypatch.setenv("ASCEND_CUSTOM_OPP_PATH", str(tmp_path / "elsewhere"))
    assert "custom-op package is not installed" in backends.probe_kernel_package()


def test_mindspore_on_ascend_native_then_aclnn(monkeypatch):
    """RAU: MindSpore's own V1 op unless the statistics are TND (then an aot op); FA grad runs with or
    without the package (CANN's op then); without Ascend everything is the pyfunc fallback."""
    monkeypatch.setattr(backends, "probe_mindspore_ascend", lambda: None)
    monkeypatch.setattr(backends, "probe_kernel_package", lambda: "no package (faked)")
    chosen, _ = backends.select("mindspore", "ring_attention_update", "Ascend", input_softmax_layout="")
    assert chosen.name == "mindspore.native"
    chosen, skipped = backends.select("mindspore", "ring_attention_update", "Ascend", input_softmax_layout="TND")
    assert chosen.name == "mindspore.kernels"
    assert any('input_softmax_layout "TND"' in r for r in skipped["mindspore.native"])
    for op in ("flash_attention_varlen_score", "incre_flash_attention"):
        assert backends.select("mindspore", op, "Ascend")[0].name == "mindspore.kernels"
    # without the package FA grad runs CANN's built-in op (aclnn.fag_api), with it the package's
    assert backends.select("mindspore", "flash_attention_unpadding_score_grad", "Ascend")[0].name == \
        "mindspore.kernels"
    monkeypatch.setattr(backends, "probe_kernel_package", lambda: None)
    assert backends.select("mindspore", "flash_attention_unpadding_score_grad", "Ascend")[0].name == \
        "mindspore.kernels"
    monkeypatch.setattr(backends, "probe_mindspore_ascend", lambda: "device_target is CPU (faked)")
    assert all(backends.select("mindspore", op, "CPU")[0].name == "mindspore.fallback" for op in backends.OPS)


def test_self_attention_runs_on_the_fallbacks_and_says_why_not_on_npu(monkeypatch):
    fake_npu(monkeypatch)
    monkeypatch.setattr(backends, "probe_mindspore_ascend", lambda: None)
    chosen, skipped = backends.select("torch", "self_attention", "npu")
    assert chosen.name == "torch.fallback"
    assert "ATB library" in skipped["torch_npu.kernels"][0]
    chosen, skipped = backends.select("mindspore", "self_attention", "Ascend")
    assert chosen.name == "mindspore.fallback" and "ATB library" in skipped["mindspore.kernels"][0]
