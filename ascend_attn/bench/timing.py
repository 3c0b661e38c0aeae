"""Timing on ``torch.utils.benchmark``: one ``Timer`` per candidate, one timed run per round,
the rounds merged into one ``Measurement`` (median, interquartile range), and the time budgets.

The bench times rounds interleaved across the candidates of a set (each round runs every
candidate once, on the same inputs), so slow drifts of a shared machine hit all of them alike.
``Timer.timeit`` / ``blocked_autorange`` would run each candidate several times back to back (and
add their own warm-up runs to every call), so a round takes one timed run per candidate
(``CandidateTimer.once``) and ``Measurement.merge`` combines the rounds.
"""
from __future__ import annotations

import math
import time

from torch.utils import benchmark
from torch.utils.benchmark.utils.common import TaskSpec

MAX_ROUNDS = 15
# A set whose timed runs spread more than this (interquartile range, or max - min below 4 runs, over
# the median) is reported as unstable: a target it would miss reads UNSTABLE, not MISS.
UNSTABLE_SPREAD = 0.25


def measurement_spread(m: benchmark.Measurement) -> float | None:
    """Relative spread of a measurement's runs: interquartile range (max - min below 4 runs) over
    the median; None for a single run."""
    times = m.times
    if len(times) < 2:
        return None
    width = m.iqr if len(times) >= 4 else max(times) - min(times)
    return width / m.median


def run_spread(times: list[float]) -> float | None:
    """Relative spread of timed runs (seconds each): interquartile range (max - min below 4 runs)
    over the median."""
    return measurement_spread(benchmark.Measurement(1, list(times), TaskSpec("", "")))


class CandidateTimer(benchmark.Timer):
    """A ``Timer`` of one candidate ``fn`` of a set: ``label`` = group, ``sub_label`` = case,
    ``description`` = candidate (the rows and columns of ``benchmark.Compare``)."""

    def __init__(self, fn, group: str, case: str, name: str):
        import torch
        # timer: the CPU clock itself (the default one asks for an accelerator to synchronise inside
        # the timed interval); num_threads: recorded for Compare, the threads stay as the run set them
        super().__init__(stmt="fn()", globals={"fn": fn}, timer=time.perf_counter, label=group, sub_label=case,
                         description=name, num_threads=torch.get_num_threads())

    def once(self) -> benchmark.Measurement:
        """One timed run, no warm-up: the bench warms each candidate up once per set."""
        return benchmark.Measurement(number_per_run=1, raw_times=[self._timeit(1)], task_spec=self._task_spec)


def time_once(fn, label: str = "") -> float:
    """Seconds of one run of ``fn`` (timed as a bench candidate is)."""
    return CandidateTimer(fn, label, label, label).once().median


class Budget:
    """Seconds of one group; the clock starts at the group's first measurement."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self.start = None

    def left(self) -> float:
        if self.start is None:
            self.start = time.perf_counter()
        return math.inf if self.seconds is None else self.seconds - (time.perf_counter() - self.start)
