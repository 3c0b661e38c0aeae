"""``ascend-attn bench``: our ops side by side with what a user would run instead, in one run.

Every comparison set runs its candidates interleaved on the same inputs: one warm-up each (which
also measures peak extra memory), then rounds of one timed run per candidate; the reported time
is the median over the rounds. Ratios are taken between candidates of the same set, so they
hold on a noisy or shared machine better than absolute times do.

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

Peak extra memory: the process's resident high-water mark (VmHWM, reset through
``/proc/self/clear_refs``; ``ru_maxrss`` where that is unavailable) minus the resident size just
before the run, after ``malloc_trim``. Outputs count as extra memory.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

from . import native

GROUPS = ("FA forward", "FA fwd+bwd", "IFA decode", "RAU", "Memory growth")
MiB = 1 << 20
MAX_ROUNDS = 15
# A set whose timed runs spread more than this (interquartile range, or max - min below 4 runs, over
# the median) is reported as unstable: a target it would miss reads UNSTABLE, not MISS.
UNSTABLE_SPREAD = 0.25


def run_spread(times: list[float]) -> float | None:
    """Relative spread of timed runs: interquartile range (max - min below 4 runs) over the median."""
    if len(times) < 2:
        return None
    if len(times) >= 4:
        q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive")
        width = q3 - q1
    else:
        width = max(times) - min(times)
    return width / statistics.median(times)

# ----------------------------------------------------------------------------- configurations
# FA sets, run in this order: (pass, lens, dtypes, baselines[, (heads, head_dim)]). Baselines left
# out are listed as skipped with the reason; sets that do not fit the group's time budget are
# skipped and said so. "eager": the same op on its eager torch kernel (native vs eager).
_L4K = [512, 1024, 512, 2048]  # 4k tokens, padding x2.00
_L16K = [4096, 4096, 2048, 2048, 1024, 1024, 1024, 512, 512]  # 16k tokens, padding x2.25
_L32K = [8192, 8192, 4096, 4096, 2048, 2048, 1024, 1024, 1024, 512, 512]  # 32k tokens, padding x2.75
_ALL = ("sdpa_loop", "sdpa_padded", "naive", "eager")
_TEST_SIZE = ("fwdbwd", [96, 128, 32], ("float32",), ("sdpa_loop", "eager"), (4, 64))  # T=256, N=4, D=64
_FA_FULL = [
    ("fwd", _L4K, ("float32", "bfloat16", "float16"), _ALL),
    ("fwd", _L16K, ("float32", "bfloat16"), ("sdpa_loop", "sdpa_padded")),
    ("fwd", _L32K, ("float32",), ("sdpa_loop",)),
    _TEST_SIZE,  # first fwd+bwd set: a group's time budget starts at its first measurement
    ("fwdbwd", _L4K, ("float32", "bfloat16"), _ALL),
    ("fwdbwd", _L16K, ("float32",), ("sdpa_loop",)),
]
_FA_QUICK = [(p, [256, 512, 256, 1024], ("float32", "bfloat16"), _ALL) for p in ("fwd", "fwdbwd")]
_FA_QUICK.insert(1, _TEST_SIZE)
_FA_TINY = [(p, [32, 64, 32], ("float32", "bfloat16"), _ALL) for p in ("fwd", "fwdbwd")]
_SKIP_WHY = {"sdpa_padded": "padded baseline not run on this shape (time)",
             "naive": "naive reference not run on this shape (time, [N,S,S] memory)",
             "eager": "eager kernel not run on this shape (time)"}

CONFIGS = {
    "full": dict(heads=8, head_dim=128, fa=_FA_FULL, naive_max_seq=2048, repeats=5, big_repeats=3, set_seconds=1.5,
                 ifa_lens=(1024, 8192, 32768), ifa_batch=8,
                 ifa_skip={(32768, i8, pg, r) for i8 in (False, True) for pg in (False, True) for r in (8, 4)}
                 - {(32768, False, False, 8), (32768, False, True, 4), (32768, True, False, 8), (32768, True, True, 4)}, ifa_heads_q=32, ifa_dim=128, ifa_block=128,
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

# ----------------------------------------------------------------------------- memory probes


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


# ----------------------------------------------------------------------------- measurement


class Budget:
    """Seconds of one group; the clock starts at the group's first measurement."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self.start = None

    def left(self) -> float:
        if self.start is None:
            self.start = time.perf_counter()
        return math.inf if self.seconds is None else self.seconds - (time.perf_counter() - self.start)


