"""Figure of the text-guided spatial prior (docs/method.md) for one phrase per category, laid on the
model input exactly as the pair's boxes are (issue 12, finding 10), with the regions the parser read
and their weights: the audit of what the phrase alone contributes to MATEX and prior_only."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pandas as pd

from ..data.transforms import box_mask
from ..priors import parse_phrase, spatial_prior
from .style import method_color


def prior_grid(
    pairs: pd.DataFrame,
    images_u8: np.ndarray,
    pair_ids: Sequence[str],
    *,
    sigma: float = 0.1,
    strength: float = 2.5,
    input_mode: str = "center_crop",
    show_images: bool = True,
):
    """Two columns wide (7.16 in), four panels a row, one per pair: the input image (or a blank, when
    images may not be shown), the prior P as a heat map with its contour, the radiologist boxes, R/L
    marks (the patient's sides), the category and phrase above and the parse (regions and weights,
    in words) below."""
    from .maps import mark_sides
    from .style import new_figure

    index = {pid: i for i, pid in enumerate(pairs["pair_id"])}
    n = len(pair_ids)
    cols = min(4, max(1, n))
    rows = -(-n // cols)
    fig, axes = new_figure("double", 2.55 * rows + 0.3, rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, pid in zip(axes.flat, pair_ids):
        i = index[pid]
        pair = pairs.iloc[i]
        size = images_u8.shape[1:]
        prior = spatial_prior(
            pair["phrase"],
            size,
            sigma=sigma,
            strength=strength,
            image_size=(int(pair["image_height"]), int(pair["image_width"])),
            input_mode=input_mode,
        )
        background = images_u8[i] if show_images else np.full(size, 255, np.uint8)
        ax.axis("on")
        ax.imshow(background, cmap="gray", vmin=0, vmax=255)
        ax.imshow(prior, cmap="magma", alpha=0.45, vmin=1.0, vmax=max(strength, 1.0 + 1e-6))
        if prior.max() > 1.0:
            ax.contour(
                prior, levels=[1.0 + 0.5 * (prior.max() - 1.0)], colors=[method_color("prior_only")], linewidths=1.0
            )
        boxes = box_mask([tuple(b) for b in pair["boxes"]], size)
        ax.contour(boxes, levels=[0.5], colors=["#00CC66"], linewidths=1.2)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.spines[:].set_visible(False)
        mark_sides(ax)
        parse = parse_phrase(pair["phrase"])
        read = ", ".join(f"{r.name.replace('_', ' ')} {w:.1f}" for r, w in zip(parse.regions, parse.weights))
        flags = "".join([" [negated]" if parse.negated else "", " [hedged]" if parse.uncertain else ""])
        phrase = textwrap.wrap(f'"{pair["phrase"]}"', 30)
        phrase = phrase[:2] if len(phrase) <= 2 else [phrase[0], textwrap.shorten(" ".join(phrase[1:]), 30)]
        ax.set_title(f"{pair['category']}\n" + "\n".join(phrase), fontsize=7)
        ax.set_xlabel("\n".join(textwrap.wrap((read or "flat (no location)") + flags, 34)[:3]), fontsize=6.5)
    fig.suptitle("Text-guided spatial prior P per phrase (green: radiologist boxes; R/L: patient's sides)", fontsize=8)
    return fig
