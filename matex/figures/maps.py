"""Figures of attribution maps on radiographs: the qualitative grid of the pipeline and the components
row of ``matex explain --components``. Both share one colour bar, show the phrase, and mark the
patient's sides on every radiograph panel.

Scale: every map panel is min-max normalised on its own (0 = the map's lowest value, 1 = its
highest; a constant map is drawn as all 0), so the colour compares places within one panel, not the
strength of two methods. Sides: radiological convention for PA/AP films, the patient's right on the
image's left, so "R" is written at each panel's left edge and "L" at its right edge."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.patheffects as pe  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .style import COLUMN_WIDTH_IN  # noqa: E402

CMAP = "viridis"
MAP_ALPHA = 0.55
SCALE_LABEL = "map value, min-max normalised per panel"
BOX_COLOUR = "#E69F00"
# MATEX's components in words (matex/attribution/matex_method.py names them)
COMPONENT_LABELS = {
    "rollout": "attention rollout",
    "consistency": "layer consistency C",
    "gradient": "similarity gradient G",
    "prior": "text prior P",
    "grad_prior": "G × P",
    "grad_consistency": "G × C",
}


def minmax(a: np.ndarray) -> np.ndarray:
    """``a`` scaled to [0, 1] (a constant or empty map becomes zeros, never NaN)."""
    a = np.nan_to_num(np.asarray(a, dtype=np.float32))
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi - lo > 1e-12 * max(abs(hi), abs(lo), 1.0) else np.zeros_like(a)


def mark_sides(ax, fontsize: float = 6.0) -> None:
    """'R' at the panel's left edge and 'L' at its right edge (the patient's sides on a PA/AP film)."""
    halo = [pe.withStroke(linewidth=1.5, foreground="black")]
    for x, ha, side in ((0.03, "left", "R"), (0.97, "right", "L")):
        ax.text(
            x, 0.04, side, transform=ax.transAxes, ha=ha, va="bottom", color="white", fontsize=fontsize,
            fontweight="bold", path_effects=halo,
        )  # fmt: skip


def map_panel(ax, background: np.ndarray, heat: np.ndarray | None, mask: np.ndarray | None = None) -> None:
    """A radiograph (grey) with ``heat`` min-max normalised on top, the box outline, the side marks."""
    ax.imshow(background, cmap="gray", vmin=0, vmax=255)
    if heat is not None:
        ax.imshow(minmax(heat), cmap=CMAP, alpha=MAP_ALPHA, vmin=0, vmax=1)
    if mask is not None and mask.any():
        ax.contour(mask, levels=[0.5], colors=BOX_COLOUR, linewidths=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.spines[:].set_visible(False)
    mark_sides(ax)


def colour_bar(fig, cax=None, axes=None, fontsize: float = 6.5, label: str = SCALE_LABEL) -> None:
    """The scale shared by every map panel of ``fig``: drawn in ``cax``, or beside ``axes``."""
    mappable = plt.cm.ScalarMappable(cmap=CMAP, norm=plt.Normalize(0, 1))
    where = {"cax": cax} if cax is not None else {"ax": axes, "fraction": 0.015, "pad": 0.01, "aspect": 12}
    bar = fig.colorbar(mappable, ticks=[0, 0.5, 1], **where)
    bar.ax.tick_params(labelsize=fontsize, length=2)
    bar.set_label(label, fontsize=fontsize)


def qualitative_grid(
    pairs: pd.DataFrame,
    images_u8: np.ndarray,
    maps: Mapping[str, Mapping[str, np.ndarray]],
    pair_ids: Sequence[str],
    show_images: bool = True,
):
    """Two columns wide (7.16 in; at most ~9.5 in tall): one column per pair, lettered (a), (b), ...;
    the first row the input with its radiologist box, then one row per method, its map (min-max
    normalised per panel) over the input. Below: each letter's finding category and phrase. With
    ``show_images=False`` the maps lie on a grey background and only the category is written, so
    neither a radiograph nor a report phrase ends up in the figure (MIMIC licence)."""
    from ..data.transforms import box_mask

    methods = list(maps)
    row_of = {p: i for i, p in enumerate(pairs["pair_id"])}
    rows, cols = len(methods) + 1, len(pair_ids)
    label_w, bar_w, head = 0.85, 0.55, 0.22
    lines = _pair_key(pairs, row_of, pair_ids, show_images)
    key: list[str] = []
    for _ in range(2):  # the key's height sets the panels' size, which sets the width the key wraps to
        foot = 0.12 * max(len(key), len(lines)) + 0.12
        side = min(0.75, (COLUMN_WIDTH_IN["double"] - label_w - bar_w) / max(cols, 1), (9.5 - head - foot) / rows)
        width = label_w + cols * side + bar_w
        key = [w for line in lines for w in textwrap.wrap(line, int(width * 19), subsequent_indent="     ")]
    height = head + rows * side + foot
    fig = plt.figure(figsize=(width, height))
    fig.matex_width = "double"
    for c, pid in enumerate(pair_ids):
        row = pairs.iloc[row_of[pid]]
        img = images_u8[row_of[pid]]
        mask = box_mask([tuple(b) for b in row["boxes"]], img.shape[0])
        background = img if show_images else np.full_like(img, 128)
        for r, method in enumerate([None, *methods]):
            left, bottom = (label_w + c * side) / width, (foot + (rows - 1 - r) * side) / height
            ax = fig.add_axes((left, bottom, 0.96 * side / width, 0.96 * side / height))
            map_panel(ax, background, None if method is None else maps[method][pid], mask)
            if r == 0:
                ax.set_title(f"({chr(97 + c)})", fontsize=7, pad=2)
            if c == 0:
                ax.set_ylabel("input" if method is None else method, rotation=0, ha="right", va="center", fontsize=7)
    cax = fig.add_axes(((width - bar_w + 0.08) / width, foot / height, 0.08 / width, (rows - 1) * side / height))
    colour_bar(fig, cax)
    fig.text(
        0.1 / width, 0.05 / height, "\n".join(key), fontsize=6.5, va="bottom", ha="left", linespacing=1.25
    )  # fmt: skip
    return fig


def _pair_key(pairs: pd.DataFrame, row_of: Mapping[str, int], pair_ids: Sequence[str], show: bool) -> list[str]:
    """One line per drawn pair: its letter, category and (when images may be shown) phrase."""
    lines = []
    for c, pid in enumerate(pair_ids):
        row = pairs.iloc[row_of[pid]]
        text = f"({chr(97 + c)}) {row['category']}" + (f': "{row["phrase"]}"' if show else "")
        lines.append(textwrap.shorten(text, 110, placeholder=' ..."'))
    lines.append("Orange outline: radiologist box. R/L: the patient's right/left.")
    return lines


def components_figure(
    grey: np.ndarray,
    fused: np.ndarray,
    components: Mapping[str, np.ndarray],
    phrase: str,
    method: str = "matex",
    box: Sequence[float] | None = None,
    panel_in: float = 0.896,
):
    """One row, ``panel_in`` inches per panel (MATEX's 8 panels: 7.17 in, two columns): the input with
    the box, the fused map, then each component, each map min-max normalised per panel, with one
    colour bar and the phrase above."""
    n = 2 + len(components)
    fig = plt.figure(figsize=(n * panel_in, panel_in + 0.62), layout="constrained")
    fig.matex_width = "double" if n * panel_in > COLUMN_WIDTH_IN["single"] + 0.01 else "single"
    mask = None
    if box is not None:
        x0, y0, x1, y1 = (int(round(float(v))) for v in box)
        mask = np.zeros(grey.shape, bool)
        mask[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = True
    panels = [("input", None), (f"{method} (fused map)", fused)]
    panels += [(COMPONENT_LABELS.get(k, k.replace("_", " ")), v) for k, v in components.items()]
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (label, heat) in zip(axes, panels):
        map_panel(ax, grey, heat, mask)
        ax.set_title("\n".join(textwrap.wrap(label, 13)), fontsize=6.5, pad=2)
    colour_bar(fig, axes=list(axes), fontsize=6, label="min-max per panel")
    fig.suptitle(textwrap.shorten(f'"{phrase}"', 110), fontsize=7.5)
    return fig


def figure_to_pil(fig, width_px: int, dpi: float):
    """``fig`` rendered at ``dpi`` as a PIL RGB image exactly ``width_px`` wide (closes the figure)."""
    from PIL import Image

    fig.set_size_inches(width_px / dpi, fig.get_size_inches()[1])
    fig.set_dpi(dpi)
    fig.canvas.draw()
    img = Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
    plt.close(fig)
    if img.width != width_px:  # rounding of inches x dpi
        img = img.resize((width_px, round(img.height * width_px / img.width)), Image.Resampling.LANCZOS)
    return img
