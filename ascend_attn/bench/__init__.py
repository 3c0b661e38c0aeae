"""``ascend-attn bench``: our ops side by side with what a user would run instead, in one run.

Every comparison set runs its candidates interleaved on the same inputs: one warm-up each (which
also measures peak extra memory), then rounds of one timed run per candidate; the reported time
is the median over the rounds (``torch.utils.benchmark``: one ``Timer`` per candidate, the rounds
merged into one ``Measurement``; ``Compare`` tables on the console). Ratios are taken between
candidates of the same set, so they hold on a noisy or shared machine better than absolute times do.

Groups (issue 7):

* ``FA forward`` / ``FA fwd+bwd``: ``flash_attention_varlen_score`` (TND varlen, causal via
  sparse_mode 3 or full; ``ours`` = the default CPU path, the native kernels where built) against
  the eager torch kernel of the same op (``eager``), torch SDPA looped over the packed sequences,
  SDPA on the sequences padded to one batch, and a naive materialised-softmax reference; plus
  the test-size set (T=256, N=4, D=64).
* ``IFA decode``: ``incre_flash_attention`` (fp16 / int8 antiquant KV, paged or not, GQA) on the
  native CPU kernel (``ours``) and the eager torch kernel (``eager``), against the naive path
  (gather / dequantise the cache to float32, then SDPA) and a copy of the caches into preallocated
  buffers (``dst.copy_(src)``: one read and one write of the cache, the floor of a memory-bound op
  that reads it once); plus one small decode step against SDPA on the same shape.
* ``RAU``: ``ring_attention_update`` (SBH, TND), native and eager, against a copy of its inputs into
  preallocated buffers and the plain torch expression.
* ``Memory growth``: peak extra memory of FA forward+backward (causal, fp32) as the tokens grow,
  one fresh subprocess per point; table, JSON and PNG plot.
Modules: ``cases`` (configurations, shapes, the comparison sets of each group), ``baselines`` (the
candidates per op), ``timing`` (Timer / Measurement, spread, budgets), ``memory`` (peak extra
memory, the memory-growth subprocess sweep), ``report`` (results MD / JSON, targets and verdicts,
Compare tables, the memory plot), ``run`` (one run: measuring a set, the groups in order).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

# Public names, imported on first use: ``ascend-attn --help`` and the other commands stay free of torch.
_LAZY = {"run_bench": "run", "Bench": "run", "prime": "run", "CONFIGS": "cases", "GROUPS": "cases",
         "run_spread": "timing", "measurement_spread": "timing", "Budget": "timing", "MAX_ROUNDS": "timing",
         "UNSTABLE_SPREAD": "timing", "PeakMemory": "memory", "MiB": "memory", "run_memory": "memory",
         "evaluate_targets": "report", "paired_ratio": "report", "render": "report", "write_line_png": "report",
         "compare_tables": "report"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small shapes, about a minute")
    size.add_argument("--tiny", action="store_true", help="tiny shapes (seconds), for smoke tests")
    parser.add_argument("--out", default="bench_results", help="output folder (default bench_results/)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's own choice); the memory subprocesses too")
    parser.add_argument("--only", nargs="+", choices=("FA", "IFA", "RAU", "memory"),
                        help="run only these groups (memory: the memory-growth subprocesses)")


def main_from_args(args) -> int:
    from .run import run_bench
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    groups = None if not args.only else tuple("Memory growth" if g == "memory" else g for g in args.only)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
        os.environ["ASCEND_ATTN_BENCH_THREADS"] = str(args.threads)
    return run_bench(mode, args.out, groups)


def main(argv=None) -> int:
    """``python -m ascend_attn.bench`` / ``scripts/bench.py``; ``--memory-point TOTAL SEQ HEADS DIM``
    is one point of the memory-growth sweep (run in a fresh interpreter by ``memory.run_memory``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--memory-point"]:
        from .memory import memory_child
        total, seq, heads, dim = (int(x) for x in argv[1:5])
        print(json.dumps(memory_child(total, seq, heads, dim)))
        return 0
    parser = argparse.ArgumentParser(prog="ascend-attn bench", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return main_from_args(parser.parse_args(argv))
