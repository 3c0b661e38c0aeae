"""The native CPU kernel library: path selection, build-on-first-use, fallback reasons, features."""
import pytest
import torch

from ascend_attn import backends, native


def test_requested_mode_follows_env_and_forced(monkeypatch):
    monkeypatch.setenv(native.ENV_KERNEL, "eager")
    assert native.requested() == "eager"
    with native.forced("native"):
        assert native.requested() == "native"
        with native.forced("eager"):
            assert native.requested() == "eager"
        assert native.requested() == "native"
    monkeypatch.setenv(native.ENV_KERNEL, "NATIVE")
    assert native.requested() == "native"


def test_bad_mode_names_the_variable(monkeypatch):
    monkeypatch.setenv(native.ENV_KERNEL, "fast")
    with pytest.raises(ValueError, match=r"ASCEND_ATTN_CPU_KERNEL: supported values are native, eager; got 'fast'"):
        native.requested()
    with pytest.raises(ValueError, match="mode: supported values"):
        with native.forced("gpu"):
            pass


def test_library_builds_and_reports_cpu_features():
    assert native.unavailable_reason() is None
    features = native.cpu_features()
    # Independent detection: torch's own cpuinfo-based probes.
    assert features["avx512bf16"] == torch.cpu._is_avx512_bf16_supported()
    assert features["amx_bf16"] == torch.cpu._is_amx_tile_supported()
    assert features["avx512f"] == torch.cpu._is_avx512_supported()
    assert features["avx2"] == torch.cpu._is_avx2_supported()


def test_missing_compiler_leaves_eager_path_with_reason(monkeypatch, tmp_path):
    monkeypatch.setenv(native.ENV_CACHE, str(tmp_path))  # nothing cached there
    monkeypatch.setattr(native, "_compiler", lambda: None)
    monkeypatch.setattr(native, "_state", {"loaded": False, "reason": None})
    assert native.load() is False
    assert "no C++ compiler found" in native.unavailable_reason()
    assert "eager path runs" in native.unavailable_reason()
    assert not native.use_native(native.OPS[0] if native.OPS else "flash_attention_varlen_score",
                                 torch.zeros(1))


def test_non_cpu_tensors_never_take_the_native_path():
    for op in native.OPS:
        assert not native.use_native(op, torch.zeros(1, device="meta"))
    assert not native.use_native("no_such_op", torch.zeros(1))


def test_info_registry_reports_native_backend(monkeypatch):
    names = [b.name for b in backends.BACKENDS]
    assert names.index("torch.cpu_native") < names.index("torch.fallback")
    backends.clear_probe_cache()
    monkeypatch.setenv(native.ENV_KERNEL, "eager")
    try:
        assert "forces the eager CPU path" in backends.probe_native_cpu()
    finally:
        backends.clear_probe_cache()
