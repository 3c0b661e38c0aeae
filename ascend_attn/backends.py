"""Backend registry: what each backend can run, and why it cannot run a given input.

Modelled on xformers' ``not_supported_reasons``: a backend answers with a list of reasons, and an
empty list means "I can run this". ``select`` walks the backends of a framework in priority
order (NPU kernels first, the CPU fallback last) and returns the first one with no reason,
together with the reasons of every backend it skipped, which ``ascend-attn info`` prints.

Availability probes never import torch_npu unless it is installed, and treat any ImportError /
RuntimeError / OSError on import as "no NPU" (torch_npu without the CANN toolkit breaks on
import). Probes are plain functions looked up by name at call time, so tests can fake them.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

# The ops of the project, by schema name (torch.ops.ascend_attn.<name>). NPU_OPS have an NPU kernel;
# ATB SelfAttention is the ATB library's on Ascend (not an aclnn op), so only the fallbacks run it here.
NPU_OPS = ("ring_attention_update", "flash_attention_varlen_score", "flash_attention_unpadding_score_grad",
           "incre_flash_attention")
OPS = NPU_OPS + ("self_attention",)

VENDOR_NAME = "ascend_attn"


# ----------------------------------------------------------------------------- probes
# Each returns None when the thing is usable, else a sentence saying why not.

@lru_cache(maxsize=None)
def probe_torch() -> str | None:
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed (pip install 'ascend_attn[torch]')"
    return None


@lru_cache(maxsize=None)
def probe_torch_npu() -> str | None:
    if probe_torch() is not None:
        return "torch is not installed"
    if importlib.util.find_spec("torch_npu") is None:
        return "torch_npu is not installed (pip install 'ascend_attn[npu]' on a machine with the CANN toolkit)"
    try:
        torch_npu = importlib.import_module("torch_npu")
        import torch
        if not torch.npu.is_available():
            return "torch_npu imported but no NPU device is visible"
    except (ImportError, RuntimeError, OSError, AttributeError) as exc:
        return f"torch_npu failed to import ({type(exc).__name__}: {exc})"
    del torch_npu
    return None


def kernel_package_dirs() -> list[Path]:
    """Where CANN looks for custom-op vendor packages (ASCEND_CUSTOM_OPP_PATH, then the OPP)."""
    dirs = [Path(p) for p in os.environ.get("ASCEND_CUSTOM_OPP_PATH", "").split(":") if p]
    opp = os.environ.get("ASCEND_OPP_PATH")
    if opp:
        dirs.append(Path(opp) / "vendors" / VENDOR_NAME)
    return dirs


@lru_cache(maxsize=None)
def probe_kernel_package() -> str | None:
    if not os.environ.get("ASCEND_HOME_PATH") and not os.environ.get("ASCEND_OPP_PATH"):
        return "no CANN toolkit (ASCEND_HOME_PATH / ASCEND_OPP_PATH unset), so no custom-op package"
    for d in kernel_package_dirs():
        if (d / "op_api").is_dir() or (d / "op_impl").is_dir():
            return None
    return (f"the {VENDOR_NAME} custom-op package is not installed "
            "(build ops_kernels/ and run its installer; see README 'NPU path')")


@lru_cache(maxsize=None)
def probe_npu_glue() -> str | None:
    """The C++ extension binding the aclnn ops for torch (ascend_attn/csrc/npu_ops.cpp)."""
    if importlib.util.find_spec("ascend_attn._npu_ext") is None:
        return "the NPU glue extension ascend_attn._npu_ext is not built (python scripts/build_npu_ext.py, needs torch_npu and CANN)"
    return None


@lru_cache(maxsize=None)
def probe_native_cpu() -> str | None:
    """The native CPU kernels (ascend_attn/csrc/cpu, built on first use): usable, forced off, or why not."""
    if probe_torch() is not None:
        return "torch is not installed"
    from . import native
    if native.requested() == "eager":
        return f"{native.ENV_KERNEL}=eager forces the eager CPU path"
    return native.unavailable_reason()


@lru_cache(maxsize=None)
def probe_mindspore() -> str | None:
    if importlib.util.find_spec("mindspore") is None:
        return "mindspore is not installed (pip install 'ascend_attn[mindspore]')"
    return None


@lru_cache(maxsize=None)
def probe_mindspore_ascend() -> str | None:
    reason = probe_mindspore()
    if reason:
        return reason
    import mindspore
    if mindspore.get_context("device_target") != "Ascend":
        return f"MindSpore device_target is {mindspore.get_context('device_target')}, not Ascend"
    return None


# ----------------------------------------------------------------------------- registry

@dataclass(frozen=True)
class Backend:
    """One way to run ops. ``probes`` name functions of this module (looked up at call time)."""

    name: str
    framework: str  # "torch" or "mindspore"
    ops: tuple[str, ...]
    devices: tuple[str, ...]  # device types it runs on; "*" = any
    probes: tuple[str, ...]
    description: str
    op_limits: dict = field(default_factory=dict)  # op -> callable(**attrs) -> list[str]

    def unavailable_reasons(self) -> list[str]:
        reasons = []
        for probe in self.probes:
            reason = globals()[probe]()
            if reason:
                reasons.append(reason)
        return reasons

    def not_supported_reasons(self, op: str, device: str, **attrs) -> list[str]:
        reasons = []
        if op not in self.ops:
            reasons.append(f"{self.name} does not implement {op}" + (
                " (on Ascend it is the ATB library's operator)" if op == "self_attention" else ""))
        if "*" not in self.devices and device not in self.devices:
            reasons.append(f"{self.name} runs on {'/'.join(self.devices)} tensors, not {device}")
        limit: Callable | None = self.op_limits.get(op)
        if limit is not None and not reasons:
            reasons += limit(**attrs)
        return reasons + self.unavailable_reasons()


def _needs(*probes):
    """op_limits entry: the op additionally needs these probes to pass."""
    def limit(**_):
        return [r for r in (globals()[p]() for p in probes) if r]
    return limit


def _ms_native_rau_limits(input_softmax_layout: str = "", **_) -> list[str]:
    if input_softmax_layout == "TND":
        return ['MindSpore\'s own RingAttentionUpdate (V1) has no input_softmax_layout "TND"']
    return []


# Per-op requirements beyond a backend's own probes (none today: where the ascend_attn package is not
# installed or its kernel does not implement an input, CANN's built-in op of the documented name runs).
# Which aclnn entry each op calls on Ascend is aclnn.py's table and selection (shared by the torch glue
# and MindSpore's aot Custom ops; `ascend-attn info` prints it per input class).
_NPU_OP_NEEDS: dict[str, tuple[str, ...]] = {}

def _native_ops() -> tuple[str, ...]:
    # native/__init__.py imports nothing heavy, so the registry can read its op list without torch.
    from .native import OPS as native_ops
    return native_ops


BACKENDS: tuple[Backend, ...] = (
    # On NPU tensors, through the glue extension: RingAttentionUpdate is the ascend_attn package's
    # (ops_kernels/) where installed, else CANN's own V2 (through torch_npu, no glue needed); the FA
    # forward is CANN's V4; FA grad V4 and IFA are the package's kernels where they implement the
    # input, else CANN's built-in V4 ops (aclnn.fag_api / aclnn.ifa_api).
    Backend("torch_npu.kernels", "torch", NPU_OPS, ("npu",), ("probe_torch_npu",),
            "NPU kernels on NPU tensors (CANN / ascend_attn custom-op package through torch_npu)",
            {op: _needs("probe_npu_glue", *_NPU_OP_NEEDS.get(op, ())) for op in NPU_OPS[1:]}),
    # CPU tensors of the ops with a native kernel (ascend_attn/native): fused C++, same numerics.
    Backend("torch.cpu_native", "torch", _native_ops(), ("cpu",), ("probe_native_cpu",),
            "native C++ CPU kernels (built on first use against the installed torch, cached)"),
    Backend("torch.fallback", "torch", OPS, ("*",), ("probe_torch",),
            "device-generic torch code (CPU, CUDA or NPU tensors); follows the NPU formulas and rounding"),
    Backend("mindspore.native", "mindspore", ("ring_attention_update",), ("Ascend",),
            ("probe_mindspore_ascend",),
            "MindSpore's own Ascend op where one exists (ops.ring_attention_update)",
            {"ring_attention_update": _ms_native_rau_limits}),
    Backend("mindspore.kernels", "mindspore", NPU_OPS, ("Ascend",), ("probe_mindspore_ascend",),
            "aclnn ops (CANN's and the ascend_attn custom-op package's) as MindSpore aot Custom ops, on Ascend",
            {op: _needs(*needs) for op, needs in _NPU_OP_NEEDS.items()}),
    Backend("mindspore.fallback", "mindspore", OPS, ("*",), ("probe_mindspore", "probe_torch"),
            "ops.Custom pyfunc around the torch CPU fallback (PyNative and GRAPH_MODE)"),
)


class NoBackendError(NotImplementedError):
    pass


def select(framework: str, op: str, device: str, **attrs) -> tuple[Backend, dict[str, list[str]]]:
    """First backend of ``framework`` able to run ``op`` on ``device``, and why others were skipped."""
    skipped: dict[str, list[str]] = {}
    for backend in BACKENDS:
        if backend.framework != framework:
            continue
        reasons = backend.not_supported_reasons(op, device, **attrs)
        if not reasons:
            return backend, skipped
        skipped[backend.name] = reasons
    detail = "; ".join(f"{name}: {', '.join(r)}" for name, r in skipped.items())
    raise NoBackendError(f"{op}: no {framework} backend can run it on {device} ({detail})")


def report() -> list[tuple[str, str, str]]:
    """(backend, "usable"/"not usable", why) for every backend, for ``ascend-attn info``."""
    rows = []
    for backend in BACKENDS:
        reasons = backend.unavailable_reasons()
        rows.append((backend.name, "usable" if not reasons else "not usable",
                     backend.description if not reasons else "; ".join(reasons)))
    return rows


def clear_probe_cache() -> None:
    for name, value in list(globals().items()):
        if name.startswith("probe_") and hasattr(value, "cache_clear"):
            value.cache_clear()
