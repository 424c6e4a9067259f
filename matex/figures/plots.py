"""The paper's figures from cached artifacts (colour-blind-safe palette, PNG and PDF)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .maps import qualitative_grid  # noqa: E402, F401  (the pipeline imports it from here)

PALETTE = "colorblind"


def finalise(fig, style: dict | None = None):
    """``fig`` as ``save`` writes it: scaled to the configured column width when a style is set."""
    from .style import active, fit_to_column

    style = active() if style is None else style
    if style is not None:
        fit_to_column(fig, style)
    return fig


def save(fig, outputs: Sequence[str | Path], style: dict | None = None) -> None:
    """Save one figure to each requested path (format from the suffix), atomically. With ``style``
    (the ``figures.style`` config block) the figure is first scaled to the paper's column width."""
    from ..io import atomic_path
    from .style import active, style_settings

    style = active() if style is None else style
    finalise(fig, style)
    dpi = style_settings(style)["dpi"] if style is not None else 150
    # a figure drawn for a column width is written at that width; others are trimmed to their content
    bbox = None if getattr(fig, "matex_width", None) else "tight"
    for out in outputs:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches=bbox, format=Path(out).suffix.lstrip("."))
    plt.close(fig)


def pick_qualitative_pairs(
    pairs: pd.DataFrame, explained: Sequence[str], per_category: int, fixed: Sequence[str] | None = None
) -> list[str]:
    """The configured pair ids, else the first ``per_category`` explained pairs of each category."""
    if fixed:
        return list(fixed)
    sub = pairs[pairs["pair_id"].isin(set(explained))]
    return [pid for _, grp in sub.groupby("category", sort=True) for pid in grp["pair_id"].head(per_category)]


def metric_bars(summary: pd.DataFrame, method_order: Sequence[str]):
    """One panel per metric: mean with its bootstrap interval, per method (all findings)."""
    from ..metrics.aggregate import METRICS

    overall = summary[summary["category"] == "all"]
    metrics = [(c, label) for c, label, _ in METRICS if c in set(overall["metric"])]
    cols = 3
    rows = int(np.ceil(len(metrics) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    from .style import is_control, method_color

    for ax, (metric, label) in zip(axes.ravel(), metrics):
        d = (
            overall[overall["metric"] == metric]
            .set_index("method")
            .reindex([m for m in method_order if m in set(overall["method"])])
        )
        x = np.arange(len(d))
        ax.bar(
            x,
            d["mean"],
            color=[method_color(m) for m in d.index],
            hatch=["//" if is_control(m) else "" for m in d.index],
            edgecolor="white",
            linewidth=0.3,
        )
        ax.errorbar(
            x,
            d["mean"],
            yerr=[d["mean"] - d["ci_low"], d["ci_high"] - d["mean"]],
            fmt="none",
            ecolor="black",
            elinewidth=0.8,
            capsize=2,
        )
        ax.set_xticks(x, d.index, rotation=60, ha="right", fontsize=7)
        ax.set_title(label, fontsize=9)
    for ax in axes.ravel()[len(metrics) :]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def curves(df: pd.DataFrame, x: str, y: str, hue: str, title: str, xlabel: str, ylabel: str, col: str | None = None):
    """Line plot with one line per ``hue`` (ablation, lambda sweep, sanity)."""
    g = sns.relplot(
        data=df,
        x=x,
        y=y,
        hue=hue,
        col=col,
        kind="line",
        marker="o",
        palette=PALETTE,
        height=2.8,
        aspect=1.2,
        facet_kws={"sharey": False},
    )
    g.set_axis_labels(xlabel, ylabel)
    g.figure.suptitle(title, y=1.03, fontsize=10)
    return g.figure


def runtime_bars(runtime: pd.DataFrame, method_order: Sequence[str]):
    """Milliseconds per pair per method (median over pairs, with the interquartile range)."""
    stats = runtime.groupby("method")["runtime_ms"].quantile([0.25, 0.5, 0.75]).unstack()
    stats = stats.reindex([m for m in method_order if m in stats.index])
    fig, ax = plt.subplots(figsize=(6, 3))
    x = np.arange(len(stats))
    from .style import method_color

    ax.bar(x, stats[0.5], color=[method_color(m) for m in stats.index])
    ax.errorbar(x, stats[0.5], yerr=[stats[0.5] - stats[0.25], stats[0.75] - stats[0.5]], fmt="none", ecolor="black")
    ax.set_yscale("log")
    ax.set_xticks(x, stats.index, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("ms per pair (log)")
    ax.set_title("Attribution runtime per pair")
    fig.tight_layout()
    return fig


def pipeline_runtime_bars(jobs: pd.DataFrame):
    """Summed wall time per Snakemake rule (horizontal bars, slowest on top)."""
    from ..metrics.runtime import per_rule

    table = per_rule(jobs).iloc[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(table) + 1.2))
    ax.barh(table.index, table["total_s"], color=sns.color_palette(PALETTE, 1)[0])
    for y, (total, n) in enumerate(zip(table["total_s"], table["jobs"])):
        ax.text(total, y, f" {total:.0f} s ({n} job{'s' if n > 1 else ''})", va="center", fontsize=7)
    ax.set_xlabel("summed job wall time (s)")
    ax.set_title("Pipeline wall time per rule")
    ax.margins(x=0.25)
    fig.tight_layout()
    return fig
