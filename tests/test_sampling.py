"""The soak's growth check (tests/support/sampling.py): a fitted slope after the warm-up, so
a burst at one sample or a step during the warm-up is not growth, and a steady climb is."""

from __future__ import annotations

import asyncio
import random

import pytest
from support import sampling


def _samples(values, every: float = 10.0) -> list[dict]:
    return [{"t": i * every, "rss": v} for i, v in enumerate(values)]


def test_slope_of_a_line():
    assert sampling.slope([(0, 1), (1, 3), (2, 5)]) == pytest.approx(2.0)
    assert sampling.slope([(0, 4)]) == 0.0
    assert sampling.slope([(1, 4), (1, 5)]) == 0.0


def test_steady_climb_fails():
    # 1 MiB per sample, 10 s apart, 60 samples: ~50 MiB over the window after 100 s.
    samples = _samples([100 + i for i in range(60)])
    fits, failures = sampling.check(samples, {"rss": 20}, warmup=100)
    assert fits["rss"]["per_min"] == pytest.approx(6.0)
    assert len(failures) == 1 and failures[0].startswith("rss grew")


def test_warmup_step_and_one_burst_pass():
    rng = random.Random(1)
    values = [10] * 5 + [100 + rng.uniform(-3, 3) for _ in range(55)]
    values[40] = 180  # one sample taken during a burst
    fits, failures = sampling.check(_samples(values), {"rss": 20}, warmup=60)
    assert failures == [], fits
    # First against last would have called the warm-up step growth.
    assert values[-1] - values[0] > 20


def test_unbounded_keys_are_fitted_not_judged():
    samples = [{"t": i, "rss": 0, "tasks": i} for i in range(10)]
    fits, failures = sampling.check(samples, {"rss": 1}, warmup=0)
    assert "tasks" in fits and failures == []


def test_loop_counts_from_stats_when_the_loop_has_it():
    class WithStats:
        def stats(self):
            return {"readers": 3, "transports": 2, "timers": 7, "other": "x"}

    counts = sampling.loop_counts(WithStats())
    assert counts == {"tasks": 0, "loop_readers": 3, "loop_transports": 2, "loop_timers": 7}


def test_loop_counts_of_asyncio():
    loop = asyncio.SelectorEventLoop()
    try:
        loop.call_later(60, print)
        counts = sampling.loop_counts(loop)
    finally:
        loop.close()
    assert counts["loop_timers"] == 1 and counts["tasks"] == 0
    assert counts["loop_readers"] == 1  # its self-pipe
