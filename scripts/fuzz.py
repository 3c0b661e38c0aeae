#!/usr/bin/env python
"""Long randomised runs of the property strategies of ``tests/test_properties.py``.

Every op's VALID strategy (checked against the float64 references) and INVALID strategy (one
broken field -> ValueError/TypeError with the op-prefixed message, inputs unchanged) runs in
round-robin chunks with fresh random hypothesis seeds until ``--minutes`` have passed. Failures do
not stop the run: each is appended to ``--log`` (seed, op, case, traceback) and the summary at the
end (also printed every ``--report`` minutes) lists examples run per op and distinct failures.

    nohup python scripts/fuzz.py --minutes 30 > /tmp/fuzz.log 2>&1 &
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
import traceback
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402

import test_properties as P  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--chunk", type=int, default=40, help="examples per op per hypothesis run")
    ap.add_argument("--ops", default=",".join(P.OPS), help="comma-separated subset of " + ",".join(P.OPS))
    ap.add_argument("--log", default="/tmp/fuzz_failures.log", help="failure details (appended)")
    ap.add_argument("--report", type=float, default=5.0, help="print a progress summary every N minutes")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    ap.add_argument("--seed", type=int, default=None, help="master seed (default: random)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    # FakeTensorMode logs every exception raised inside a fake kernel; invalid inputs raise by design
    import logging
    logging.getLogger("torch._subclasses.fake_tensor").setLevel(logging.CRITICAL)
    master = args.seed if args.seed is not None else random.SystemRandom().randrange(2 ** 32)
    rng = random.Random(master)
    ops = [o for o in args.ops.split(",") if o]
    deadline = time.monotonic() + args.minutes * 60
    counts: Counter = Counter()
    failures: Counter = Counter()
    kinds: dict[str, Counter] = defaultdict(Counter)
    first_seen: dict[tuple, str] = {}
    log = open(args.log, "a")
    log.write(f"\n=== fuzz start {time.strftime('%Y-%m-%d %H:%M:%S')} master_seed={master} ops={ops}\n")
    log.flush()
    print(f"fuzz: master seed {master}, {args.minutes} min, ops {ops}, failures -> {args.log}", flush=True)

    class OutOfTime(Exception):
        pass

    def run_chunk(name, run_seed):
        strategy, checker, _ = P.OPS[name]

        @seed(run_seed)
        @settings(max_examples=args.chunk, deadline=None, derandomize=False, database=None,
                  phases=[Phase.generate], suppress_health_check=list(HealthCheck))
        @given(strategy)
        def body(case):
            if time.monotonic() > deadline:
                raise OutOfTime
            counts[name] += 1
            try:
                checker(case)
            except Exception as exc:  # noqa: BLE001 -- every failure is logged, the run goes on
                failures[name] += 1
                first = (str(exc).strip().splitlines() or [""])[0][:160]
                key = (name, case.info.get("broken", ""), type(exc).__name__, first)
                kinds[name][key] += 1
                if key not in first_seen:
                    first_seen[key] = f"seed={run_seed}"
                log.write(f"--- FAILURE op={name} run_seed={run_seed} {type(exc).__name__}: {first}\n"
                          f"case: {case.describe()}\n{traceback.format_exc()}\n")
                log.flush()
        try:
            body()
        except OutOfTime:
            pass

    def summary(final=False):
        elapsed = args.minutes * 60 - max(0.0, deadline - time.monotonic())
        head = "FINAL SUMMARY" if final else "progress"
        print(f"\n[{head}] elapsed {elapsed / 60:.1f} min, master seed {master}", flush=True)
        for name in ops:
            print(f"  {name:16s} examples {counts[name]:7d}  failures {failures[name]:5d}", flush=True)
        total_f = sum(failures.values())
        print(f"  total examples {sum(counts.values())}, failures {total_f}, distinct {len(first_seen)}", flush=True)
        for key, where in first_seen.items():
            print(f"    {key[0]} [{key[1]}] {key[2]}: {key[3]}  (x{kinds[key[0]][key]}, first {where})", flush=True)
        return total_f

    next_report = time.monotonic() + args.report * 60
    while time.monotonic() < deadline:
        for name in ops:
            if time.monotonic() >= deadline:
                break
            run_seed = rng.randrange(2 ** 32)
            try:
                run_chunk(name, run_seed)
            except Exception as exc:  # noqa: BLE001 -- a strategy itself broke
                failures[name] += 1
                key = (name, "strategy", type(exc).__name__, str(exc)[:160])
                kinds[name][key] += 1
                first_seen.setdefault(key, f"seed={run_seed}")
                log.write(f"--- STRATEGY ERROR op={name} run_seed={run_seed}\n{traceback.format_exc()}\n")
                log.flush()
            if time.monotonic() >= next_report:
                summary()
                next_report += args.report * 60
    total_f = summary(final=True)
    log.write(f"=== fuzz end {time.strftime('%Y-%m-%d %H:%M:%S')} examples={dict(counts)} failures={dict(failures)}\n")
    log.close()
    print(json.dumps({"examples": dict(counts), "failures": dict(failures), "master_seed": master}), flush=True)
    return 1 if total_f else 0


if __name__ == "__main__":
    sys.exit(main())
