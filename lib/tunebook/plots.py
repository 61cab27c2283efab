"""Plot helpers: every figure is shown inline once (a PNG in saved notebooks) and closed."""

from __future__ import annotations

from typing import Any, Sequence

import matplotlib.pyplot as plt

# CJK-capable fonts when the system has one; otherwise matplotlib falls back silently.
plt.rcParams["font.sans-serif"] = ["Noto Sans CJK SC", "WenQuanYi Zen Hei", "SimHei", "DejaVu Sans"]
plt.rcParams["axes.unicode_minus"] = False


def show(fig: Any) -> None:
    from IPython.display import display

    display(fig)
    plt.close(fig)


def histogram(values: Sequence[float], title: str, xlabel: str, bins: int = 30, limit: float | None = None):
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.hist(list(values), bins=bins, color="#4C72B0")
    if limit is not None:
        ax.axvline(limit, color="#C44E52", linestyle="--", label=f"limit {limit:g}")
        ax.legend()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    fig.tight_layout()
    return fig


def bars(labels: Sequence[str], values: Sequence[float], title: str, ylabel: str = "count"):
    fig, ax = plt.subplots(figsize=(max(5, 0.5 * len(labels) + 2), 3))
    ax.bar(range(len(labels)), list(values), color="#55A868")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(list(labels), rotation=45, ha="right", fontsize=8)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    fig.tight_layout()
    return fig


def loss_curve(train: Sequence[tuple[int, float]], evals: Sequence[tuple[int, float]] = (), title: str = "loss"):
    fig, ax = plt.subplots(figsize=(6, 3.2))
    if train:
        ax.plot([s for s, _ in train], [v for _, v in train], label="train loss", color="#4C72B0")
    if evals:
        ax.plot([s for s, _ in evals], [v for _, v in evals], "o-", label="eval loss", color="#C44E52")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    if train or evals:
        ax.legend()
    fig.tight_layout()
    return fig


def grouped_bars(groups: Sequence[str], series: dict[str, Sequence[float]], title: str, ylabel: str,
                 errors: dict[str, Sequence[tuple[float | None, float | None]]] | None = None):
    """Bars per group and series; ``errors`` (per series, one ``(lo, hi)`` per group) draws intervals."""
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(groups) * max(len(series), 1) / 2), 3.4))
    n = max(len(series), 1)
    width = 0.8 / n
    for i, (name, vals) in enumerate(series.items()):
        xs = [g + i * width for g in range(len(groups))]
        vals = [v if v is not None else 0.0 for v in vals]
        yerr = None
        if errors and name in errors:
            lo = [max(0.0, v - (e[0] if e[0] is not None else v)) for v, e in zip(vals, errors[name])]
            hi = [max(0.0, (e[1] if e[1] is not None else v) - v) for v, e in zip(vals, errors[name])]
            yerr = [lo, hi]
        ax.bar(xs, vals, width=width, label=name, yerr=yerr, capsize=3 if yerr else 0)
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))])
    ax.set_xticklabels(list(groups))
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
