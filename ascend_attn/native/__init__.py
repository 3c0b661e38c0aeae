"""Native CPU kernels: a C++ extension built against the installed torch on first use, then cached.

Layout: ``ascend_attn/csrc/cpu/*.cpp`` are compiled into one shared library whose ops live in the
``ascend_attn_cpu`` namespace (``torch.ops.ascend_attn_cpu.<name>``); each source file registers its
own ops with ``TORCH_LIBRARY_FRAGMENT``, so kernels of different ops never share a binding file.
The public ``ascend_attn::*`` schemas stay where they are (``torch_ops/``): their CPU kernels call
:func:`use_native` and route to the native op, else to the device-generic eager code.

Which path runs on CPU: ``ASCEND_ATTN_CPU_KERNEL=native`` (default) or ``eager``; tests switch with
:func:`forced`. When the build cannot happen (no compiler, a failed build) the eager path runs and
:func:`unavailable_reason` says why (``ascend-attn info`` prints it).

The library is built once per (torch version, source hash) into ``$ASCEND_ATTN_CACHE`` (default
``~/.cache/ascend_attn``); a later process loads the cached ``.so`` without invoking the compiler.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import threading
from pathlib import Path

ENV_KERNEL = "ASCEND_ATTN_CPU_KERNEL"
ENV_CACHE = "ASCEND_ATTN_CACHE"
MODES = ("native", "eager")
SOURCE_DIR = Path(__file__).resolve().parent.parent / "csrc" / "cpu"
# Flags are part of the cache key. No -march=native: the cached library may meet another CPU
# (the cache can live on a shared home); ISA-specific code uses target attributes and is chosen
# at run time from the features the kernels detect themselves.
CFLAGS = ("-O3", "-std=c++17", "-fno-math-errno", "-Wno-unused-function")

# Ops of the ascend_attn namespace whose CPU kernel has a native implementation.
OPS: tuple[str, ...] = ("flash_attention_varlen_score", "flash_attention_unpadding_score_grad",
                        "ring_attention_update", "incre_flash_attention")

_lock = threading.Lock()
_state: dict = {"loaded": False, "reason": None}
_forced: list[str] = []


def requested() -> str:
    """The CPU path asked for: the innermost :func:`forced` mode, else the environment variable."""
    if _forced:
        return _forced[-1]
    mode = os.environ.get(ENV_KERNEL, "native").strip().lower() or "native"
    if mode not in MODES:
        raise ValueError(f"{ENV_KERNEL}: supported values are {', '.join(MODES)}; got {mode!r}")
    return mode


@contextlib.contextmanager
def forced(mode: str):
    """Run the block with the CPU path ``mode`` ("native" or "eager"), whatever the environment says."""
    if mode not in MODES:
        raise ValueError(f"mode: supported values are {', '.join(MODES)}; got {mode!r}")
    _forced.append(mode)
    try:
        yield
    finally:
        _forced.pop()


def _sources() -> list[Path]:
    return sorted(SOURCE_DIR.glob("*.cpp"))


def _build_key() -> str:
    import torch
    digest = hashlib.sha1()
    for path in sorted(SOURCE_DIR.glob("*")):
        if path.suffix in (".cpp", ".h"):
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    digest.update(" ".join(CFLAGS).encode())
    digest.update(torch.__version__.encode())
    return digest.hexdigest()[:12]


def cache_dir() -> Path:
    root = Path(os.environ.get(ENV_CACHE) or Path.home() / ".cache" / "ascend_attn")
    import torch
    return root / f"cpu_kernels-torch{torch.__version__.replace('+', '_')}-{_build_key()}"


def _compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")


def _load() -> None:
    import torch
    name = "ascend_attn_cpu_" + _build_key()
    build_dir = cache_dir()
    library = build_dir / f"{name}.so"
    if library.exists():
        torch.ops.load_library(str(library))
        return
    if _compiler() is None:
        raise RuntimeError("no C++ compiler found (install g++ or set CXX)")
    if shutil.which("ninja") is None and importlib_missing("ninja"):
        raise RuntimeError("ninja is not installed (pip install ninja)")
    build_dir.mkdir(parents=True, exist_ok=True)
    print(f"ascend_attn: building the native CPU kernels (first use, about a minute; cached in {build_dir})",
          file=sys.stderr, flush=True)
    from torch.utils import cpp_extension
    cpp_extension.load(name=name, sources=[str(p) for p in _sources()], extra_cflags=list(CFLAGS),
                       build_directory=str(build_dir), is_python_module=False, verbose=False)


def importlib_missing(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is None


def load() -> bool:
    """Build (first use) or load the native library once per process; True when its ops are usable."""
    with _lock:
        if not _state["loaded"]:
            _state["loaded"] = True
            if not _sources():
                _state["reason"] = f"no native sources in {SOURCE_DIR}"
            else:
                try:
                    _load()
                except Exception as exc:  # a failed build must leave the eager path working
                    first = str(exc).strip().splitlines()
                    _state["reason"] = (f"native CPU kernels unavailable ({type(exc).__name__}: "
                                        f"{first[-1] if first else ''}); the eager path runs")
        return _state["reason"] is None


def unavailable_reason() -> str | None:
    """None when the native kernels are usable, else a sentence saying why not (builds on first call)."""
    load()
    return _state["reason"]


def use_native(op: str, *tensors) -> bool:
    """Whether the CPU kernel of ``op`` should run natively for these tensors (all on CPU)."""
    if op not in OPS or requested() != "native":
        return False
    if any(t is not None and t.device.type != "cpu" for t in tensors):
        return False
    return load()


def gemm_kind() -> str | None:
    """What runs the FA kernels' fp32 matrix products on this CPU (csrc/cpu/gemm.h), or None."""
    if not load():
        return None
    import torch
    return torch.ops.ascend_attn_cpu.gemm_kind()


def cpu_features() -> dict[str, bool]:
    """The instruction-set features the kernels dispatch on, as the native library detects them."""
    if not load():
        return {}
    import torch
    return {name: bool(flag) for name, flag in
            zip(("avx2", "avx512f", "avx512bf16", "avx512fp16", "amx_bf16", "amx_int8"),
                torch.ops.ascend_attn_cpu.cpu_features())}
