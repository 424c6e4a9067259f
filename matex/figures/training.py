"""Learning curves of the demo model (``train_log.json``): loss, and the three held-out targets
(zero-shot accuracy over the categories, text-to-image R@5, laterality), each with its chance level;
the per-pair zero-shot accuracy and the image-to-text R@5 are drawn lighter in the same panels."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib

matplotlib.use("Agg")

from .style import integer_ticks, new_figure

# (history key, chance key or fixed chance, title, target of the demo model, secondary key drawn lighter)
PANELS = [
    ("zero_shot_accuracy", "zero_shot_chance", "Zero-shot (per film)", 0.85, "zero_shot_accuracy_pairs"),
    ("t2i_r_at_5", "t2i_r_at_5_chance", "Text-to-image R@5", 0.45, "r_at_5"),
    ("laterality_accuracy", 0.5, "Laterality", 0.80, None),
]
SECONDARY_LABEL = {"zero_shot_accuracy_pairs": "per pair", "r_at_5": "image-to-text"}


def learning_curves(log: Mapping[str, Any]):
    """Two columns wide (7.16 in), 2 x 2 panels: training and validation loss, then one panel per held-out metric with its
    chance level (dotted) and the demo model's target (dashed)."""
    history = list(log.get("epochs", []))
    epochs = [row["epoch"] for row in history]
    fig, grid = new_figure("double", 4.6, 2, 2)  # 2 x 2, two columns wide
    axes = list(grid.flat)
    ax = axes[0]
    ax.plot(epochs, [row["train_loss"] for row in history], color="#333333", marker="o", markersize=3, label="train")
    if history and "val_loss" in history[0]:
        ax.plot(
            epochs, [row["val_loss"] for row in history], color="#CC3311", marker="o", markersize=3, label="validation"
        )
    ax.set(title="Contrastive loss", xlabel="epoch", ylabel="InfoNCE")
    integer_ticks(ax)
    ax.legend(frameon=False)
    for ax, (key, chance, title, target, secondary) in zip(axes[1:], PANELS):
        if key not in (history[-1] if history else {}) and secondary:  # a log written before the key existed
            key, secondary = secondary, None
        values = [row.get(key, float("nan")) for row in history]
        ax.plot(epochs, [100 * v for v in values], color="#CC3311", marker="o", markersize=3)
        if secondary and history and secondary in history[-1]:
            ax.plot(
                epochs,
                [100 * row.get(secondary, float("nan")) for row in history],
                color="#CC3311",
                alpha=0.45,
                linewidth=1,
                label=SECONDARY_LABEL[secondary],
            )
        level = chance if isinstance(chance, float) else (history[-1].get(chance) if history else None)
        if level is not None:
            ax.axhline(100 * level, color="#777777", linestyle=":", label="chance")
        ax.axhline(100 * target, color="#333333", linestyle="--", linewidth=1, label="target")
        ax.set(title=title, xlabel="epoch", ylabel="%", ylim=(0, 100))
        integer_ticks(ax)
        ax.legend(frameon=False, loc="best", fontsize="small")
    fig.suptitle(
        f"Demo model: {log.get('n_train', '?')} training pairs, {log.get('wall_time_s', '?')} s "
        f"on {log.get('threads', '?')} thread(s)",
        fontsize="medium",
    )
    return fig
