"""One fixed look per method across every figure: MATEX a strong colour drawn on top, the baselines
distinct colours that never change between figures, the controls grey and dashed.

Use ``method_style(name)`` for lines and ``method_color(name)`` for bars, so that a method keeps its
colour whichever subset of methods a figure shows."""

from __future__ import annotations

from typing import Any

MATEX_COLOR = "#C0392B"  # strong red: MATEX stands out in every figure

# Baselines: distinct, colour-blind-aware hues (Okabe-Ito first, then Tol's muted set); MATEX's red is
# not among them.
METHOD_COLORS: dict[str, str] = {
    "matex": MATEX_COLOR,
    "matex_noprior": "#E67E73",  # MATEX's family, lighter
    "raw_attention": "#0072B2",
    "rollout": "#56B4E9",
    "gradcam": "#009E73",
    "chefer": "#E69F00",
    "saliency": "#CC79A7",
    "grad_input": "#882255",
    "rise": "#332288",
    "m2ib": "#117733",
    "m2ib_token": "#44AA99",
    "m2ib_cxr": "#228833",  # M2IB's family
    "nib": "#004488",
    "legrad": "#AA4499",
    "grad_eclip": "#DDCC77",
}

# Controls: maps that look at neither the model's evidence nor (for some) the image. Grey, dashed.
CONTROL_COLORS: dict[str, str] = {
    "random": "#7F7F7F",
    "prior_only": "#4D4D4D",
    "sobel": "#A6A6A6",
    "mean_box": "#636363",
    "category_box": "#969696",
    "clean": "#BDBDBD",
    # the ground-truth study's oracles and map-free orderings (synthetic films)
    "lesion_mask": "#2F2F2F",
    "drain_mask": "#8C8C8C",
    "fixed_order": "#B0B0B0",
    "area_order": "#737373",
}

# Methods a figure may show that are not listed above get a colour from this spare list, chosen by
# a stable hash of the name (never by their position in a figure).
_SPARE = ["#6699CC", "#997700", "#994455", "#EE99AA", "#BBBBBB", "#66CCEE"]


def is_control(name: str) -> bool:
    """Controls (random, prior-only, edge and box maps) are drawn grey and dashed."""
    return name in CONTROL_COLORS


def method_color(name: str) -> str:
    """The fixed colour of ``name``."""
    if name in METHOD_COLORS:
        return METHOD_COLORS[name]
    if name in CONTROL_COLORS:
        return CONTROL_COLORS[name]
    return _SPARE[sum(name.encode()) % len(_SPARE)]


def method_style(name: str) -> dict[str, Any]:
    """Matplotlib line keywords for ``name``: colour, dash pattern, width and drawing order."""
    style: dict[str, Any] = {"color": method_color(name), "linestyle": "-", "linewidth": 1.4, "zorder": 2}
    if is_control(name):
        style.update(linestyle="--", linewidth=1.1, zorder=1)
    if name == "matex":
        style.update(linewidth=2.6, zorder=5)
    return style


def palette(names: list[str]) -> dict[str, str]:
    """``{name: colour}`` for seaborn's ``palette=`` argument."""
    return {n: method_color(n) for n in names}


# ------------------------------------------------------------------------------ paper sizes
# Text widths of a two-column paper (inches): a figure set at one of them prints at 100 %.
COLUMN_WIDTH_IN = {"single": 3.5, "double": 7.16}


def style_settings(style: dict[str, Any] | None) -> dict[str, Any]:
    """The ``figures.style`` config block with its defaults filled in: ``width`` (single | double column),
    ``font_size`` (pt, as printed) and ``dpi`` of raster outputs."""
    out = {"width": "double", "font_size": 8, "dpi": 300}
    out.update({k: v for k, v in (style or {}).items() if v is not None})
    if out["width"] not in COLUMN_WIDTH_IN:
        from ..errors import ConfigError

        raise ConfigError(f"figures.style.width: expected one of {sorted(COLUMN_WIDTH_IN)}, got {out['width']!r}")
    return out


