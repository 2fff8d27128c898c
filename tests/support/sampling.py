"""What a long run samples about its own process and loop, and the growth fit over the samples.

A sample is a flat dict of numbers: resident memory, open fds, tracemalloc's traced total,
Python objects the collector tracks, tasks alive on the loop, and the loop's own object
counts where it exposes them (asyncio's ready queue, timer heap and selector map; ferroloop's
``loop.stats()`` when it has one; uvloop shows none).

Growth is judged by the least-squares slope over the samples taken after a warm-up, not by
the last sample against the first: one allocator step, or a burst of connections in flight
at the moment of a sample, moves one point but hardly the fitted line, while a leak moves
every later point.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import time
import tracemalloc

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def loop_counts(loop: asyncio.AbstractEventLoop) -> dict[str, int]:
    """The loop's own live objects, as far as each loop shows them."""
    counts = {"tasks": len(asyncio.all_tasks(loop))}
    stats = getattr(loop, "stats", None)
    if callable(stats):
        try:
            found = stats()
        except Exception:  # noqa: BLE001 - an optional API must not end a long run
            found = {}
        for key in ("readers", "writers", "transports", "timers", "handles", "ready"):
            value = found.get(key) if isinstance(found, dict) else None
            if isinstance(value, int):
                counts[f"loop_{key}"] = value
    elif hasattr(loop, "_selector"):
        # asyncio's selector loop: the same three things, read from its attributes.
        try:
            counts["loop_ready"] = len(loop._ready)
            counts["loop_timers"] = len(loop._scheduled)
            counts["loop_readers"] = len(loop._selector.get_map())
        except (AttributeError, TypeError):
            pass
    return counts


def sample(loop: asyncio.AbstractEventLoop, started: float) -> dict[str, float]:
    point: dict[str, float] = {"t": time.monotonic() - started, "rss": rss(), "fds": open_fds()}
    if tracemalloc.is_tracing():
        point["traced"] = tracemalloc.get_traced_memory()[0]
    point["objects"] = len(gc.get_objects())
    point.update(loop_counts(loop))
    return point


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x (0 for fewer than two distinct x)."""
    n = len(points)
    if n < 2:
        return 0.0
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    if var == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / var


def growth(samples: list[dict], key: str, warmup: float) -> dict[str, float] | None:
    """The fitted slope (per minute) of ``key`` after ``warmup`` seconds, the growth that
    slope makes over that window, and the peak; None when the key was never sampled."""
    after = [(s["t"], s[key]) for s in samples if s["t"] >= warmup and key in s]
    if not after:
        return None
    per_second = slope(after)
    window = after[-1][0] - after[0][0]
    return {
        "per_min": per_second * 60.0,
        "fitted": per_second * window,
        "window": window,
        "peak": max(y for _, y in after),
        "mean": sum(y for _, y in after) / len(after),
    }


def check(samples: list[dict], bounds: dict[str, float], warmup: float) -> tuple[dict, list[str]]:
    """Fit each bounded key; a key whose fitted growth over the window exceeds its bound
    is a failure. Returns (fits by key, failure descriptions)."""
    fits, failures = {}, []
    keys = {k for s in samples for k in s if k != "t"}
    for key in sorted(keys):
        fit = growth(samples, key, warmup)
        if fit is None:
            continue
        fits[key] = fit
        bound = bounds.get(key)
        if bound is not None and fit["fitted"] > bound:
            failures.append(
                f"{key} grew {fit['fitted']:.0f} over {fit['window']:.0f} s after the warm-up "
                f"({fit['per_min']:.1f}/min); bound {bound:.0f}"
            )
    return fits, failures


def prime(new_loop) -> None:
    """Make, use and close one loop before measuring: what a loop's library makes once per
    process and keeps (libuv's signal pipe, on the first child process it watches) is then
    open before the measured run's fd count, not counted as that run's leak."""
    loop = new_loop()
    try:

        async def child() -> None:
            proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
            await proc.wait()

        loop.run_until_complete(child())
    finally:
        loop.close()
