"""The opt-in ``flash_attn`` / ``ring_flash_attn`` import aliases (ascend_attn.compat.flash_attn)."""
import importlib.util
import sys

import pytest
import torch

import ascend_attn
from ascend_attn import flash_attn_interface, ring_attention
from ascend_attn.compat import flash_attn as fa_compat


@pytest.fixture
def clean_aliases():
    assert "flash_attn" not in sys.modules and "ring_flash_attn" not in sys.modules
    yield
    fa_compat.uninstall()
    assert "flash_attn" not in sys.modules and "ring_flash_attn" not in sys.modules


def test_install_serves_flash_attn_and_ring_flash_attn_imports(clean_aliases):
    added = fa_compat.install()
    assert set(added) == {"flash_attn", "flash_attn.flash_attn_interface", "ring_flash_attn"}
    assert fa_compat.installed()
    from flash_attn import flash_attn_func, flash_attn_varlen_qkvpacked_func  # noqa: F401
    from flash_attn.flash_attn_interface import flash_attn_with_kvcache
    from ring_flash_attn import ring_flash_attn_varlen_func, zigzag_ring_flash_attn_varlen_func
    import flash_attn
    assert flash_attn_func is ascend_attn.flash_attn_func is flash_attn_interface.flash_attn_func
    assert flash_attn_with_kvcache is ascend_attn.flash_attn_with_kvcache
    assert ring_flash_attn_varlen_func is ring_attention.ring_flash_attn_varlen_func
    assert zigzag_ring_flash_attn_varlen_func is ascend_attn.zigzag_ring_flash_attn_varlen_func
    assert flash_attn.__version__.startswith("2.")
    q = torch.randn(1, 4, 2, 8)
    torch.testing.assert_close(flash_attn_func(q, q, q, causal=True), ascend_attn.flash_attn_func(q, q, q, causal=True))
    assert fa_compat.install() == added  # idempotent
    fa_compat.uninstall()
    assert not fa_compat.installed()
    with pytest.raises(ImportError):
        import flash_attn  # noqa: F401,F811


def test_install_never_shadows_a_real_package_silently(clean_aliases, monkeypatch):
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args):
        if name == "flash_attn":
            return importlib.machinery.ModuleSpec("flash_attn", None)
        return real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(RuntimeError, match="a real flash_attn package is importable"):
        fa_compat.install()
    assert "flash_attn" not in sys.modules
    with pytest.warns(RuntimeWarning, match="shadowing the installed package"):
        fa_compat.install(replace=True)
    assert fa_compat.installed()


def test_install_rejects_unknown_packages(clean_aliases):
    with pytest.raises(ValueError, match="install: packages only supports"):
        fa_compat.install(packages=("xformers",))
