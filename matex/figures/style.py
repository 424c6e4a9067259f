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
}

# Methods a figure may show that are not listed above get a colour from this spare list, chosen by
# a stable hash of the name (never by their position in a figure).
_SPARE = ["#6699CC", "#997700", "#994455", "#EE99AA", "#004488", "#BBBBBB", "#66CCEE", "#228833"]


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


def fit_to_column(fig, style: dict[str, Any] | None) -> None:
    """Scale ``fig`` to the configured column width, keeping its aspect ratio (fonts keep their size
    in points, so text reads the same in every figure)."""
    s = style_settings(style)
    w, h = fig.get_size_inches()
    target = COLUMN_WIDTH_IN[s["width"]]
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