def rc_params(style: dict[str, Any] | None) -> dict[str, Any]:
    """Matplotlib settings for figures printed at the configured size: fonts in points as printed,
    thin spines, no top/right frame."""
    s = style_settings(style)
    fs = float(s["font_size"])
    return {
        "font.size": fs,
        "axes.titlesize": fs + 1,
        "axes.labelsize": fs,
        "xtick.labelsize": fs - 1,
        "ytick.labelsize": fs - 1,
        "legend.fontsize": fs - 1,
        "axes.linewidth": 0.6,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "savefig.dpi": int(s["dpi"]),
    }


def new_figure(width: str, height: float, nrows: int = 1, ncols: int = 1, **kwargs: Any):
    """A figure drawn for one paper column (``width="single"``, 3.5 in) or two (``"double"``, 7.16 in),
    ``height`` inches tall, laid out by matplotlib's constrained layout (titles, labels and legends get
    their room again whenever the figure is resized). Returns ``(fig, axes)`` like ``plt.subplots``."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows, ncols, figsize=(COLUMN_WIDTH_IN[width], height), layout="constrained", **kwargs)
    fig.matex_width = width
    return fig, axes


def fit_to_column(fig, style: dict[str, Any] | None) -> None:
    """Scale ``fig`` to the configured column width. A figure made by :func:`new_figure` keeps the width
    it was drawn at (its stated column and the configured width are then upper bounds: a two-column figure in a
    one-column setting is narrowed and laid out again); any other keeps its aspect ratio (fonts keep
    their size in points, so text reads the same in every figure)."""
    s = style_settings(style)
    w, h = fig.get_size_inches()
    target = COLUMN_WIDTH_IN[s["width"]]
    if getattr(fig, "matex_width", None) in COLUMN_WIDTH_IN:
        fig.set_size_inches(min(w, COLUMN_WIDTH_IN[fig.matex_width], target), h)
        return
    fig.set_size_inches(target, h * target / w)


def integer_ticks(ax, axis: str = "x") -> None:
    """Ticks only at whole numbers, for axes that count things (blocks, steps, pairs)."""
    from matplotlib.ticker import MaxNLocator

    (ax.xaxis if axis == "x" else ax.yaxis).set_major_locator(MaxNLocator(integer=True))


_ACTIVE: dict[str, Any] | None = None


def use(style: dict[str, Any] | None) -> None:
    """Apply the ``figures.style`` block to every figure made from now on in this process (the
    pipeline calls it before each figure step; ``save`` then scales figures to the column width)."""
    import matplotlib

    global _ACTIVE
    _ACTIVE = style_settings(style)
    matplotlib.rcParams.update(rc_params(_ACTIVE))


def active() -> dict[str, Any] | None:
    """The style set by :func:`use`, or None (figures keep their own sizes)."""
    return _ACTIVE


# ------------------------------------------------------------------------------ legibility checks
# A text counts as colliding when two boxes overlap by more than this many pixels (at 100 dpi) in
# both directions: touching boxes (a tick label's edge on the next) do not count.
_OVERLAP_TOL_PX = 0.5


def drawn_texts(fig) -> list[tuple[Any, str]]:
    """Every non-empty text artist that a draw of ``fig`` actually renders, with a short description
    of what it is (suptitle, panel title, tick label, legend entry, ...). Draws the canvas."""
    import matplotlib.text

    drawn: dict[int, Any] = {}
    original = matplotlib.text.Text.draw

    def record(self, renderer):
        if self.get_visible() and self.get_text().strip():
            drawn[id(self)] = self
        return original(self, renderer)

    matplotlib.text.Text.draw = record
    try:
        fig.canvas.draw()
    finally:
        matplotlib.text.Text.draw = original
    roles = _roles(fig)
    return [(t, _describe(t, roles.get(id(t), "text"))) for t in drawn.values()]


def _roles(fig) -> dict[int, str]:
    """What each text of ``fig`` is (suptitle, panel title, ...), by the text's id."""
    roles: dict[int, str] = {}
    for k, ax in enumerate(fig.axes):
        for t in ax.get_xticklabels() + ax.get_yticklabels():
            roles[id(t)] = f"tick label of panel {k}"
        roles.update({id(t): f"axis label of panel {k}" for t in (ax.xaxis.label, ax.yaxis.label)})
        roles.update({id(t): f"title of panel {k}" for t in (ax.title, ax._left_title, ax._right_title)})
        if ax.get_legend() is not None:
            roles.update({id(t): f"legend of panel {k}" for t in ax.get_legend().get_texts()})
    for legend in fig.legends:
        roles.update({id(t): "figure legend" for t in legend.get_texts()})
    if getattr(fig, "_suptitle", None) is not None:
        roles[id(fig._suptitle)] = "suptitle"
    return roles


