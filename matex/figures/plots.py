"""The paper's figures from cached artifacts (colour-blind-safe palette, PNG and PDF)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .maps import qualitative_grid  # noqa: E402, F401  (the pipeline imports it from here)
from .style import new_figure  # noqa: E402

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


# The metrics drawn in metrics.png (every metric is in the tables): the M2IB confidence protocol, the
# causal curves, ROAD, localisation against the boxes, and the counterfactual lesion share.
HEADLINE_METRICS = (
    "img_conf_drop",
    "img_conf_increase",
    "txt_conf_drop",
    "txt_conf_increase",
    "deletion_auc",
    "insertion_auc",
    "road_gap",
    "pointing_game",
    "energy_in_box",
    "iou_top5",
    "auroc",
    "lesion_share",
)


def metric_bars(
    summary: pd.DataFrame, method_order: Sequence[str], metrics: Sequence[str] = HEADLINE_METRICS, per_row: int = 6
):
    """Two columns wide (7.16 in): one panel per metric of ``metrics`` present in ``summary`` (its label
    from ``METRICS``), a horizontal bar per method with its bootstrap interval (all findings); methods
    named once, on the left of each row of panels; controls hatched."""
    from ..metrics.aggregate import METRICS
    from .style import is_control, method_color

    overall = summary[summary["category"] == "all"]
    drawn = [c for c in metrics if c in set(overall["metric"])]
    panels = [(c, label) for c, label, _ in METRICS if c in drawn]
    methods = [m for m in method_order if m in set(overall["method"])]
    per_row = min(per_row, max(1, len(panels)))
    rows = max(1, -(-len(panels) // per_row))
    height = rows * (0.1 * len(methods) + 0.6) + 0.1
    fig, axes = new_figure("double", height, rows, per_row, sharey=True, squeeze=False)
    y = np.arange(len(methods))
    for ax, (metric, label) in zip(axes.ravel(), panels):
        d = overall[overall["metric"] == metric].set_index("method").reindex(methods)
        ax.barh(
            y,
            d["mean"],
            xerr=[d["mean"] - d["ci_low"], d["ci_high"] - d["mean"]],
            color=[method_color(m) for m in methods],
            hatch=["////" if is_control(m) else "" for m in methods],
            edgecolor="white",
            linewidth=0.3,
            error_kw={"elinewidth": 0.6, "capsize": 1.2, "ecolor": "black"},
        )
        ax.set_yticks(y, methods, fontsize=6.5)
        ax.xaxis.set_major_locator(plt.MaxNLocator(3))
        ax.tick_params(axis="x", labelsize=6.5)
        ax.set_title("\n".join(textwrap.wrap(label, 18)), fontsize=7)
    axes[0, 0].invert_yaxis()  # the first method on top (the y axis is shared)
    for ax in axes.ravel()[len(panels) :]:
        ax.axis("off")
    return fig


def _words(value) -> str:
    """A metric's label from ``METRICS``, a fusion weight's name, else the value with spaces."""
    from ..metrics.aggregate import METRICS

    labels = {c: label for c, label, _ in METRICS} | WEIGHT_LABELS
    return labels.get(value, str(value).replace("_", " ")) if isinstance(value, str) else f"{value:g}"


# MATEX's fusion weights (docs/method.md): what each one weighs
WEIGHT_LABELS = {
    "alpha": "α (gradient × prior)",
    "beta": "β (rollout)",
    "gamma": "γ (gradient × consistency)",
    "delta": "δ (prior)",
    "prior_strength": "prior strength λ_s",
}
AXIS_WORDS = {"λ_s": r"prior strength $\lambda_s$"}


def curves(df: pd.DataFrame, x: str, y: str, hue: str, title: str, xlabel: str, ylabel: str, col: str | None = None):
    """Lines of ``y`` against ``x``, one per ``hue`` value (ablation, λ sweep), in one panel per ``col``
    value if given. Metric and weight identifiers are written as words (``METRICS`` labels). One
    column wide (3.5 in) without ``col``; two (7.16 in, at most four panels a row) with it."""
    facets = list(dict.fromkeys(df[col])) if col else [None]
    per_row = min(4, len(facets))
    rows = -(-len(facets) // per_row)
    hues = list(dict.fromkeys(df[hue]))
    fig, axes = new_figure(
        "double" if col else "single", 1.75 * rows + 0.45 + 0.14 * len(hues), rows, per_row, squeeze=False
    )
    colours = dict(zip(hues, sns.color_palette(PALETTE, len(hues))))
    for ax, facet in zip(axes.ravel(), facets):
        sub = df if facet is None else df[df[col] == facet]
        for h in hues:
            line = sub[sub[hue] == h].groupby(x)[y].mean()
            ax.plot(line.index, line.to_numpy(), marker="o", markersize=3, color=colours[h], label=_words(h))
        if facet is not None:
            ax.set_title(_words(facet), fontsize=7.5)
        ax.set_xlabel(AXIS_WORDS.get(xlabel, xlabel))
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel)
    for ax in axes.ravel()[len(facets) :]:
        ax.axis("off")
    ncol = min(len(hues), 4 if col else 2)
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center", ncol=ncol, frameon=False)
    fig.suptitle("\n".join(textwrap.wrap(title, 95 if col else 48)), fontsize=8)
    return fig


def runtime_bars(runtime: pd.DataFrame, method_order: Sequence[str]):
    """One column wide (3.5 in): milliseconds per pair per method (median over pairs, with the
    interquartile range), horizontal bars on a log scale, the first method on top."""
    from .style import method_color, new_figure

    stats = runtime.groupby("method")["runtime_ms"].quantile([0.25, 0.5, 0.75]).unstack()
    stats = stats.reindex([m for m in method_order if m in stats.index])
    fig, ax = new_figure("single", 0.13 * len(stats) + 0.9)
    y = np.arange(len(stats))
    ax.barh(y, stats[0.5], color=[method_color(m) for m in stats.index])
    ax.errorbar(
        stats[0.5],
        y,
        xerr=[stats[0.5] - stats[0.25], stats[0.75] - stats[0.5]],
        fmt="none",
        ecolor="black",
        elinewidth=0.7,
    )
    ax.set_xscale("log")
    ax.set_yticks(y, stats.index, fontsize=6.5)
    ax.invert_yaxis()
    ax.set_xlabel("ms per pair (log scale)")
    ax.set_title("Attribution runtime per pair")
    return fig


def pipeline_runtime_bars(jobs: pd.DataFrame):
    """One column wide (3.5 in): summed wall time per Snakemake rule (horizontal bars, slowest on top)."""
    from ..metrics.runtime import per_rule
    from .style import new_figure

    table = per_rule(jobs).iloc[::-1]
    fig, ax = new_figure("single", 0.16 * len(table) + 0.9)
    ax.barh(table.index, table["total_s"], color=sns.color_palette(PALETTE, 1)[0])
    for y, (total, n) in enumerate(zip(table["total_s"], table["jobs"])):
        ax.text(total, y, f" {total:.0f} s ({n} job{'s' if n > 1 else ''})", va="center", fontsize=6)
    ax.set_xlabel("summed job wall time (s)")
    ax.set_title("Pipeline wall time per rule")
    ax.tick_params(axis="y", labelsize=6.5)
    ax.margins(x=0.45)
    return fig
