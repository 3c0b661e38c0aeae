"""Memory of the bench: peak extra resident memory of a run (``PeakMemory``), and the memory-growth
sweep (FA forward+backward, causal fp32, as the tokens grow), one fresh subprocess per point.

Peak extra memory: the process's resident high-water mark (VmHWM, reset through
``/proc/self/clear_refs``; ``ru_maxrss`` where that is unavailable) minus the resident size just
before the run, after ``malloc_trim``. Outputs count as extra memory.
"""
from __future__ import annotations

import ctypes
import gc
import json
import os
import resource
import subprocess
import sys

from .baselines import fa_inputs
from .cases import kilo
from .timing import time_once

MiB = 1 << 20

# ----------------------------------------------------------------------------- probes


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


_LIBC = _libc()


def _status_kib(field: str):
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak extra resident memory (bytes) of the enclosed code over the resident size before it."""

    def __enter__(self):
        gc.collect()
        if _LIBC is not None:
            try:
                _LIBC.malloc_trim(0)
            except AttributeError:
                pass
        self.hwm_ok = _reset_hwm() and _status_kib("VmHWM") is not None
        self.base_rss = _status_kib("VmRSS")
        self.base_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return self

    def __exit__(self, *exc):
        if self.hwm_ok and self.base_rss is not None:
            self.peak = max(0, _status_kib("VmHWM") - self.base_rss) * 1024
        else:
            self.peak = max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self.base_maxrss) * 1024
        return False


# ----------------------------------------------------------------------------- growth sweep


def memory_child(total: int, seq: int, heads: int, dim: int) -> dict:
    """Run in a fresh interpreter: FA fwd+bwd causal fp32 over ``total`` tokens in ``seq``-token sequences."""
    import torch

    import ascend_attn
    from ascend_attn.kernels.masks import canonical_compressed_mask
    if os.environ.get("ASCEND_ATTN_BENCH_THREADS"):
        torch.set_num_threads(int(os.environ["ASCEND_ATTN_BENCH_THREADS"]))
    mask = canonical_compressed_mask(3).clone()
    small = [torch.randn(64, heads, dim, requires_grad=True) for _ in range(3)]  # first-call costs out of the way
    ascend_attn.flash_attention_varlen_score(*small, heads, [64], [64], scale_value=dim ** -0.5, sparse_mode=3,
                                             atten_mask=mask)[0].sum().backward()
    q, k, v, dy = fa_inputs([seq] * (total // seq), heads, dim, torch.float32)
    for t in (q, k, v):
        t.requires_grad_()
    cum = [seq * (i + 1) for i in range(total // seq)]
    del small

    def fwd_bwd():
        ascend_attn.flash_attention_varlen_score(q, k, v, heads, cum, cum, scale_value=dim ** -0.5,
                                                 sparse_mode=3, atten_mask=mask)[0].backward(dy)
    with PeakMemory() as pm:
        seconds = time_once(fwd_bwd)
    inputs = sum(t.numel() * t.element_size() for t in (q, k, v, dy))
    return {"tokens": total, "seq_len": seq, "peak_extra_bytes": pm.peak, "seconds": seconds,
            "input_bytes": inputs, "method": "VmHWM (clear_refs)" if pm.hwm_ok else "ru_maxrss"}


def run_memory(bench) -> list[dict]:
    """The sweep over ``bench.cfg["mem_points"]`` (tokens, sequence length): one row per point; a
    point whose predicted time does not fit the group's budget is skipped. Returns the points."""
    cfg = bench.cfg
    budget = bench.budget("Memory growth")
    points, last = [], None
    for total, seq in cfg["mem_points"]:
        label = f"T={kilo(total)} ({total // seq} x {kilo(seq)})"
        if last is not None:  # predicted cost: attention work grows with total * seq
            predicted = last["seconds"] * (total * seq) / (last["tokens"] * last["seq_len"])
            if predicted + 3 > budget.left():
                bench.skipped("Memory growth", label, "ours", f"time budget (predicted {predicted:.0f}s)",
                              {"tokens": total, "seq_len": seq})
                bench.progress(f"Memory growth | {label} (skipped)")
                continue
        cmd = [sys.executable, "-m", "ascend_attn.bench", "--memory-point", str(total), str(seq),
               str(cfg["heads"]), str(cfg["head_dim"])]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            bench.skipped("Memory growth", label, "ours", f"subprocess failed: {res.stderr.strip()[-200:]}",
                          {"tokens": total, "seq_len": seq})
            bench.progress(f"Memory growth | {label} (failed)")
            continue
        point = json.loads(res.stdout.strip().splitlines()[-1])
        last = point
        points.append(point)
        bench.row("Memory growth", label, "ours", point["seconds"], 1, point["peak_extra_bytes"],
                  f"{point['peak_extra_bytes'] / point['tokens'] / 1024:.1f} KiB/token",
                  {"tokens": total, "seq_len": seq})
        bench.progress(f"Memory growth | {label}")
    return points
