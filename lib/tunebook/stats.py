"""Scores you can steer by: a mean with its 95 % bootstrap interval, and a paired difference with its interval."""

from __future__ import annotations

from typing import Sequence

import numpy as np

N_BOOT = 2000


def mean_ci(values: Sequence[float | None], level: float = 0.95, seed: int = 0) -> dict[str, float | int | None]:
    """``{"mean", "lo", "hi", "n"}``: the percentile bootstrap interval of the mean (None values left out)."""
    x = np.array([v for v in values if v is not None], dtype=float)
    if len(x) == 0:
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    if len(x) == 1:
        return {"mean": round(float(x[0]), 4), "lo": None, "hi": None, "n": 1}
    rng = np.random.default_rng(seed)
    boots = x[rng.integers(0, len(x), size=(N_BOOT, len(x)))].mean(axis=1)
    a = (1 - level) / 2
    return {"mean": round(float(x.mean()), 4), "lo": round(float(np.quantile(boots, a)), 4),
            "hi": round(float(np.quantile(boots, 1 - a)), 4), "n": int(len(x))}


def paired_delta_ci(after: Sequence[float | None], before: Sequence[float | None], level: float = 0.95,
                    seed: int = 0) -> dict[str, float | int | None]:
    """The mean of ``after - before`` over the pairs where both exist, with its bootstrap interval."""
    d = [a - b for a, b in zip(after, before) if a is not None and b is not None]
    return mean_ci(d, level, seed)


def fmt(ci: dict, digits: int = 2) -> str:
    """``0.73 [0.61, 0.84]``"""
    if ci.get("mean") is None:
        return "–"
    if ci.get("lo") is None:
        return f"{ci['mean']:.{digits}f}"
    return f"{ci['mean']:.{digits}f} [{ci['lo']:.{digits}f}, {ci['hi']:.{digits}f}]"
