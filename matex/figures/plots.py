"""The paper's figures from cached artifacts (colour-blind-safe palette, PNG and PDF)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from ..data.transforms import box_mask  # noqa: E402

PALETTE = "colorblind"


def save(fig, outputs: Sequence[str | Path], style: dict | None = None) -> None:
    """Save one figure to each requested path (format from the suffix), atomically. With ``style``
    (the ``figures.style`` config block) the figure is first scaled to the paper's column width."""
    from ..io import atomic_path
    from .style import active, fit_to_column, style_settings

    style = active() if style is None else style
    if style is not None:
        fit_to_column(fig, style)
    dpi = style_settings(style)["dpi"] if style is not None else 150
    for out in outputs:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=Path(out).suffix.lstrip("."))
    plt.close(fig)


def pick_qualitative_pairs(
    pairs: pd.DataFrame, explained: Sequence[str], per_category: int, fixed: Sequence[str] | None = None
) -> list[str]:
    """The configured pair ids, else the first ``per_category`` explained pairs of each category."""
    if fixed:
        return list(fixed)
    sub = pairs[pairs["pair_id"].isin(set(explained))]
    return [pid for _, grp in sub.groupby("category", sort=True) for pid in grp["pair_id"].head(per_category)]


def qualitative_grid(
    pairs: pd.DataFrame,
    images_u8: np.ndarray,
    maps: Mapping[str, Mapping[str, np.ndarray]],
    pair_ids: Sequence[str],
    show_images: bool = True,
):
    """Rows: pairs; columns: the image with its radiologist box, then each method's map overlaid.
    ``show_images=False`` draws maps on a grey background and labels rows by finding category, so
    neither the radiograph nor its report phrase ends up in the figure (MIMIC licence)."""
    methods = list(maps)
    row_of = {p: i for i, p in enumerate(pairs["pair_id"])}
    fig, axes = plt.subplots(
        len(pair_ids), len(methods) + 1, squeeze=False, figsize=(1.6 * (len(methods) + 1), 1.75 * len(pair_ids))
    )
    for r, pid in enumerate(pair_ids):
        row = pairs.iloc[row_of[pid]]
        img = images_u8[row_of[pid]]
        mask = box_mask([tuple(b) for b in row["boxes"]], img.shape[0])
        background = img if show_images else np.full_like(img, 128)
        axes[r, 0].imshow(background, cmap="gray", vmin=0, vmax=255)
        axes[r, 0].contour(mask, levels=[0.5], colors="#56B4E9", linewidths=1.0)
        # MIMIC's licence covers the report phrases too: without images, label rows by category only
        label = str(row["phrase"]) if show_images else str(row["category"])
        axes[r, 0].set_title(label if len(label) < 34 else label[:31] + "...", fontsize=6)
        for c, m in enumerate(methods, start=1):
            axes[r, c].imshow(background, cmap="gray", vmin=0, vmax=255)
            axes[r, c].imshow(maps[m][pid].astype(np.float32), cmap="viridis", alpha=0.55, vmin=0, vmax=1)
            axes[r, c].contour(mask, levels=[0.5], colors="#E69F00", linewidths=0.8)
            if r == 0:  # slanted: 17 method names side by side at a paper's width would overlap
                axes[r, c].set_title(m, fontsize=7, rotation=35, ha="left", x=0.15)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


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
