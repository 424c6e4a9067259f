"""Figures read at a glance: one fixed colour per method whatever the subset shown, MATEX apart,
controls grey and dashed, sizes set by figures.style."""

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402

from matex.errors import ConfigError  # noqa: E402
from matex.figures import style  # noqa: E402
from matex.figures.plots import metric_bars, save  # noqa: E402


def test_every_registered_method_has_its_own_colour():
    from matex.catalog import load_catalog

    names = sorted(load_catalog())
    colours = [style.method_color(n) for n in names]
    assert len(set(colours)) == len(colours), dict(zip(names, colours))
    assert all(style.method_style(n)["linestyle"] == "--" for n in names if style.is_control(n))
    assert style.method_style("matex")["zorder"] > max(style.method_style(n)["zorder"] for n in names if n != "matex")


def _summary(methods):
    rows = [
        {"category": "all", "metric": "pointing_game", "method": m, "mean": 0.5, "ci_low": 0.4, "ci_high": 0.6}
        for m in methods
    ]
    return pd.DataFrame(rows)


def test_a_method_keeps_its_colour_in_any_subset():
    def bar_colours(methods):
        fig = metric_bars(_summary(methods), methods)
        ax = fig.axes[0]
        return {t.get_text(): to_hex(p.get_facecolor()) for t, p in zip(ax.get_yticklabels(), ax.patches)}

    a = bar_colours(["matex", "random", "chefer"])
    b = bar_colours(["chefer", "gradcam", "matex"])
    assert a["matex"] == b["matex"] == style.MATEX_COLOR.lower()
    assert a["chefer"] == b["chefer"]


def test_style_scales_to_the_column_width(tmp_path):
    import matplotlib.pyplot as plt
    from PIL import Image

    style.use({"width": "single", "dpi": 100})
    try:
        fig, ax = plt.subplots(figsize=(10, 5))
        ax.plot(np.arange(4), np.arange(4))
        style.integer_ticks(ax)
        save(fig, [tmp_path / "f.png"])
        w, _ = Image.open(tmp_path / "f.png").size
        assert abs(w - 350) < 60  # 3.5 in at 100 dpi (bbox_inches="tight" trims a little)
        assert all(float(t).is_integer() for t in ax.get_xticks())
    finally:
        style._ACTIVE = None
        matplotlib.rcdefaults()
    with pytest.raises(ConfigError, match="figures.style.width"):
        style.style_settings({"width": "triple"})


def test_a_figure_keeps_the_width_it_is_drawn_for_and_the_config_bounds_it(tmp_path):
    from PIL import Image

    for configured, drawn, expected in (
        ("double", "single", 3.5),
        ("double", "double", 7.16),
        ("single", "double", 3.5),
    ):
        fig, ax = style.new_figure(drawn, 2.0)
        ax.plot([0, 1], [0, 1])
        save(fig, [tmp_path / "f.png"], style={"width": configured, "dpi": 100})
        w, h = Image.open(tmp_path / "f.png").size
        assert (w, h) == (round(expected * 100), 200), (configured, drawn)
