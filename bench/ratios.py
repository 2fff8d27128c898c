"""Ratios between two loops' figures with their spread, so a reader can tell a win from noise.

The suites interleave their rounds: round r measures every loop once, one after the other,
so round r's figures of two loops pair up. A ratio's spread is the lowest and highest of
those per-round ratios; its verdict says whether every round agrees on a side of 1.
"""

from __future__ import annotations

import math
import statistics

# The verdict when the rounds disagree on which side of 1 the ratio falls.
LEVEL = "level (within spread)"


def paired(a, b, a_rounds=None, b_rounds=None):
    """[(round, a value, b value)] for the rounds both have a figure in. `a_rounds` and
    `b_rounds` give each value's round; without them the lists pair by position (round =
    index), which holds when every round gave both loops a figure (equal lengths), and
    pairs nothing otherwise."""
    if a_rounds is not None and b_rounds is not None:
        by_round = dict(zip(b_rounds, b, strict=True))
        return [(r, x, by_round[r]) for x, r in zip(a, a_rounds, strict=True) if r in by_round]
    if len(a) != len(b):
        return []
    return [(r, x, y) for r, (x, y) in enumerate(zip(a, b, strict=True))]


def ratio(target, base, higher_is_better):
    """The target's figure against the base's, as 'times as good': above 1 the target wins.
    For times and sizes (lower is better) that is base / target, for rates target / base."""
    return target / base if higher_is_better else base / target


def verdict(per_round, words=("faster", "slower")):
    """words[0] if every round's ratio is above 1, words[1] if every one is below, else
    level: the rounds disagree, so the difference is within the run's noise."""
    if not per_round:
        return None
    if all(r > 1 for r in per_round):
        return words[0]
    if all(r < 1 for r in per_round):
        return words[1]
    return LEVEL


def compare(target, base, higher_is_better, target_rounds=None, base_rounds=None, words=None):
    """{ratio, rounds, round_min, round_max, per_round, verdict} of `target` against `base`
    (lists of per-round figures): ratio is of the medians, per_round the ratio in each of
    `rounds`; None if either has no figure."""
    if not target or not base:
        return None
    med_target, med_base = statistics.median(target), statistics.median(base)
    if not med_target or not med_base:
        return None
    value = ratio(med_target, med_base, higher_is_better)
    pairs = [(r, t, b) for r, t, b in paired(target, base, target_rounds, base_rounds) if t and b]
    per_round = [ratio(t, b, higher_is_better) for _, t, b in pairs]
    return {
        "ratio": value,
        "rounds": [r for r, _, _ in pairs],
        "round_min": min(per_round, default=None),
        "round_max": max(per_round, default=None),
        "per_round": per_round,
        "verdict": verdict(per_round, *([words] if words else [])),
    }


def geomean(values):
    values = list(values)
    if not values or any(v <= 0 for v in values):
        return None
    return math.exp(sum(map(math.log, values)) / len(values))


def fmt_ratio(c, digits=2):
    """'1.51x (1.32-1.78)': the ratio of medians, then the per-round ratios' range."""
    if c is None:
        return "-"
    text = f"{c['ratio']:.{digits}f}x"
    if c["round_min"] is not None and len(c["per_round"]) > 1:
        text += f" ({c['round_min']:.{digits}f}-{c['round_max']:.{digits}f})"
    return text
