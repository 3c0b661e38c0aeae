"""The bench's report: the results table (Markdown, JSON), the targets and their verdicts
(PASS / MISS / UNSTABLE / n/a), ``torch.utils.benchmark.Compare`` tables for the console, the
memory-growth table, JSON and plot (matplotlib, the optional ``bench`` extra), and the run's header
(machine, CPU path)."""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys

from .cases import GROUPS, kilo
from .memory import MiB
from .timing import UNSTABLE_SPREAD

# ----------------------------------------------------------------------------- memory growth


def write_memory_growth(points, cfg, out_dir):
    """memory_growth.md / .json / .png of the sweep's points (the plot only with matplotlib)."""
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


# ----------------------------------------------------------------------------- targets and tables


def paired_ratio(a: dict, b: dict) -> float:
    """Time of row ``a`` over row ``b``. Rows of one set carry their runs in round order
    (``round_times``): the ratio is then the median over the rounds of a's run over b's run of the
    same round, so that a slow drift of a shared machine, which moves both runs of a round alike,
    cancels; rows of different sets (or without round times) give the ratio of their medians."""
    ta, tb = a.get("round_times"), b.get("round_times")
    if ta and tb and len(ta) == len(tb) and a["group"] == b["group"] and a["case"] == b["case"]:
        return statistics.median(x / y for x, y in zip(ta, tb))
    return a["time_s"] / b["time_s"]


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
        return None if ra is None or rb is None else paired_ratio(ra, rb)

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
            # the full-mask runs of the same set (interleaved) where the set has them, else the full set
            full = t.get((g, c, "ours_full")) or t.get((g, c.replace(" causal ", " full ", 1), "ours"))
            causal = t.get((g, c, "ours"))
            if causal and full:
                vals.append((paired_ratio(causal, full), f"{g} {c}"))
    worst("FA causal <= 0.55x full, same shape", 0.55, vals)
    vals = [(ratio(g, c, "ours", "eager"), c) for (g, c) in cases if g.startswith("FA ") and (g, c, "eager") in t]
    worst("FA native <= 1.0x the eager kernel (CPU path in use vs eager torch)", 1.0, vals)
    vals = [(ratio(g, c, "ours", "cache_copy"), c) for (g, c), r in cases.items()
            if g == "IFA decode" and not r.get("small_step")]
    worst("IFA decode <= 1.2x copying the K/V caches into preallocated buffers", 1.2, vals)
    vals = [(ratio(g, c, "naive", "ours"), c) for (g, c), r in cases.items()
            if g == "IFA decode" and r.get("kv_dtype") == "int8"]
    worst("IFA int8 antiquant >= 2x faster than naive dequantise-then-attend", 2.0, vals, higher_is_better=True)
    vals = [(ratio(g, c, "ours", "sdpa"), c) for (g, c), r in cases.items()
            if g == "IFA decode" and r.get("small_step")]
    worst("IFA one small decode step (B=1, N=8, S=128) <= 2.0x SDPA", 2.0, vals)
    vals = [(ratio(g, c, "ours", "copy"), c) for (g, c) in cases if g == "RAU"]
    worst("RAU <= 1.2x copying its inputs into preallocated buffers", 1.2, vals)
    if len(mem_points) >= 3:
        big, mid = mem_points[-1], mem_points[len(mem_points) // 2]
        per = lambda p: p["peak_extra_bytes"] / p["tokens"]
        lin = per(big) / max(per(mid), 1)
        worst(f"FA fwd+bwd peak memory linear: per-token at T={kilo(big['tokens'])} / at T={kilo(mid['tokens'])} "
              f"<= 1.25", 1.25, [(lin, "")])
        big_gib = big["peak_extra_bytes"] / (1 << 30)
        if big["tokens"] >= 65536:
            ok = big_gib < 4.0
            out.append(("FA fwd+bwd 64k causal fp32 peak extra memory < 4 GiB", f"{big_gib:.2f} GiB",
                        "PASS" if ok else "MISS", "" if ok else f"over by {big_gib / 4:.2f}x"))
        else:
            out.append(("FA fwd+bwd 64k causal fp32 peak extra memory < 4 GiB",
                        f"largest point T={kilo(big['tokens'])}: {big_gib:.2f} GiB", "n/a",
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
             "faster), the median over the rounds of the two runs of each round, as in the targets. Peak "
             "extra MiB: resident high-water mark of the warm-up run over the resident size before it.", ""]
    for group in GROUPS:
        group_rows = [r for r in rows if r["group"] == group]
        if not group_rows:  # a group this run did not measure (--only) gets no table
            continue
        lines += [f"## {group}", "",
                  "| case | impl | median ms | runs | spread | peak extra MiB | ours ÷ this | note |",
                  "|---|---|---:|---:|---:|---:|---:|---|"]
        for r in group_rows:
            ours = t.get((group, r["case"], "ours"))
            ms = "-" if r["time_s"] is None else f"{r['time_s'] * 1e3:.1f}"
            spread = "-" if r.get("spread") is None else f"{r['spread']:.0%}"
            peak = "-" if r["peak_extra_mib"] is None else f"{r['peak_extra_mib']:.1f}"
            rat = "-" if (r["time_s"] is None or ours is None or r["impl"] == "ours") else \
                f"{paired_ratio(ours, r):.2f}x"
            lines.append(f"| {r['case']} | {r['impl']} | {ms} | {r['runs']} | {spread} | {peak} | {rat} "
                         f"| {r['note']} |")
        lines.append("")
    measured = [x for x in targets if x[1] != "not measured"]
    lines += ["## Targets", "", "| target | measured | result | miss by |", "|---|---|---|---|"]
    for name, value, res, by in measured:
        lines.append(f"| {name} | {value} | {res} | {by} |")
    if len(measured) < len(targets):
        lines += ["", f"{len(targets) - len(measured)} target(s) not measured in this run (their groups did not run)."]
    return "\n".join(lines) + "\n"


def compare_tables(measurements) -> str:
    """``torch.utils.benchmark.Compare`` of the timed sets: one table per group, cases as rows,
    candidates as columns; a time whose runs spread more than 10 % carries its spread (``(! NN%)``)."""
    if not measurements:
        return ""
    from torch.utils import benchmark
    compare = benchmark.Compare(measurements)
    compare.highlight_warnings()
    return str(compare)


def write_results(out_dir, rows, targets, mem_points, meta) -> str:
    """results.md (returned) and results.json of the run."""
    text = render(rows, targets, mem_points, meta)
    with open(os.path.join(out_dir, "results.md"), "w") as fh:
        fh.write(text)
    with open(os.path.join(out_dir, "results.json"), "w") as fh:
        json.dump({"meta": meta, "rows": rows, "memory_growth": mem_points,
                   "targets": [dict(zip(("target", "measured", "result", "miss_by"), x)) for x in targets]},
                  fh, indent=2)
    return text


# ----------------------------------------------------------------------------- header


def machine() -> str:
    """CPU model, CPU count and load average: the header line of the report."""
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


def cpu_path() -> str:
    """Which CPU kernels ``ours`` runs (ascend_attn.native) and the CPU features they dispatch on."""
    from .. import native
    if native.requested() == "eager":
        return f"eager torch kernels ({native.ENV_KERNEL}=eager)"
    reason = native.unavailable_reason()
    if reason:
        return f"eager torch kernels ({reason})"
    features = ", ".join(name for name, on in native.cpu_features().items() if on) or "no SIMD features"
    return f"native kernels for {', '.join(native.OPS)} (CPU features: {features}), eager torch kernels for the rest"
