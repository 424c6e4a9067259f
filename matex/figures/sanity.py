"""The cascading-randomisation figure (Adebayo et al. 2018): |Spearman rho| and SSIM between each
method's maps on the trained model and on copies randomised from the top, per cascade step.
Lower = the map depends on the weights; MATEX drawn on top, controls grey and dashed."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from .style import method_style

MEASURES = (("abs_spearman", "|Spearman ρ|"), ("ssim", "SSIM"))


def sanity_cascade(table: pd.DataFrame, method_order: Sequence[str] = ()):
    """Two panels (|rho|, SSIM), mean over pairs per method and cascade step; the x ticks are the
    integer steps, labelled by what has been randomised up to them."""
    steps = table[["cascade_step", "randomized"]].drop_duplicates("cascade_step").sort_values("cascade_step")
    means = table.groupby(["method", "cascade_step"])[[m for m, _ in MEASURES]].mean()
    present = list(table["method"].unique())
    methods = [m for m in method_order if m in present] + [m for m in present if m not in method_order]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharex=True)
    for ax, (column, label) in zip(axes, MEASURES):
        for method in methods:
            curve = means.loc[method, column]
            ax.plot(curve.index, curve.to_numpy(), marker="o", markersize=3, label=method, **method_style(method))
        ax.set_xticks(
            steps["cascade_step"].to_numpy(), steps["randomized"].tolist(), rotation=45, ha="right", fontsize=7
        )
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel(f"{label} (lower = depends on the weights)", fontsize=8)
        ax.set_xlabel("randomised, cumulatively from the top", fontsize=8)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, frameon=False, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.suptitle("Cascading randomisation: maps of the randomised model vs the trained model's", fontsize=10)
    fig.tight_layout()
    return fig
