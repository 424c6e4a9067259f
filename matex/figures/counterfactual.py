"""What each method sees: per method, the mean share of its map's mass on the lesion against the
share on the chest drain (the planted shortcut), on the synthetic films with a drain."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..metrics.counterfactual_controls import BASELINES, ORACLES
from .style import is_control, method_color

CONTROLS = (*ORACLES, *BASELINES)


def lesion_vs_drain(metrics: pd.DataFrame, method_order: list[str] | None = None):
    """Scatter of mean lesion share (x) vs mean drain share (y), one point per method, with
    standard errors over pairs; only pairs whose film has a drain. Pairs where the
    model relies more on the drain than on the lesion (ΔS_drain > ΔS_lesion) are counted in the title."""
    with_drain = metrics[metrics["has_drain"]] if "has_drain" in metrics else metrics
    # the oracle maps sit at (100, 0) and (0, 100) by construction; the map-free rankings have no map
    with_drain = with_drain[~with_drain["method"].isin(CONTROLS)]
    methods = [m for m in (method_order or []) if m in set(with_drain["method"])]
    methods += sorted(set(with_drain["method"]) - set(methods))
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    for m in methods:
        d = with_drain[with_drain["method"] == m]
        x, y = d["lesion_share"].dropna(), d["drain_share"].dropna()
        if not len(x) or not len(y):
            continue
        ax.errorbar(
            100 * x.mean(),
            100 * y.mean(),
            xerr=100 * x.sem() if len(x) > 1 else None,
            yerr=100 * y.sem() if len(y) > 1 else None,
            fmt="s" if is_control(m) else "o",
            color=method_color(m),
            markersize=7 if m == "matex" else 5,
            capsize=2,
            label=m,
            zorder=5 if m == "matex" else 2,
        )
    one = with_drain.drop_duplicates("pair_id")
    relies = int((one["delta_s_drain"] > one["delta_s_lesion"]).sum()) if "delta_s_drain" in one else 0
    lim = max(ax.get_xlim()[1], ax.get_ylim()[1], 1.0)
    ax.plot([0, lim], [0, lim], color="#BBBBBB", linewidth=0.8, linestyle=":")
    ax.set(
        xlabel="map mass on the lesion (%)",
        ylabel="map mass on the chest drain (%)",
        xlim=(0, lim),
        ylim=(0, lim),
        title=f"What each method sees ({len(one)} pairs with a drain;\n"
        f"the model relies more on the drain than on the lesion in {relies})",
    )
    ax.legend(frameon=False, fontsize=7, ncol=2, loc="upper right")
    fig.tight_layout()
    return fig


def counterfactual_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean of each counterfactual metric per method (NaN-aware), for the note and the figure."""
    cols = [
        "lesion_share",
        "drain_share",
        "counterfactual_agreement",
        "counterfactual_agreement_nonlesion",
        "shortcut_test",
    ]
    return metrics.groupby("method")[cols].agg(lambda s: float(np.nanmean(s)) if s.notna().any() else np.nan)