class Bench:
    def __init__(self, mode: str, progress_total: int, stream=sys.stderr):
        self.mode, self.cfg = mode, CONFIGS[mode]
        self.rows: list[dict] = []
        self.notes: list[str] = []
        from tqdm import tqdm
        self.bar = tqdm(total=max(1, progress_total), desc="bench", unit="set", file=stream)
        self.rate: dict[str, float] = {}  # seconds per unit of work of one round, per group (last set)
        self.t0 = time.perf_counter()

    def progress(self, what: str) -> None:
        """One comparison set done (``what``: its group | case)."""
        self.bar.set_postfix_str(what, refresh=False)
        self.bar.update(1)

    def measure(self, group: str, case: str, cands: dict, budget: Budget, extra: dict | None = None,
                work: float | None = None) -> dict:
        """Warm up each candidate (measuring its peak memory), then interleaved timed rounds.

        ``work``: the set's cost in any unit proportional to one round's time; with the rate of the
        group's previous set it predicts this set's time, and a set that would not fit the group's
        remaining budget is skipped (and listed as such)."""
        results, warm = {}, {}
        predicted = None
        if work and group in self.rate:
            predicted = self.rate[group] * work * (1 + min(3, self.cfg["big_repeats"]))
        if budget.left() <= 0 or (predicted is not None and predicted > budget.left()):
            why = "skipped: time budget" + (f" (predicted {predicted:.0f}s)" if predicted is not None else "")
            for name in cands:
                self._row(group, case, name, None, 0, None, why, extra)
            self.progress(f"{group} | {case} ({why})")
            return {}
        for name, fn in cands.items():
            with PeakMemory() as pm:
                t = time.perf_counter()
                fn()
                warm[name] = time.perf_counter() - t
            results[name] = {"peak": pm.peak, "times": []}
        per_round = sum(warm.values())
        repeats = self.cfg["repeats"] if per_round < 2.0 else self.cfg["big_repeats"]
        # fast sets: more rounds (up to MAX_ROUNDS) so the median rides out scheduler noise
        repeats = max(repeats, min(MAX_ROUNDS, int(self.cfg["set_seconds"] / max(per_round, 1e-6))))
        rounds = repeats if per_round * repeats <= budget.left() else max(1, int(budget.left() // per_round))
        for _ in range(rounds):
            for name, fn in cands.items():
                t = time.perf_counter()
                fn()
                results[name]["times"].append(time.perf_counter() - t)
        out = {}
        for name, r in results.items():
            med = statistics.median(r["times"])
            spread = run_spread(r["times"])
            notes = [] if rounds >= repeats else [f"only {rounds} run(s): time budget"]
            if spread is not None and spread > UNSTABLE_SPREAD:
                notes.append(f"unstable: spread {spread:.0%}")
            self._row(group, case, name, med, rounds, r["peak"], "; ".join(notes), extra, spread)
            out[name] = med
        if work:  # from the timed rounds: the warm-up carries one-off costs
            self.rate[group] = sum(out.values()) / work
        self.progress(f"{group} | {case}")
        return out

    def _row(self, group, case, impl, seconds, runs, peak, note, extra, spread=None):
        row = {"group": group, "case": case, "impl": impl, "time_s": seconds, "runs": runs, "spread": spread,
               "peak_extra_mib": None if peak is None else peak / MiB, "note": note}
        if extra:
            row.update(extra)
        self.rows.append(row)

    def skipped(self, group, case, impl, why, extra=None):
        self._row(group, case, impl, None, 0, None, f"skipped: {why}", extra)


# ----------------------------------------------------------------------------- FA


def _fa_inputs(lens, heads, dim, dtype, seed=0):
    import torch
    gen = torch.Generator().manual_seed(seed)
    total = sum(lens)
    q, k, v, dy = (torch.randn(total, heads, dim, generator=gen).to(dtype) for _ in range(4))
    return q, k, v, dy


def _fa_candidates(lens, heads, dim, dtype, causal, fwdbwd, baselines, naive_max):
    """{name: fn} for one FA comparison set (fn runs forward, or forward + backward)."""
    import torch
    import torch.nn.functional as F

    import ascend_attn
    from ascend_attn.testing.samples import compressed_mask

    q, k, v, dy = _fa_inputs(lens, heads, dim, dtype)
    scale = dim ** -0.5
    cum = [int(x) for x in torch.tensor(lens).cumsum(0)]
    starts = [0] + cum[:-1]
    mask = compressed_mask(3) if causal else None
    kw = {"scale_value": scale, "sparse_mode": 3, "atten_mask": mask} if causal else {"scale_value": scale}
    skipped = {}
    if fwdbwd:
        for t in (q, k, v):
            t.requires_grad_()

    def finish(out):
        if fwdbwd:
            for t in (q, k, v):
                t.grad = None
            out.backward(dy)

    def ours():
        finish(ascend_attn.flash_attention_varlen_score(q, k, v, heads, cum, cum, **kw)[0])

    def eager():
        from ascend_attn import native
        with native.forced("eager"):
            ours()

    def sdpa_loop():
        # [1, N, L, D] views: 4-D inputs take torch's CPU flash kernel (3-D ones fall back to the math path)
        view = lambda x, s, e: x[s:e].unsqueeze(0).transpose(1, 2)
        outs = [F.scaled_dot_product_attention(view(q, s, e), view(k, s, e), view(v, s, e), is_causal=causal,
                                               scale=scale) for s, e in zip(starts, cum)]
        finish(torch.cat([o[0].transpose(0, 1) for o in outs]))

    cands = {"ours": ours, "sdpa_loop": sdpa_loop}
    if "eager" in baselines:
        cands["eager"] = eager
    else:
        skipped["eager"] = _SKIP_WHY["eager"]

    if "sdpa_padded" in baselines:
        bsz, lmax = len(lens), max(lens)

        def pad(x):
            buf = x.new_zeros(bsz, lmax, heads, dim)
            for i, (s, e) in enumerate(zip(starts, cum)):
                buf[i, : e - s] = x[s:e].detach()
            return buf.transpose(1, 2).contiguous().requires_grad_(fwdbwd)  # [B, N, L, D]
        pq, pk, pv, pdy = pad(q), pad(k), pad(v), pad(dy).detach()
        key_mask = None
        if not causal:  # right padding: causal rows never see padded keys; full attention needs a key mask
            key_mask = (torch.arange(lmax)[None, :] < torch.tensor(lens)[:, None])[:, None, None, :]

        def sdpa_padded():
            out = F.scaled_dot_product_attention(pq, pk, pv, attn_mask=key_mask, is_causal=causal, scale=scale)
            if fwdbwd:
                for t in (pq, pk, pv):
                    t.grad = None
                out.backward(pdy)
        cands["sdpa_padded"] = sdpa_padded
    else:
        skipped["sdpa_padded"] = _SKIP_WHY["sdpa_padded"]

    if "naive" in baselines and max(lens) <= naive_max:
        def naive():
            outs = []
            for s, e in zip(starts, cum):
                qs, ks, vs = (t[s:e].transpose(0, 1).float() for t in (q, k, v))
                scores = torch.matmul(qs, ks.transpose(1, 2)) * scale  # [N, L, L] materialised
                if causal:
                    scores = scores.masked_fill(torch.ones(e - s, e - s, dtype=torch.bool).triu(1), float("-inf"))
                outs.append(torch.matmul(torch.softmax(scores, dim=-1), vs).to(dtype).transpose(0, 1))
            finish(torch.cat(outs))
        cands["naive"] = naive
    else:
        skipped["naive"] = (f"naive reference only up to {naive_max}-token sequences (time, [N,S,S] memory)"
                            if "naive" in baselines else _SKIP_WHY["naive"])
    return cands, skipped


def run_fa(bench: Bench):
    import torch
    cfg = bench.cfg
    budgets = {g: Budget(cfg["budget"][g]) for g in ("FA forward", "FA fwd+bwd")}
    for p, lens, dtypes, baselines, *own in cfg["fa"]:
        heads, dim = own[0] if own else (cfg["heads"], cfg["head_dim"])
        total = sum(lens)
        pad_ratio = len(lens) * max(lens) / total
        shape = f"T={_k(total)} ({len(lens)} seqs {_k(min(lens))}..{_k(max(lens))}, pad x{pad_ratio:.2f})"
        if own:
            shape += f" N={heads} D={dim}"
        group = "FA forward" if p == "fwd" else "FA fwd+bwd"
        for dtype in dtypes:
            for causal in (True, False):
                case = f"{dtype} {'causal' if causal else 'full'} {shape}"
                extra = {"dtype": dtype, "causal": causal, "tokens": total, "lens": lens, "pad_ratio": pad_ratio,
                         "pass": p, "heads": heads, "head_dim": dim, "test_size": bool(own)}
                cands, skipped = _fa_candidates(lens, heads, dim, getattr(torch, dtype), causal, p == "fwdbwd",
                                                baselines, cfg["naive_max_seq"])
                pairs = sum(x * x for x in lens)
                # eager: about 2x the native time per unit of work
                work = sum(len(lens) * max(lens) ** 2 if n == "sdpa_padded" else pairs * (2 if n == "eager" else 1)
                           for n in cands) * heads * dim / (cfg["heads"] * cfg["head_dim"])
                bench.measure(group, case, cands, budgets[group], extra, work * (1 if causal else 2))
                for name, why in skipped.items():
                    bench.skipped(group, case, name, why, extra)
                del cands
                gc.collect()


def _fa_sets(cfg):
    return sum(2 * len(fa_set[2]) for fa_set in cfg["fa"])


# ----------------------------------------------------------------------------- IFA


def _ifa_candidates(batch, heads_q, heads_kv, dim, kv_len, int8, paged, block):
    import torch
    import torch.nn.functional as F

    import ascend_attn
    gen = torch.Generator().manual_seed(1)
    hkv = heads_kv * dim
    query = torch.randn(batch, 1, heads_q * dim, generator=gen).to(torch.float16)
    kv_shape = (batch * kv_len // block, block, hkv) if paged else (batch, kv_len, hkv)
    if int8:
        key, value = (torch.randint(-128, 128, kv_shape, generator=gen, dtype=torch.int8) for _ in range(2))
    else:
        key, value = (torch.randn(kv_shape, generator=gen).to(torch.float16) for _ in range(2))
    kw = {"num_heads": heads_q, "num_key_value_heads": heads_kv, "input_layout": "BSH", "scale_value": dim ** -0.5,
          "actual_seq_lengths": [kv_len] * batch}
    table = None
    if paged:
        table = torch.randperm(batch * kv_len // block, generator=gen).view(batch, kv_len // block).to(torch.int32)
        kw.update(block_table=table, block_size=block)
    scale = offset = None
    if int8:
        scale = (torch.rand(2, hkv, generator=gen) * 0.02 + 0.005).to(torch.float16)
        offset = torch.randint(-4, 5, (2, hkv), generator=gen).to(torch.float16)
        kw.update(antiquant_scale=scale, antiquant_offset=offset)

    def ours():
        ascend_attn.incre_flash_attention(query, key, value, **kw)

    def ours_eager():
        with native.forced("eager"):
            ascend_attn.incre_flash_attention(query, key, value, **kw)

    def naive():
        k, v = key, value
        if paged:  # gather the pages of each batch into a contiguous cache
            k, v = (x[table.long()].reshape(batch, kv_len, hkv) for x in (k, v))
        k, v = k.float(), v.float()
        if int8:  # dequantise: (x + offset) * scale per channel
            k = (k + offset[0].float()) * scale[0].float()
            v = (v + offset[1].float()) * scale[1].float()
        qh = query.float().view(batch, heads_q, 1, dim)
        kh, vh = (x.view(batch, kv_len, heads_kv, dim).transpose(1, 2) for x in (k, v))
        out = F.scaled_dot_product_attention(qh, kh, vh, scale=dim ** -0.5, enable_gqa=True)
        out.reshape(batch, 1, heads_q * dim).to(torch.float16)

    key_dst, value_dst = torch.empty_like(key), torch.empty_like(value)
    key_dst.copy_(key)  # first touch outside the timed runs
    value_dst.copy_(value)

    def cache_copy():
        key_dst.copy_(key)
        value_dst.copy_(value)
    return {"ours": ours, "eager": ours_eager, "naive": naive, "cache_copy": cache_copy}


def _ifa_small_step_candidates():
    """One small decode step (B=1, N=8, S=128, D=128, fp16): per-call overhead against SDPA."""
    import torch
    import torch.nn.functional as F

    import ascend_attn
    gen = torch.Generator().manual_seed(3)
    b, n, s, d = 1, 8, 128, 128
    query = torch.randn(b, n, 1, d, generator=gen).to(torch.float16)
    key, value = (torch.randn(b, n, s, d, generator=gen).to(torch.float16) for _ in range(2))
    kw = {"num_heads": n, "input_layout": "BNSD", "scale_value": d ** -0.5}

    def ours():
        ascend_attn.incre_flash_attention(query, key, value, **kw)

    def ours_eager():
        with native.forced("eager"):
            ascend_attn.incre_flash_attention(query, key, value, **kw)

    def sdpa():
        F.scaled_dot_product_attention(query, key, value, scale=d ** -0.5)
    return {"ours": ours, "eager": ours_eager, "sdpa": sdpa}


def run_ifa(bench: Bench):
    cfg = bench.cfg
    budget = Budget(cfg["budget"]["IFA"])
    b, hq, d, blk = cfg["ifa_batch"], cfg["ifa_heads_q"], cfg["ifa_dim"], cfg["ifa_block"]
    bench.measure("IFA decode", SMALL_STEP_CASE, _ifa_small_step_candidates(), budget, {"small_step": True})
    for kv_len in cfg["ifa_lens"]:
        for int8 in (False, True):
            for paged in (False, True):
                for ratio in (8, 4):
                    hkv = hq // ratio
                    case = (f"{'int8 antiquant' if int8 else 'fp16'} KV, {'paged' if paged else 'contiguous'}, "
                            f"GQA {ratio}:1 (Nq={hq}), B={b}, S={_k(kv_len)}")
                    extra = {"kv_dtype": "int8" if int8 else "float16", "paged": paged, "gqa": ratio,
                             "kv_len": kv_len}
                    if (kv_len, int8, paged, ratio) in cfg["ifa_skip"]:
                        bench.skipped("IFA decode", case, "ours", "not run at this length (time)", extra)
                        bench.progress(f"IFA decode | {case} (not run at this length)")
                        continue
                    cands = _ifa_candidates(b, hq, hkv, d, kv_len, int8, paged, blk)
                    if kv_len > EAGER_MAX_KV:  # the slow baselines that no target needs at this length
                        for name in ("eager",) + (() if int8 else ("naive",)):
                            del cands[name]
                            bench.skipped("IFA decode", case, name, f"not run above {_k(EAGER_MAX_KV)} positions (time)",
                                          extra)
                    bench.measure("IFA decode", case, cands, budget, extra, b * kv_len * hkv)
                    del cands
                    gc.collect()


EAGER_MAX_KV = 8192
SMALL_STEP_CASE = "one small decode step, fp16, B=1, N=8, S=128, D=128"


def _ifa_sets(cfg):
    return len(cfg["ifa_lens"]) * 8 + 1


# ----------------------------------------------------------------------------- RAU


def _rau_candidates(layout, dtype, cfg):
    import torch

    import ascend_attn
    gen = torch.Generator().manual_seed(2)
    if layout == "SBH":
        s, b, n, d = cfg["rau_sbh"]
        attn_shape, stat_shape, seq = (s, b, n * d), (b, n, s, 8), None
    else:
        lens, n, d = cfg["rau_tnd"]
        t = sum(lens)
        attn_shape, stat_shape = (t, n, d), (t, n, 8)
        seq = [0] + [int(x) for x in torch.tensor(lens).cumsum(0)]
    tensors = []
    for _ in range(2):
        attn = torch.randn(attn_shape, generator=gen).to(dtype)
        mx = (torch.randn(stat_shape[:-1], generator=gen) * 3)[..., None].expand(stat_shape).contiguous()
        sm = (torch.rand(stat_shape[:-1], generator=gen) * 49 + 1)[..., None].expand(stat_shape).contiguous()
        tensors += [attn, mx, sm]
    kw = {"actual_seq_qlen": seq, "input_layout": layout, "input_softmax_layout": "TND" if layout == "TND" else ""}

    def ours():
        ascend_attn.ring_attention_update(*tensors, **kw)

    def ours_eager():
        with native.forced("eager"):
            ascend_attn.ring_attention_update(*tensors, **kw)

    copies = [torch.empty_like(x) for x in tensors]

    def copy():
        for dst, x in zip(copies, tensors):
            dst.copy_(x)
    copy()  # first touch outside the timed runs

    def naive():
        pa, pm, ps, ca, cm, cs = tensors
        m = torch.maximum(pm, cm)
        sp, sc = ps * torch.exp(pm - m), cs * torch.exp(cm - m)
        ssum = sp + sc
        wp, wc = (sp / ssum)[..., 0], (sc / ssum)[..., 0]
        if layout == "SBH":  # [B, N, S] -> [S, B, N, 1]
            wp, wc = (w.permute(2, 0, 1)[..., None] for w in (wp, wc))
            shape = (attn_shape[0], attn_shape[1], stat_shape[1], -1)
            out = pa.float().view(shape) * wp + ca.float().view(shape) * wc
            out = out.reshape(attn_shape)
        else:
            out = pa.float() * wp[..., None] + ca.float() * wc[..., None]
        return out.to(dtype), m, ssum
    return {"ours": ours, "eager": ours_eager, "copy": copy, "naive": naive}


def run_rau(bench: Bench):
    import torch
    cfg = bench.cfg
    budget = Budget(cfg["budget"]["RAU"])
    for layout in ("SBH", "TND"):
        for dtype in ("float32", "bfloat16"):
            if layout == "SBH":
                s, b, n, d = cfg["rau_sbh"]
                shape = f"S={s} B={b} N={n} D={d}"
            else:
                lens, n, d = cfg["rau_tnd"]
                shape = f"T={_k(sum(lens))} ({len(lens)} seqs) N={n} D={d}"
            case = f"{layout} {dtype} {shape}"
            cands = _rau_candidates(layout, getattr(torch, dtype), cfg)
            elems = (s * b * n * d) if layout == "SBH" else sum(lens) * n * d
            bench.measure("RAU", case, cands, budget, {"layout": layout, "dtype": dtype}, elems)
            del cands
            gc.collect()


# ----------------------------------------------------------------------------- memory growth


def _memory_child(total: int, seq: int, heads: int, dim: int) -> dict:
    """Run in a fresh interpreter: FA fwd+bwd causal fp32 over ``total`` tokens in ``seq``-token sequences."""
    import torch

    import ascend_attn
    from ascend_attn.testing.samples import compressed_mask
    if os.environ.get("ASCEND_ATTN_BENCH_THREADS"):
        torch.set_num_threads(int(os.environ["ASCEND_ATTN_BENCH_THREADS"]))
    mask = compressed_mask(3)
    small = [torch.randn(64, heads, dim, requires_grad=True) for _ in range(3)]  # first-call costs out of the way
    ascend_attn.flash_attention_varlen_score(*small, heads, [64], [64], scale_value=dim ** -0.5, sparse_mode=3,
                                             atten_mask=mask)[0].sum().backward()
    q, k, v, dy = _fa_inputs([seq] * (total // seq), heads, dim, torch.float32)
    for t in (q, k, v):
        t.requires_grad_()
    cum = [seq * (i + 1) for i in range(total // seq)]
    del small
    with PeakMemory() as pm:
        t0 = time.perf_counter()
        out = ascend_attn.flash_attention_varlen_score(q, k, v, heads, cum, cum, scale_value=dim ** -0.5,
                                                       sparse_mode=3, atten_mask=mask)[0]
        out.backward(dy)
        seconds = time.perf_counter() - t0
    inputs = sum(t.numel() * t.element_size() for t in (q, k, v, dy))
    return {"tokens": total, "seq_len": seq, "peak_extra_bytes": pm.peak, "seconds": seconds,
            "input_bytes": inputs, "method": "VmHWM (clear_refs)" if pm.hwm_ok else "ru_maxrss"}


def run_memory(bench: Bench, out_dir: str):
    cfg = bench.cfg
    budget = Budget(cfg["budget"]["Memory growth"])
    points, last = [], None
    for total, seq in cfg["mem_points"]:
        label = f"T={_k(total)} ({total // seq} x {_k(seq)})"
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
        bench._row("Memory growth", label, "ours", point["seconds"], 1, point["peak_extra_bytes"],
                   f"{point['peak_extra_bytes'] / point['tokens'] / 1024:.1f} KiB/token",
                   {"tokens": total, "seq_len": seq})
        bench.progress(f"Memory growth | {label}")
    _write_memory(points, cfg, out_dir)
    return points


def _write_memory(points, cfg, out_dir):
    lines = ["| tokens | sequences | peak extra MiB | KiB / token | inputs MiB | fwd+bwd s |",
             "|---:|---|---:|---:|---:|---:|"]
    for p in points:
        lines.append(f"| {p['tokens']} | {p['tokens'] // p['seq_len']} x {p['seq_len']} | "
                     f"{p['peak_extra_bytes'] / MiB:.1f} | {p['peak_extra_bytes'] / p['tokens'] / 1024:.2f} | "
                     f"{p['input_bytes'] / MiB:.1f} | {p['seconds']:.2f} |")
    text = (f"# FA forward+backward peak extra memory (causal, fp32, N={cfg['heads']}, D={cfg['head_dim']})\n\n"
            + "\n".join(lines) + "\n")
    with open(os.path.join(out_dir, "memory_growth.md"), "w") as fh:
        fh.write(text)
    with open(os.path.join(out_dir, "memory_growth.json"), "w") as fh:
        json.dump({"heads": cfg["heads"], "head_dim": cfg["head_dim"], "points": points}, fh, indent=2)
    if points:
        why = write_line_png(os.path.join(out_dir, "memory_growth.png"),
                             [p["tokens"] for p in points], [p["peak_extra_bytes"] / MiB for p in points])
        if why:
            print(why, file=sys.stderr)


def write_line_png(path, xs, ys, title="FA fwd+bwd peak extra MiB vs tokens (causal fp32)") -> str | None:
    """The memory-growth line chart with matplotlib (the optional ``bench`` extra); None when written,
    else why not."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        from matplotlib import pyplot as plt
    except ImportError:
        return "no plot: matplotlib is not installed (pip install 'ascend_attn[bench]')"
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(xs, ys, marker="o")
    ax.set(title=title, xlabel="tokens", ylabel="peak extra MiB", xlim=(0, max(xs) * 1.05), ylim=(0, max(ys) * 1.1))
    ax.grid(True, alpha=0.4)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return None


# ----------------------------------------------------------------------------- targets and report


def _k(n: int) -> str:
    return f"{n // 1024}k" if n >= 1024 and n % 1024 == 0 else str(n)


def _times(rows):
    table = {}
    for r in rows:
        if r["time_s"] is not None:
            table[(r["group"], r["case"], r["impl"])] = r
    return table


def evaluate_targets(rows, mem_points, mode):
    """[(target, measured text, PASS/MISS/n/a, detail)] from the rows of this run."""
    t = _times(rows)
    cases = {}
    for r in rows:
        cases.setdefault((r["group"], r["case"]), r)
    out = []

    def ratio(group, case, a, b):
        ra, rb = t.get((group, case, a)), t.get((group, case, b))
        return None if ra is None or rb is None else ra["time_s"] / rb["time_s"]

    unstable = set()  # case labels (``case`` and ``group case``) with a set whose runs spread too much
    for r in rows:
        if r.get("spread") is not None and r["spread"] > UNSTABLE_SPREAD:
            unstable.update((r["case"], f"{r['group']} {r['case']}"))

    def worst(name, limit, values, higher_is_better=False, unit="x"):
        vals = [(v, c) for v, c in values if v is not None]
        if not vals:
            out.append((name, "not measured", "n/a", ""))
            return
        v, c = (min if higher_is_better else max)(vals, key=lambda x: x[0])
        ok = v >= limit if higher_is_better else v <= limit
        by = "" if ok else (f"short by {limit / v:.2f}x" if higher_is_better else f"over by {v / limit:.2f}x")
        all_vals = ", ".join(f"{x:.2f}" for x, _ in vals)
        result = "PASS" if ok else "UNSTABLE" if c in unstable else "MISS"
        if result == "UNSTABLE":
            by += "; its runs spread too much to judge: rerun on a quiet machine"
        out.append((name, f"worst {v:.2f}{unit} ({c}); all: {all_vals}", result, by))

    for dtype in ("float32", "bfloat16", "float16"):
        vals = [(ratio(g, c, "ours", "sdpa_loop"), c) for (g, c), r in cases.items()
                if g == "FA forward" and r.get("dtype") == dtype]
        worst(f"FA forward {dtype} <= 1.0x SDPA looped per sequence", 1.0, vals)
    vals = []
    for (g, c), r in cases.items():
        if g == "FA forward" and (g, c, "sdpa_padded") in t:
            speed = ratio(g, c, "sdpa_padded", "ours")
            vals.append((speed / r["pad_ratio"], c))
    worst("FA varlen speedup over padded SDPA >= padding ratio (speedup / pad ratio >= 1)", 1.0, vals,
          higher_is_better=True)
    vals = [(ratio(g, c, "ours", "sdpa_loop"), c) for (g, c), r in cases.items()
            if g == "FA fwd+bwd" and not r.get("test_size")]
    worst("FA fwd+bwd <= 0.8x SDPA fwd+bwd looped", 0.8, vals)
    vals = [(ratio(g, c, "ours", "sdpa_loop"), c) for (g, c), r in cases.items() if r.get("test_size")]
    worst("FA test-size fwd+bwd (T=256, N=4, D=64) <= 1.5x SDPA looped", 1.5, vals)
    vals = []
    for (g, c), r in cases.items():
        if g in ("FA forward", "FA fwd+bwd") and r.get("causal") and not r.get("test_size"):
            full = c.replace(" causal ", " full ", 1)
            a, b = t.get((g, c, "ours")), t.get((g, full, "ours"))
            if a and b:
                vals.append((a["time_s"] / b["time_s"], f"{g} {c}"))
    worst("FA causal <= 0.55x full, same shape", 0.55, vals)
    vals = [(ratio(g, c, "ours", "eager"), c) for (g, c) in cases if g.startswith("FA ") and (g, c, "eager") in t]
    worst("FA native <= 1.0x the eager kernel (CPU path in use vs eager torch)", 1.0, vals)
    vals = [(ratio(g, c, "ours", "cache_copy"), c) for (g, c), r in cases.items()
            if g == "IFA decode" and not r.get("small_step")]
    worst("IFA decode <= 1.2x copying the K/V caches into preallocated buffers", 1.2, vals)
    vals = [(ratio(g, c, "naive", "ours"), c) for (g, c), r in cases.items()
            if g == "IFA decode" and r.get("kv_dtype") == "int8"]
    worst("IFA int8 antiquant >= 2x faster than naive dequantise-then-attend", 2.0, vals, higher_is_better=True)
    vals = [(ratio(g, c, "ours", "sdpa"), c) for (g, c), r in cases.items() if g == "IFA decode" and r.get("small_step")]
    worst("IFA one small decode step (B=1, N=8, S=128) <= 2.0x SDPA", 2.0, vals)
    vals = [(ratio(g, c, "ours", "copy"), c) for (g, c) in cases if g == "RAU"]
    worst("RAU <= 1.2x copying its inputs into preallocated buffers", 1.2, vals)
    if len(mem_points) >= 3:
        big, mid = mem_points[-1], mem_points[len(mem_points) // 2]
        per = lambda p: p["peak_extra_bytes"] / p["tokens"]
        lin = per(big) / max(per(mid), 1)
        worst(f"FA fwd+bwd peak memory linear: per-token at T={_k(big['tokens'])} / at T={_k(mid['tokens'])} "
              f"<= 1.25", 1.25, [(lin, "")])
        big_gib = big["peak_extra_bytes"] / (1 << 30)
        if big["tokens"] >= 65536:
            ok = big_gib < 4.0
            out.append(("FA fwd+bwd 64k causal fp32 peak extra memory < 4 GiB", f"{big_gib:.2f} GiB",
                        "PASS" if ok else "MISS", "" if ok else f"over by {big_gib / 4:.2f}x"))
        else:
            out.append(("FA fwd+bwd 64k causal fp32 peak extra memory < 4 GiB",
                        f"largest point T={_k(big['tokens'])}: {big_gib:.2f} GiB", "n/a",
                        "64k point not measured in this run" + (" (time budget)" if mode == "full" else
                                                                 f" (only the full run has it; {mode} mode)")))
    else:
        out.append(("FA fwd+bwd peak memory linear", "too few points", "n/a", ""))
    return out


def render(rows, targets, mem_points, meta) -> str:
    t = _times(rows)
    lines = [f"# ascend-attn bench ({meta['mode']})", "",
             f"{meta['machine']}, {meta['load_end']:.1f} at the end; torch {meta['torch']}, "
             f"{meta['threads']} threads; {meta['when']}; wall {meta['wall_s']:.0f}s.", "",
             f"`ours` on CPU: {meta.get('cpu_path', 'n/a')}.", "",
             "Times: median of the timed runs after one warm-up, candidates interleaved; spread: interquartile "
             f"range over the median (max - min below 4 runs), above {UNSTABLE_SPREAD:.0%} the set is unstable "
             "and a target it misses reads UNSTABLE. `ours ÷ this`: our time over this row's time (< 1: ours "
             "faster). Peak extra MiB: resident high-water mark of the warm-up run over the resident size "
             "before it.", ""]
    for group in GROUPS:
        group_rows = [r for r in rows if r["group"] == group]
        if not group_rows:  # a group this run did not measure (--only) gets no table
            continue
        lines += [f"## {group}", "", "| case | impl | median ms | runs | spread | peak extra MiB | ours ÷ this | note |",
                  "|---|---|---:|---:|---:|---:|---:|---|"]
        for r in group_rows:
            ours = t.get((group, r["case"], "ours"))
            ms = "-" if r["time_s"] is None else f"{r['time_s'] * 1e3:.1f}"
            spread = "-" if r.get("spread") is None else f"{r['spread']:.0%}"
            peak = "-" if r["peak_extra_mib"] is None else f"{r['peak_extra_mib']:.1f}"
            rat = "-" if (r["time_s"] is None or ours is None or r["impl"] == "ours") else \
                f"{ours['time_s'] / r['time_s']:.2f}x"
            lines.append(f"| {r['case']} | {r['impl']} | {ms} | {r['runs']} | {spread} | {peak} | {rat} | {r['note']} |")
        lines.append("")
    measured = [x for x in targets if x[1] != "not measured"]
    lines += ["## Targets", "", "| target | measured | result | miss by |", "|---|---|---|---|"]
    for name, value, res, by in measured:
        lines.append(f"| {name} | {value} | {res} | {by} |")
    if len(measured) < len(targets):
        lines += ["", f"{len(targets) - len(measured)} target(s) not measured in this run (their groups did not run)."]
    return "\n".join(lines) + "\n"


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.1f} at start"


def _cpu_path() -> str:
    """Which CPU kernels ``ours`` runs (ascend_attn.native) and the CPU features they dispatch on."""
    from . import native
    if native.requested() == "eager":
        return f"eager torch kernels ({native.ENV_KERNEL}=eager)"
    reason = native.unavailable_reason()
    if reason:
        return f"eager torch kernels ({reason})"
    features = ", ".join(name for name, on in native.cpu_features().items() if on) or "no SIMD features"
    return f"native kernels for {', '.join(native.OPS)} (CPU features: {features}), eager torch kernels for the rest"


def _prime() -> None:
    """Call every op and baseline once on tiny shapes: one-off costs (op registration, mask, kernel
    dispatch caches) stay out of the first measurement's time and memory."""
    import torch
    for dtype, fwdbwd in ((torch.float32, True), (torch.bfloat16, False)):
        for causal in (True, False):
            cands, _ = _fa_candidates([16, 32], 2, 64, dtype, causal, fwdbwd, _ALL, 64)
            for fn in cands.values():
                fn()
    for int8, paged in ((False, False), (True, True)):
        for fn in _ifa_candidates(1, 4, 2, 64, 128, int8, paged, 64).values():
            fn()
    for layout in ("SBH", "TND"):
        for fn in _rau_candidates(layout, torch.float32, {"rau_sbh": (8, 1, 1, 64), "rau_tnd": ([8], 1, 64)}).values():
            fn()


def run_bench(mode: str = "full", out_dir: str = "bench_results", groups=None, stream=sys.stderr) -> int:
    import torch
    cfg = CONFIGS[mode]
    groups = groups or ("FA", "IFA", "RAU", "Memory growth")
    os.makedirs(out_dir, exist_ok=True)
    total = ((_fa_sets(cfg) if "FA" in groups else 0) + (_ifa_sets(cfg) if "IFA" in groups else 0)
             + (4 if "RAU" in groups else 0) + (len(cfg["mem_points"]) if "Memory growth" in groups else 0))
    meta = {"mode": mode, "machine": _machine(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu_path": _cpu_path()}
    bench = Bench(mode, total, stream)
    torch.manual_seed(0)
    _prime()
    if "FA" in groups:
        run_fa(bench)
    if "IFA" in groups:
        run_ifa(bench)
    if "RAU" in groups:
        run_rau(bench)
    mem_points = run_memory(bench, out_dir) if "Memory growth" in groups else []
    meta["wall_s"] = time.perf_counter() - bench.t0
    meta["load_end"] = os.getloadavg()[0]
    bench.bar.close()
    targets = evaluate_targets(bench.rows, mem_points, mode)
    text = render(bench.rows, targets, mem_points, meta)
    with open(os.path.join(out_dir, "results.md"), "w") as fh:
        fh.write(text)
    with open(os.path.join(out_dir, "results.json"), "w") as fh:
        json.dump({"meta": meta, "rows": bench.rows, "memory_growth": mem_points,
                   "targets": [dict(zip(("target", "measured", "result", "miss_by"), x)) for x in targets]},
                  fh, indent=2)
    print(text)
    print(f"results written to {out_dir}/ (results.md, results.json, memory_growth.md/.json/.png)")
    return 0


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
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    groups = None if not args.only else tuple("Memory growth" if g == "memory" else g for g in args.only)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
        os.environ["ASCEND_ATTN_BENCH_THREADS"] = str(args.threads)
    return run_bench(mode, args.out, groups)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--memory-point"]:
        total, seq, heads, dim = (int(x) for x in argv[1:5])
        print(json.dumps(_memory_child(total, seq, heads, dim)))
        return 0
    parser = argparse.ArgumentParser(prog="ascend-attn bench", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return main_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
