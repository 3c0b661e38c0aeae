"""The bench's cases: configurations (``--quick`` / ``--tiny`` / full), shapes, and the comparison
sets of each group with their labels, extra row fields and time-budget work estimates.

A comparison set is one case of a group: its candidates (``baselines``) are timed interleaved on
the same inputs by ``Bench.measure`` (``run``), which skips a set that would not fit the group's
time budget (``work``: the set's cost in a unit proportional to one round's time).
"""
from __future__ import annotations

import gc

from . import baselines as B

GROUPS = ("FA forward", "FA fwd+bwd", "IFA decode", "RAU", "Memory growth")

# ----------------------------------------------------------------------------- configurations
# FA sets, run in this order: (pass, lens, dtypes, baselines[, (heads, head_dim)]). Baselines left
# out are listed as skipped with the reason; sets that do not fit the group's time budget are
# skipped and said so. "eager": the same op on its eager torch kernel (native vs eager);
# "ours_full": in causal sets, the same op without the mask (the causal / full target).
_L4K = [512, 1024, 512, 2048]  # 4k tokens, padding x2.00
_L16K = [4096, 4096, 2048, 2048, 1024, 1024, 1024, 512, 512]  # 16k tokens, padding x2.25
_L32K = [8192, 8192, 4096, 4096, 2048, 2048, 1024, 1024, 1024, 512, 512]  # 32k tokens, padding x2.75
_ALL = ("sdpa_loop", "sdpa_padded", "naive", "eager", "ours_full")
_TEST_SIZE = ("fwdbwd", [96, 128, 32], ("float32",), ("sdpa_loop", "eager"), (4, 64))  # T=256, N=4, D=64
_FA_FULL = [
    ("fwd", _L4K, ("float32", "bfloat16", "float16"), _ALL),
    ("fwd", _L16K, ("float32", "bfloat16"), ("sdpa_loop", "sdpa_padded", "ours_full")),
    ("fwd", _L32K, ("float32",), ("sdpa_loop",)),
    _TEST_SIZE,  # first fwd+bwd set: a group's time budget starts at its first measurement
    ("fwdbwd", _L4K, ("float32", "bfloat16"), _ALL),
    ("fwdbwd", _L16K, ("float32",), ("sdpa_loop",)),
]
_FA_QUICK = [(p, [256, 512, 256, 1024], ("float32", "bfloat16"), _ALL) for p in ("fwd", "fwdbwd")]
_FA_QUICK.insert(1, _TEST_SIZE)
_FA_TINY = [(p, [32, 64, 32], ("float32", "bfloat16"), _ALL) for p in ("fwd", "fwdbwd")]

CONFIGS = {
    "full": dict(heads=8, head_dim=128, fa=_FA_FULL, naive_max_seq=2048, repeats=5, big_repeats=3, set_seconds=1.5,
                 ifa_lens=(1024, 8192, 32768), ifa_batch=8,
                 ifa_skip={(32768, i8, pg, r) for i8 in (False, True) for pg in (False, True) for r in (8, 4)}
                 - {(32768, False, False, 8), (32768, False, True, 4), (32768, True, False, 8), (32768, True, True, 4)},
                 ifa_heads_q=32, ifa_dim=128, ifa_block=128,
                 rau_sbh=(4096, 4, 8, 128), rau_tnd=([2048] * 8, 8, 128),
                 # one growing sequence up to 4k, then 2k sequences packed up to 64k tokens (a single 64k
                 # sequence would take several minutes of attention work on a CPU)
                 mem_points=[(1024, 1024), (2048, 2048), (4096, 4096), (16384, 2048), (65536, 2048)],
                 budget={"FA forward": 360, "FA fwd+bwd": 360, "IFA": 300, "RAU": 60, "Memory growth": 240}),
    "quick": dict(heads=8, head_dim=128, fa=_FA_QUICK, naive_max_seq=2048, repeats=3, big_repeats=3, set_seconds=0.5,
                  ifa_lens=(1024,), ifa_batch=8, ifa_heads_q=32, ifa_dim=128, ifa_block=128, ifa_skip=set(),
                  rau_sbh=(1024, 2, 8, 128), rau_tnd=([512] * 4, 8, 128),
                  mem_points=[(512, 512), (1024, 1024), (2048, 2048), (4096, 2048)],
                  budget={"FA forward": 60, "FA fwd+bwd": 60, "IFA": 30, "RAU": 15, "Memory growth": 40}),
    "tiny": dict(heads=2, head_dim=64, fa=_FA_TINY, naive_max_seq=2048, repeats=2, big_repeats=2, set_seconds=0.2,
                 ifa_lens=(256,), ifa_batch=2, ifa_heads_q=8, ifa_dim=64, ifa_block=64, ifa_skip=set(),
                 rau_sbh=(64, 2, 2, 64), rau_tnd=([32, 64], 2, 64),
                 mem_points=[(128, 128), (256, 128)],
                 budget={"FA forward": 60, "FA fwd+bwd": 60, "IFA": 30, "RAU": 30, "Memory growth": 60}),
}

# IFA: the slow baselines (eager, fp16 naive) that no target needs are not run above this KV length.
EAGER_MAX_KV = 8192
SMALL_STEP_CASE = "one small decode step, fp16, B=1, N=8, S=128, D=128"