def _describe(t, role: str) -> str:
    """What the text is and what it says, for an error message a person can act on."""
    words = " ".join(t.get_text().split())
    words = words if len(words) <= 40 else words[:37] + "..."
    return f"{role} {words!r}"


def _corners(t, renderer) -> Any:
    """The four corners (pixels) of ``t``'s rotated text box: the rotated rectangle inscribed in its
    axis-aligned window extent, so that slanted tick labels side by side are not counted as touching."""
    import numpy as np

    box = t.get_window_extent(renderer)
    theta = float(t.get_rotation()) % 180.0
    if theta > 90.0:
        theta -= 180.0  # a rectangle turned by 180 degrees covers the same pixels
    x0, y0, x1, y1 = box.x0, box.y0, box.x1, box.y1
    if abs(theta) < 1e-6 or abs(abs(theta) - 90.0) < 1e-6:
        return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    rot = t.get_rotation()
    t.set_rotation(0)
    flat = t.get_window_extent(renderer)
    t.set_rotation(rot)
    w, h = flat.width, flat.height
    s = abs(np.sin(np.radians(theta)))
    if theta > 0:
        return np.array([[x0 + h * s, y0], [x1, y0 + w * s], [x1 - h * s, y1], [x0, y1 - w * s]])
    return np.array([[x1 - h * s, y0], [x1, y1 - w * s], [x0 + h * s, y1], [x0, y0 + w * s]])


def _overlap(a, b, tol: float) -> bool:
    """Whether two convex quadrilaterals overlap by more than ``tol`` along every separating axis."""
    import numpy as np

    for poly in (a, b):
        for k in range(4):
            edge = poly[(k + 1) % 4] - poly[k]
            norm = np.hypot(*edge)
            if norm == 0:
                continue
            axis = np.array([-edge[1], edge[0]]) / norm
            pa, pb = a @ axis, b @ axis
            if min(pa.max(), pb.max()) - max(pa.min(), pb.min()) <= tol:
                return False
    return True


def text_collisions(fig, min_points: float | None = None) -> list[str]:
    """Every pair of drawn texts of ``fig`` whose boxes overlap, and every text that leaves the canvas
    (it would be cut, or widen the saved figure beyond its stated width), as readable lines; with
    ``min_points`` also every text set smaller (see :func:`small_texts`); empty when the figure's text
    is clear. Draws the canvas once (extents exist only after a draw)."""
    import numpy as np

    texts = drawn_texts(fig)
    problems = [] if min_points is None else _small(texts, min_points)
    renderer = fig.canvas.get_renderer()
    tol = _OVERLAP_TOL_PX * fig.dpi / 100.0
    polys = [(_corners(t, renderer), what) for t, what in texts]
    width, height = fig.bbox.width, fig.bbox.height
    for poly, what in polys:
        if (
            poly[:, 0].min() < -tol
            or poly[:, 1].min() < -tol
            or poly[:, 0].max() > width + tol
            or poly[:, 1].max() > height + tol
        ):
            problems.append(f"{what} leaves the canvas")
    if not polys:
        return problems
    lo = np.array([p.min(axis=0) for p, _ in polys])
    hi = np.array([p.max(axis=0) for p, _ in polys])
    # candidate pairs: upright boxes that overlap; the rotated boxes decide
    near = (np.minimum(hi[:, None], hi[None]) - np.maximum(lo[:, None], lo[None]) > tol).all(axis=2)
    for i, j in zip(*np.nonzero(np.triu(near, k=1))):
        if _overlap(polys[i][0], polys[j][0], tol):
            problems.append(f"{polys[i][1]} overlaps {polys[j][1]}")
    return problems


def small_texts(fig, min_points: float = 6.0) -> list[str]:
    """Drawn texts set smaller than ``min_points`` (as printed at the figure's own width)."""
    return _small(drawn_texts(fig), min_points)


def _small(texts: list[tuple[Any, str]], min_points: float) -> list[str]:
    return [f"{what} is {t.get_fontsize():.1f} pt" for t, what in texts if t.get_fontsize() < min_points - 1e-6]
