"""The cascading-randomisation figure (Adebayo et al. 2018): |Spearman rho| and SSIM between each
method's maps on the trained model and on copies randomised from the top, per cascade step, with
patient-bootstrap intervals. The image tower's cascade, the text tower's cascade and "full" (both
towers) are drawn as three segments. Lower = the map depends on the weights; MATEX drawn on top,
controls grey and dashed."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pandas as pd

from ..metrics.stats import PatientBootstrap
from .style import method_style, new_figure

MEASURES = (("abs_spearman", "|Spearman ρ|"), ("ssim", "SSIM"))
TOWER_TITLES = {"image": "image tower cascade", "text": "text tower cascade", "full": "full"}


def step_intervals(table: pd.DataFrame, n_resamples: int = 1000, ci: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Mean and percentile interval per (method, cascade_step, measure), resampling patients (the
    ``patient_id`` column; each pair its own cluster when absent) with one set of resamples for all."""
    cluster = table["patient_id"] if "patient_id" in table.columns else table["pair_id"]
    boot = PatientBootstrap(cluster.astype(str), n_resamples=n_resamples, ci=ci, seed=seed)
    rows = []
    for (method, step), grp in table.groupby(["method", "cascade_step"], sort=True):
        patients = (grp["patient_id"] if "patient_id" in grp.columns else grp["pair_id"]).astype(str)
        for column, _ in MEASURES:
            mean, low, high, n, _ = boot.mean_ci(grp[column].to_numpy(dtype=float), patients)
            rows.append(
                {
                    "method": method,
                    "cascade_step": step,
                    "measure": column,
                    "mean": mean,
                    "low": low,
                    "high": high,
                    "n": n,
                }
            )
    return pd.DataFrame(rows)


def _steps(table: pd.DataFrame) -> pd.DataFrame:
    cols = ["cascade_step", "randomized"] + (["tower"] if "tower" in table.columns else [])
    steps = table[cols].drop_duplicates("cascade_step").sort_values("cascade_step").reset_index(drop=True)
    if "tower" not in steps.columns:
        steps["tower"] = "image"
    # x positions: consecutive within a tower, a gap of one between towers
    gap = (steps["tower"] != steps["tower"].shift()).cumsum() - 1
    steps["x"] = np.arange(len(steps)) + gap.to_numpy()
    return steps


def sanity_cascade(
    table: pd.DataFrame, method_order: Sequence[str] = (), n_resamples: int = 1000, ci: float = 0.95, seed: int = 0
):
    """Two panels, one above the other (|rho|, SSIM): per method and cascade step the mean over pairs and its patient
    bootstrap interval (error bar; methods dodged sideways by up to 0.25), lines joining the steps within each
    tower's cascade; x ticks labelled by what has been randomised up to each step."""
    steps = _steps(table)
    stats = step_intervals(table, n_resamples, ci, seed).merge(steps, on="cascade_step")
    present = list(table["method"].unique())
    methods = [m for m in method_order if m in present] + [m for m in present if m not in method_order]
    fig, axes = new_figure("double", 6.8, 2, 1, sharex=True)  # two columns wide, constrained layout
    dodge = np.linspace(-0.25, 0.25, len(methods)) if len(methods) > 1 else np.zeros(1)
    for ax, (column, label) in zip(axes, MEASURES):
        for offset, method in zip(dodge, methods):
            style = method_style(method)
            cur = stats[(stats["method"] == method) & (stats["measure"] == column)].sort_values("x")
            for i, (_, seg) in enumerate(cur.groupby("tower", sort=False)):
                ax.plot(
                    seg["x"] + offset, seg["mean"], marker="o", markersize=3, label=method if i == 0 else None, **style
                )
            err = np.vstack([cur["mean"] - cur["low"], cur["high"] - cur["mean"]]).clip(min=0)
            ax.errorbar(
                cur["x"] + offset, cur["mean"], yerr=err, fmt="none", elinewidth=0.8, capsize=1.5,
                color=style.get("color"), alpha=0.7, zorder=style.get("zorder", 2),
            )  # fmt: skip
        for tower, seg in steps.groupby("tower", sort=False):
            ax.text(seg["x"].mean(), 1.04, TOWER_TITLES.get(tower, tower), ha="center", fontsize=7)
        for x in steps["x"][steps["tower"] != steps["tower"].shift()].iloc[1:]:
            ax.axvline(x - 1, color="0.6", lw=0.8, ls=":")
        ax.set_xticks(steps["x"].to_numpy(), steps["randomized"].tolist(), rotation=55, ha="right", fontsize=6.5)
        ax.set_ylim(-0.02, 1.1)
        ax.set_ylabel(f"{label}\n(lower = depends on the weights)", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, frameon=False, bbox_to_anchor=(1.01, 1), loc="upper left")
    pct = round(ci * 100)
    fig.suptitle(
        f"Cascading randomisation: maps of the randomised model vs the trained model's\n"
        f"(mean, {pct} % patient-bootstrap interval)",
        fontsize=9,
    )
    return fig