def kilo(n: int) -> str:
    """A count in labels: ``4096`` -> ``4k``; counts that are not whole k stay as they are."""
    return f"{n // 1024}k" if n >= 1024 and n % 1024 == 0 else str(n)


def set_count(cfg: dict, groups) -> int:
    """Comparison sets (progress steps) of the given groups (``run_bench``'s group names)."""
    return ((sum(2 * len(fa_set[2]) for fa_set in cfg["fa"]) if "FA" in groups else 0)
            + (len(cfg["ifa_lens"]) * 8 + 1 if "IFA" in groups else 0)
            + (4 if "RAU" in groups else 0) + (len(cfg["mem_points"]) if "Memory growth" in groups else 0))


# ----------------------------------------------------------------------------- FA


def run_fa(bench):
    import torch
    cfg = bench.cfg
    budgets = {g: bench.budget(g) for g in ("FA forward", "FA fwd+bwd")}
    for p, lens, dtypes, baselines, *own in cfg["fa"]:
        heads, dim = own[0] if own else (cfg["heads"], cfg["head_dim"])
        total = sum(lens)
        pad_ratio = len(lens) * max(lens) / total
        shape = f"T={kilo(total)} ({len(lens)} seqs {kilo(min(lens))}..{kilo(max(lens))}, pad x{pad_ratio:.2f})"
        if own:
            shape += f" N={heads} D={dim}"
        group = "FA forward" if p == "fwd" else "FA fwd+bwd"
        for dtype in dtypes:
            for causal in (True, False):
                case = f"{dtype} {'causal' if causal else 'full'} {shape}"
                extra = {"dtype": dtype, "causal": causal, "tokens": total, "lens": lens, "pad_ratio": pad_ratio,
                         "pass": p, "heads": heads, "head_dim": dim, "test_size": bool(own)}
                cands, skipped = B.fa_candidates(lens, heads, dim, getattr(torch, dtype), causal, p == "fwdbwd",
                                                 baselines, cfg["naive_max_seq"])
                pairs = sum(x * x for x in lens)
                # eager: about 2x the native time per unit of work; ours_full: the full-mask work in a causal set
                work = sum(len(lens) * max(lens) ** 2 if n == "sdpa_padded"
                           else pairs * (2 if n in ("eager", "ours_full") else 1)
                           for n in cands) * heads * dim / (cfg["heads"] * cfg["head_dim"])
                bench.measure(group, case, cands, budgets[group], extra, work * (1 if causal else 2))
                for name, why in skipped.items():
                    bench.skipped(group, case, name, why, extra)
                del cands
                gc.collect()


# ----------------------------------------------------------------------------- IFA


def run_ifa(bench):
    cfg = bench.cfg
    budget = bench.budget("IFA")
    b, hq, d, blk = cfg["ifa_batch"], cfg["ifa_heads_q"], cfg["ifa_dim"], cfg["ifa_block"]
    bench.measure("IFA decode", SMALL_STEP_CASE, B.ifa_small_step_candidates(), budget, {"small_step": True})
    for kv_len in cfg["ifa_lens"]:
        for int8 in (False, True):
            for paged in (False, True):
                for ratio in (8, 4):
                    hkv = hq // ratio
                    case = (f"{'int8 antiquant' if int8 else 'fp16'} KV, {'paged' if paged else 'contiguous'}, "
                            f"GQA {ratio}:1 (Nq={hq}), B={b}, S={kilo(kv_len)}")
                    extra = {"kv_dtype": "int8" if int8 else "float16", "paged": paged, "gqa": ratio,
                             "kv_len": kv_len}
                    if (kv_len, int8, paged, ratio) in cfg["ifa_skip"]:
                        bench.skipped("IFA decode", case, "ours", "not run at this length (time)", extra)
                        bench.progress(f"IFA decode | {case} (not run at this length)")
                        continue
                    cands = B.ifa_candidates(b, hq, hkv, d, kv_len, int8, paged, blk)
                    if kv_len > EAGER_MAX_KV:  # the slow baselines that no target needs at this length
                        for name in ("eager",) + (() if int8 else ("naive",)):
                            del cands[name]
                            bench.skipped("IFA decode", case, name,
                                          f"not run above {kilo(EAGER_MAX_KV)} positions (time)", extra)
                    bench.measure("IFA decode", case, cands, budget, extra, b * kv_len * hkv)
                    del cands
                    gc.collect()


# ----------------------------------------------------------------------------- RAU


def run_rau(bench):
    import torch
    cfg = bench.cfg
    budget = bench.budget("RAU")
    for layout in ("SBH", "TND"):
        for dtype in ("float32", "bfloat16"):
            if layout == "SBH":
                s, b, n, d = cfg["rau_sbh"]
                shape = f"S={s} B={b} N={n} D={d}"
            else:
                lens, n, d = cfg["rau_tnd"]
                shape = f"T={kilo(sum(lens))} ({len(lens)} seqs) N={n} D={d}"
            case = f"{layout} {dtype} {shape}"
            cands = B.rau_candidates(layout, getattr(torch, dtype), cfg)
            elems = (s * b * n * d) if layout == "SBH" else sum(lens) * n * d
            bench.measure("RAU", case, cands, budget, {"layout": layout, "dtype": dtype}, elems)
            del cands
            gc.collect()
