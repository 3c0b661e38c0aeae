"""Opt-in import aliases ``flash_attn`` and ``ring_flash_attn`` served by ascend_attn.

Code written for flash-attn 2.x or ring-flash-attention runs unchanged after one call::

    import ascend_attn.compat.flash_attn as fa_compat
    fa_compat.install()          # then, anywhere in the process:
    from flash_attn import flash_attn_func, flash_attn_varlen_func
    from flash_attn.flash_attn_interface import flash_attn_with_kvcache
    from ring_flash_attn import zigzag_ring_flash_attn_varlen_func

``install`` only adds entries to ``sys.modules``. It never shadows a real package silently: if
``flash_attn`` (or ``ring_flash_attn``) is importable or already imported, it raises
``RuntimeError`` unless ``replace=True`` (then it warns and takes over the name for this
process). ``uninstall`` removes exactly the aliases it added.
"""
from __future__ import annotations

import importlib.util
import sys
import types
import warnings

from .. import flash_attn_interface, ring_attention

__all__ = ["install", "uninstall", "installed", "FLASH_ATTN_NAMES", "RING_FLASH_ATTN_NAMES"]

FLASH_ATTN_NAMES = ("flash_attn_func", "flash_attn_varlen_func", "flash_attn_with_kvcache",
                    "flash_attn_qkvpacked_func", "flash_attn_kvpacked_func", "flash_attn_varlen_qkvpacked_func",
                    "flash_attn_varlen_kvpacked_func")
RING_FLASH_ATTN_NAMES = ("ring_flash_attn_varlen_func", "zigzag_ring_flash_attn_varlen_func", "ring_flash_attn_func",
                         "zigzag_ring_flash_attn_func", "ring_flash_attn_varlen_qkvpacked_func",
                         "ring_flash_attn_varlen_kvpacked_func", "zigzag_ring_flash_attn_varlen_qkvpacked_func",
                         "zigzag_ring_flash_attn_varlen_kvpacked_func")
# Reported as the module's __version__: the flash-attn API level this layer follows.
FLASH_ATTN_VERSION = "2.6.3+ascend_attn"

_ADDED: dict[str, types.ModuleType] = {}


def _package(name, source, names, doc):
    module = types.ModuleType(name, doc)
    module.__path__ = []  # a package, so that `import name.sub` resolves through sys.modules
    for n in names:
        setattr(module, n, getattr(source, n))
    module.__all__ = list(names)
    module.__ascend_attn_alias__ = True
    return module


def _real_package(name):
    existing = sys.modules.get(name)
    if existing is not None:
        return not getattr(existing, "__ascend_attn_alias__", False)
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def install(replace: bool = False, packages=("flash_attn", "ring_flash_attn")) -> list[str]:
    """Register the aliases (``flash_attn``, ``flash_attn.flash_attn_interface``,
    ``ring_flash_attn``) in ``sys.modules``; returns the module names added.

    Raises ``RuntimeError`` naming the package if a real one is importable, unless ``replace``.
    """
    unknown = [p for p in packages if p not in ("flash_attn", "ring_flash_attn")]
    if unknown:
        raise ValueError(f"install: packages only supports \"flash_attn\" and \"ring_flash_attn\", but got {unknown}")
    for name in packages:
        if _real_package(name):
            if not replace:
                raise RuntimeError(f"install: a real {name} package is importable in this environment; "
                                   f"ascend_attn does not shadow it silently (pass replace=True to alias "
                                   f"{name} to ascend_attn for this process)")
            warnings.warn(f"ascend_attn.compat.flash_attn: {name} now refers to ascend_attn, shadowing the "
                          f"installed package for this process", RuntimeWarning, stacklevel=2)
    added = []
    if "flash_attn" in packages:
        fa = _package("flash_attn", flash_attn_interface, FLASH_ATTN_NAMES,
                      "flash-attn 2.x API served by ascend_attn (ascend_attn.compat.flash_attn alias)")
        fa.__version__ = FLASH_ATTN_VERSION
        fa.flash_attn_interface = flash_attn_interface
        for name, module in (("flash_attn", fa), ("flash_attn.flash_attn_interface", flash_attn_interface)):
            if name not in _ADDED:  # a second install keeps what the first one replaced
                _ADDED[name] = sys.modules.get(name)
            sys.modules[name] = module
            added.append(name)
    if "ring_flash_attn" in packages:
        ring = _package("ring_flash_attn", ring_attention, RING_FLASH_ATTN_NAMES,
                        "ring-flash-attention API served by ascend_attn (ascend_attn.compat.flash_attn alias)")
        if "ring_flash_attn" not in _ADDED:
            _ADDED["ring_flash_attn"] = sys.modules.get("ring_flash_attn")
        sys.modules["ring_flash_attn"] = ring
        added.append("ring_flash_attn")
    return added


def installed() -> bool:
    """Whether ``flash_attn`` currently resolves to this alias."""
    return getattr(sys.modules.get("flash_attn"), "__ascend_attn_alias__", False)


def uninstall() -> None:
    """Remove the aliases added by :func:`install` (restoring what they replaced)."""
    for name, previous in list(_ADDED.items()):
        if previous is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = previous
        del _ADDED[name]
