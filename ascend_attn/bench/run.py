"""One bench run: ``Bench`` (the rows, the progress bar, measuring one comparison set) and
``run_bench`` (prime, the groups in order, then the report)."""
from __future__ import annotations

import os
import sys
import time

from torch.utils import benchmark

from . import baselines as B
from . import report
from .cases import _ALL, CONFIGS, run_fa, run_ifa, run_rau, set_count
from .memory import MiB, PeakMemory, run_memory
from .timing import MAX_ROUNDS, UNSTABLE_SPREAD, Budget, CandidateTimer, measurement_spread


class Bench:
    def __init__(self, mode: str, progress_total: int, stream=sys.stderr):
        self.mode, self.cfg = mode, CONFIGS[mode]
        self.rows: list[dict] = []
        self.measurements: list[benchmark.Measurement] = []  # timed sets, for the Compare tables
        from tqdm import tqdm
        self.bar = tqdm(total=max(1, progress_total), desc="bench", unit="set", file=stream)
        self.rate: dict[str, float] = {}  # seconds per unit of work of one round, per group (last set)
        self.t0 = time.perf_counter()

    def budget(self, name: str) -> Budget:
        """The time budget of a group (its ``cfg["budget"]`` key); its clock starts at its first set."""
        return Budget(self.cfg["budget"][name])

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
        predicted = None
        if work and group in self.rate:
            predicted = self.rate[group] * work * (1 + min(3, self.cfg["big_repeats"]))
        if budget.left() <= 0 or (predicted is not None and predicted > budget.left()):
            why = "skipped: time budget" + (f" (predicted {predicted:.0f}s)" if predicted is not None else "")
            for name in cands:
                self.row(group, case, name, None, 0, None, why, extra)
            self.progress(f"{group} | {case} ({why})")
            return {}
        timers = {name: CandidateTimer(fn, group, case, name) for name, fn in cands.items()}
        warm, peak = {}, {}
        for name, timer in timers.items():
            with PeakMemory() as pm:
                warm[name] = timer.once().median
            peak[name] = pm.peak
        per_round = sum(warm.values())
        repeats = self.cfg["repeats"] if per_round < 2.0 else self.cfg["big_repeats"]
        # fast sets: more rounds (up to MAX_ROUNDS) so the median rides out scheduler noise
        repeats = max(repeats, min(MAX_ROUNDS, int(self.cfg["set_seconds"] / max(per_round, 1e-6))))
        rounds = repeats if per_round * repeats <= budget.left() else max(1, int(budget.left() // per_round))
        runs = [timer.once() for _ in range(rounds) for timer in timers.values()]
        # each candidate's times in round order: the targets pair the runs of one round (paired_ratio)
        round_times = {name: [run.median for run in runs[i::len(timers)]] for i, name in enumerate(timers)}
        out = {}
        for m in benchmark.Measurement.merge(runs):  # one per candidate, in candidate order
            name, spread = m.description, measurement_spread(m)
            notes = [] if rounds >= repeats else [f"only {rounds} run(s): time budget"]
            if spread is not None and spread > UNSTABLE_SPREAD:
                notes.append(f"unstable: spread {spread:.0%}")
            self.row(group, case, name, m.median, rounds, peak[name], "; ".join(notes), extra, spread,
                     round_times[name])
            self.measurements.append(m)
            out[name] = m.median
        if work:  # from the timed rounds: the warm-up carries one-off costs
            self.rate[group] = sum(out.values()) / work
        self.progress(f"{group} | {case}")
        return out

    def row(self, group, case, impl, seconds, runs, peak, note, extra, spread=None, round_times=None):
        row = {"group": group, "case": case, "impl": impl, "time_s": seconds, "runs": runs, "spread": spread,
               "round_times": round_times, "peak_extra_mib": None if peak is None else peak / MiB, "note": note}
        if extra:
            row.update(extra)
        self.rows.append(row)

    def skipped(self, group, case, impl, why, extra=None):
        self.row(group, case, impl, None, 0, None, f"skipped: {why}", extra)


def prime() -> None:
    """Call every op and baseline once on tiny shapes: one-off costs (op registration, mask, kernel
    dispatch caches) stay out of the first measurement's time and memory."""
    import torch
    for dtype, fwdbwd in ((torch.float32, True), (torch.bfloat16, False)):
        for causal in (True, False):
            cands, _ = B.fa_candidates([16, 32], 2, 64, dtype, causal, fwdbwd, _ALL, 64)
            for fn in cands.values():
                fn()
    for int8, paged in ((False, False), (True, True)):
        for fn in B.ifa_candidates(1, 4, 2, 64, 128, int8, paged, 64).values():
            fn()
    for layout in ("SBH", "TND"):
        for fn in B.rau_candidates(layout, torch.float32, {"rau_sbh": (8, 1, 1, 64), "rau_tnd": ([8], 1, 64)}).values():
            fn()


def run_bench(mode: str = "full", out_dir: str = "bench_results", groups=None, stream=sys.stderr) -> int:
    import torch
    cfg = CONFIGS[mode]
    groups = groups or ("FA", "IFA", "RAU", "Memory growth")
    os.makedirs(out_dir, exist_ok=True)
    meta = {"mode": mode, "machine": report.machine(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "cpu_path": report.cpu_path()}
    bench = Bench(mode, set_count(cfg, groups), stream)
    torch.manual_seed(0)
    prime()
    if "FA" in groups:
        run_fa(bench)
    if "IFA" in groups:
        run_ifa(bench)
    if "RAU" in groups:
        run_rau(bench)
    mem_points = []
    if "Memory growth" in groups:
        mem_points = run_memory(bench)
        report.write_memory_growth(mem_points, cfg, out_dir)
    meta["wall_s"] = time.perf_counter() - bench.t0
    meta["load_end"] = os.getloadavg()[0]
    bench.bar.close()
    targets = report.evaluate_targets(bench.rows, mem_points, mode)
    text = report.write_results(out_dir, bench.rows, targets, mem_points, meta)
    tables = report.compare_tables(bench.measurements)
    if tables:
        print(tables)
    print(text)
    print(f"results written to {out_dir}/ (results.md, results.json, memory_growth.md/.json/.png)")
    return 0
