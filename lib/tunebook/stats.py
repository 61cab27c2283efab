"""Scores you can steer by: a mean with its 95 % bootstrap interval, and a paired difference with its interval."""

from __future__ import annotations

from typing import Sequence

import numpy as np

N_BOOT = 2000


def mean_ci(values: Sequence[float | None], level: float = 0.95, seed: int = 0,
            groups: Sequence[str] | None = None) -> dict[str, float | int | None]:
    """``{"mean", "lo", "hi", "n"}``: the percentile bootstrap interval of the mean (None values left out). With
    ``groups`` (one label per value: several rewordings of one fact) whole groups are resampled — rewordings of one
    fact are not independent questions, and resampling them one by one would make the interval too narrow."""
    keep = [i for i, v in enumerate(values) if v is not None]
    x = np.array([values[i] for i in keep], dtype=float)
    if len(x) == 0:
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    if len(x) == 1:
        return {"mean": round(float(x[0]), 4), "lo": None, "hi": None, "n": 1}
    rng = np.random.default_rng(seed)
    if groups is None:
        boots = x[rng.integers(0, len(x), size=(N_BOOT, len(x)))].mean(axis=1)
    else:
        labels = [groups[i] for i in keep]
        names = sorted(set(labels))
        sums = np.array([sum(x[j] for j, g in enumerate(labels) if g == n) for n in names])
        counts = np.array([sum(g == n for g in labels) for n in names], dtype=float)
        pick = rng.integers(0, len(names), size=(N_BOOT, len(names)))
        boots = sums[pick].sum(axis=1) / counts[pick].sum(axis=1)
    a = (1 - level) / 2
    return {"mean": round(float(x.mean()), 4), "lo": round(float(np.quantile(boots, a)), 4),
            "hi": round(float(np.quantile(boots, 1 - a)), 4), "n": int(len(x))}


def paired_delta_ci(after: Sequence[float | None], before: Sequence[float | None], level: float = 0.95,
                    seed: int = 0, groups: Sequence[str] | None = None) -> dict[str, float | int | None]:
    """The mean of ``after - before`` over the pairs where both exist, with its bootstrap interval."""
    both = [i for i, (a, b) in enumerate(zip(after, before)) if a is not None and b is not None]
    d = [after[i] - before[i] for i in both]
    return mean_ci(d, level, seed, [groups[i] for i in both] if groups is not None else None)


def fmt(ci: dict, digits: int = 2) -> str:
    """``0.73 [0.61, 0.84]``"""
    if ci.get("mean") is None:
        return "–"
    if ci.get("lo") is None:
        return f"{ci['mean']:.{digits}f}"
    return f"{ci['mean']:.{digits}f} [{ci['lo']:.{digits}f}, {ci['hi']:.{digits}f}]"
