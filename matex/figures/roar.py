"""The ROAR figure: the retrained model's measure on degraded validation pairs against the removed
fraction k, one line per method (Hooker et al. 2019, Fig. 4's layout), with its area in the legend."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .style import method_style  # noqa: E402

# (measure, axis label, scale to the plotted unit, chance column)
PANELS = [
    ("zero_shot_accuracy", "zero-shot accuracy (%)", 100.0, "zero_shot_chance"),
    ("val_loss", "validation contrastive loss", 1.0, None),
]


def roar_curve_figure(curve: pd.DataFrame, method_order: Sequence[str] = (), caption: str | None = None):
    """One panel per measure in ``curve`` (``matex.roar.curve.roar_curve``'s table): mean over seeds
    with a ±sd band where there are several seeds, k on x in integer percent, the chance level dotted."""
    from ..roar.curve import auc_table

    panels = [p for p in PANELS if p[0] in curve.columns]
    aucs = auc_table(curve).set_index("method")
    methods = [m for m in method_order if m in set(curve["method"])]
    methods += [m for m in dict.fromkeys(curve["method"]) if m not in methods]
    ks = sorted(set(curve["k_percent"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.4), squeeze=False)
    for ax, (measure, label, scale, chance) in zip(axes[0], panels):
        for m in methods:
            grp = curve[curve["method"] == m].sort_values("k")
            x, y = grp["k_percent"].to_numpy(), grp[measure].to_numpy(dtype=float) * scale
            auc = aucs.loc[m, f"auc_{measure}"] if m in aucs.index else np.nan
            name = f"{m} (AUC {auc * scale:.2f})" if np.isfinite(auc) else m
            ax.plot(x, y, marker="o", markersize=3.5, label=name, **method_style(m))
            sd = grp.get(f"{measure}_sd")
            if sd is not None and np.isfinite(sd.to_numpy(dtype=float)).any():
                s = np.nan_to_num(sd.to_numpy(dtype=float)) * scale
                ax.fill_between(x, y - s, y + s, color=method_style(m)["color"], alpha=0.12, linewidth=0)
        if chance and chance in curve.columns:
            ax.axhline(float(curve[chance].mean()) * scale, color="black", linestyle=":", linewidth=0.9, label="chance")
        ax.set_xticks(ks)
        ax.set_xticklabels([f"{k:d}" for k in ks])
        ax.set_xlabel("pixels removed from train and validation images, k (%)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5, frameon=False)
    fig.suptitle("ROAR: retrained on degraded images, measured on degraded validation pairs", fontsize=9)
    if caption:
        fig.text(0.01, -0.02, caption, fontsize=6, wrap=True, va="top")
    fig.tight_layout()
    return fig
