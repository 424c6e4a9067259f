"""Every figure of the pipeline is readable at the width it is drawn for: no two texts overlap, no
text leaves the canvas, no text is set below 6 pt. Each figure is drawn from hand-made tables in the
shape the pipeline gives its figure function, at the size of the demo run (17 methods, 8 finding
categories), with the demo config's figure style, as ``save`` would write it."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.text  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from matex.config import load_config  # noqa: E402
from matex.figures import style  # noqa: E402
from matex.metrics.aggregate import METRICS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CFG = load_config(ROOT / "config" / "config.yaml")
METHODS = list(CFG["attribution"]["methods"])
# one phrase per finding category, written for this test, as long as the demo's longest ones
PHRASES = {
    "Atelectasis": "subsegmental atelectasis at the right lung base with some volume loss",
    "Cardiomegaly": "the cardiac silhouette is enlarged",
    "Consolidation": "consolidation in the right mid zone with air bronchograms",
    "Edema": "interstitial edema in both perihilar regions",
    "Lung Opacity": "patchy opacity in the left lower lobe",
    "Pleural Effusion": "small left pleural effusion at the costophrenic angle",
    "Pneumonia": "retrocardiac opacity that may represent pneumonia",
    "Pneumothorax": "moderate left apical pneumothorax",
}
RNG = np.random.default_rng(0)


def pairs_table() -> pd.DataFrame:
    rows = []
    for k, (category, phrase) in enumerate(PHRASES.items()):
        x0 = 20.0 + 12 * k
        rows.append(
            {
                "pair_id": f"p{k}",
                "patient_id": f"pt{k // 2}",
                "category": category,
                "phrase": phrase,
                "image_width": 320,
                "image_height": 352,
                "boxes": [[x0, 60.0, x0 + 70.0, 150.0]],
            }
        )
    return pd.DataFrame(rows)


def images(n: int, size: int = 224) -> np.ndarray:
    y, x = np.mgrid[:size, :size] / size
    film = (255 * (0.3 + 0.4 * np.exp(-((x - 0.5) ** 2) / 0.05) * (y > 0.1))).astype(np.uint8)
    return np.stack([film] * n)


def qualitative():
    from matex.figures.plots import qualitative_grid

    pairs = pairs_table()
    maps = {m: {p: RNG.random((224, 224)).astype(np.float32) for p in pairs["pair_id"]} for m in METHODS}
    return qualitative_grid(pairs, images(len(pairs)), maps, list(pairs["pair_id"]))


def metrics():
    from matex.figures.plots import metric_bars

    rows = [
        {"category": "all", "metric": c, "method": m, "mean": v, "ci_low": 0.8 * v, "ci_high": 1.2 * v}
        for c, _, _ in METRICS
        for m, v in zip(METHODS, RNG.uniform(0.1, 0.9, len(METHODS)))
    ]
    return metric_bars(pd.DataFrame(rows), METHODS)


def _ablation_long() -> pd.DataFrame:
    """What figure_ablation melts from the ablation table: (parameter, value, metric, score)."""
    settings = [(w, v) for w in ("alpha", "beta", "gamma", "delta") for v in (0.0, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0)]
    settings += [("prior_strength", v) for v in CFG["figures"]["lambda_sweep"]]
    cols = ["pointing_game", "energy_in_box", "iou_top5", "img_conf_increase"]
    table = pd.DataFrame([{"parameter": p, "value": v, **dict(zip(cols, RNG.random(4)))} for p, v in settings])
    return table.melt(id_vars=["parameter", "value"], var_name="metric", value_name="score")


def ablation_weights():
    from matex.figures.plots import curves

    long = _ablation_long()
    weights = long[long["parameter"] != "prior_strength"]
    title = "MATEX fusion-weight ablation (one weight varied at a time)"
    return curves(weights, "value", "score", "parameter", title, "weight value", "score", col="metric")


def ablation_prior_strength():
    from matex.figures.plots import curves

    long = _ablation_long()
    lam = long[long["parameter"] == "prior_strength"]
    return curves(lam, "value", "score", "metric", "MATEX prior strength sweep", "λ_s", "score")


def sanity():
    from matex.figures.sanity import sanity_cascade

    steps = [
        ("image", "image: projection + final norm"),
        ("image", "image: + blocks 2-3"),
        ("image", "image: whole tower"),
        ("text", "text: whole tower"),
        ("full", "full: both towers"),
    ]
    methods = list(CFG["evaluation"]["sanity"]["methods"])
    rows = [
        {
            "pair_id": f"p{p}",
            "patient_id": f"pt{p // 2}",
            "method": m,
            "cascade_step": s,
            "tower": tower,
            "randomized": label,
            "abs_spearman": RNG.random(),
            "ssim": RNG.random(),
        }
        for m in methods
        for s, (tower, label) in enumerate(steps, start=1)
        for p in range(6)
    ]
    return sanity_cascade(pd.DataFrame(rows), methods, n_resamples=50)


def runtime():
    from matex.figures.plots import runtime_bars

    table = pd.DataFrame(
        [{"method": m, "runtime_ms": ms} for m in METHODS for ms in RNG.lognormal(3 + len(m) % 5, 0.3, 5)]
    )
    return runtime_bars(table, METHODS)


def roar_curve():
    from matex.figures.roar import roar_curve_figure
    from matex.roar.curve import roar_curve as curve

    methods = [*CFG["roar"]["methods"], "random"]
    rows = [{"variant": "clean", "k": 0.0, "seed": s, "val_loss": 2.0, "zero_shot_accuracy": 0.8} for s in (0, 1)]
    for s in (0, 1):
        for m in methods:
            rows += [
                {"variant": m, "k": k, "seed": s, "val_loss": 2 + k * RNG.random(), "zero_shot_accuracy": 0.8 - k / 2}
                for k in CFG["roar"]["retrain"]["fractions"]
            ]
    table = curve(pd.DataFrame(rows))
    table["zero_shot_chance"] = 0.125
    return roar_curve_figure(table, methods)


def training():
    from matex.figures.training import learning_curves

    epochs = [
        {
            "epoch": e,
            "train_loss": 3 - 0.1 * e,
            "val_loss": 3.1 - 0.08 * e,
            "zero_shot_accuracy": 0.3 + 0.05 * e,
            "zero_shot_chance": 0.125,
            "zero_shot_accuracy_pairs": 0.25 + 0.05 * e,
            "t2i_r_at_5": 0.1 + 0.03 * e,
            "t2i_r_at_5_chance": 0.06,
            "r_at_5": 0.1 + 0.02 * e,
            "laterality_accuracy": 0.5 + 0.04 * e,
        }
        for e in range(1, 13)
    ]
    return learning_curves({"epochs": epochs, "n_train": 1860, "wall_time_s": 212.4, "threads": 2})


def counterfactual():
    from matex.figures.counterfactual import lesion_vs_drain

    rows = [
        {
            "pair_id": f"p{p}",
            "method": m,
            "has_drain": True,
            "lesion_share": RNG.random(),
            "drain_share": RNG.random() / 3,
            "delta_s_drain": RNG.random(),
            "delta_s_lesion": RNG.random(),
        }
        for m in METHODS
        for p in range(12)
    ]
    return lesion_vs_drain(pd.DataFrame(rows), METHODS)


def prior():
    from matex.figures.prior import prior_grid
    from matex.priors.audit import example_pairs

    pairs = pairs_table()
    return prior_grid(pairs, images(len(pairs)), example_pairs(pairs))


def pipeline_runtime():
    from matex.figures.plots import pipeline_runtime_bars

    rules = ["make_synthetic", "prepare", "train_demo", "explain", "evaluate", "aggregate", "sanity", "roar_retrain"]
    rules += ["ablation", "figure_qualitative", "figure_metrics", "provenance", "counterfactual", "parse_priors"]
    jobs = pd.DataFrame(
        [{"rule": r, "wall_s": w, "max_rss_mb": 800.0} for r in rules for w in RNG.lognormal(3, 1, 1 + len(r) % 4)]
    )
    return pipeline_runtime_bars(jobs)


def components():
    from matex.figures.maps import components_figure

    parts = ["rollout", "consistency", "gradient", "prior", "grad_prior", "grad_consistency"]
    comps = {k: RNG.random((224, 224)).astype(np.float32) for k in parts}
    return components_figure(
        images(1)[0], RNG.random((224, 224)), comps, PHRASES["Pleural Effusion"], "matex", box=(30, 40, 120, 160)
    )


FIGURES = {
    f.__name__: f
    for f in (
        qualitative,
        metrics,
        ablation_weights,
        ablation_prior_strength,
        sanity,
        runtime,
        roar_curve,
        training,
        counterfactual,
        prior,
        pipeline_runtime,
        components,
    )
}


@pytest.fixture
def demo_style():
    """The demo config's figures.style, applied as the pipeline applies it before each figure step."""
    style.use(CFG["figures"]["style"])
    yield
    style._ACTIVE = None
    matplotlib.rcdefaults()


@pytest.mark.parametrize("name", list(FIGURES))
def test_every_figure_is_legible_at_its_stated_width(name, demo_style):
    from matex.figures.plots import finalise

    fig = finalise(FIGURES[name]())
    try:
        width = fig.get_size_inches()[0]
        assert width <= style.COLUMN_WIDTH_IN["double"] + 0.01, f"{name}: {width:.2f} in wide"
        problems = style.text_collisions(fig, min_points=6.0)
        assert not problems, f"{name}.png:\n" + "\n".join(problems)
    finally:
        plt.close(fig)


@pytest.mark.parametrize("name", ["qualitative", "components"])
def test_map_figures_have_a_shared_scale_the_phrase_and_side_marks_on_every_radiograph(name):
    fig = FIGURES[name]()
    bars = [ax for ax in fig.axes if getattr(ax, "_colorbar", None) is not None]
    panels = [ax for ax in fig.axes if ax.images and ax not in bars]
    assert len(bars) == 1 and "min-max" in bars[0].get_ylabel()
    assert len(panels) == ((len(METHODS) + 1) * len(PHRASES) if name == "qualitative" else 2 + 6)
    for ax in panels:
        sides = {t.get_text(): t.get_position()[0] for t in ax.texts}
        assert sides.get("R", 1) < 0.5 < sides.get("L", 0), f"panel without R (left) / L (right): {sides}"
    words = " ".join(t.get_text() for t in fig.findobj(matplotlib.text.Text))
    assert PHRASES["Pleural Effusion"] in words
    plt.close(fig)


# ------------------------------------------------------------------------------ the checker itself


def test_the_checker_finds_overlapping_and_cut_texts():
    fig, (a, b) = plt.subplots(1, 2, figsize=(3.5, 2))
    a.set_title("a title long enough to run into the next panel's")
    b.set_title("next")
    fig.suptitle("a suptitle", y=1.05)  # above the canvas
    found = style.text_collisions(fig)
    assert any("title of panel 0" in p and "title of panel 1" in p for p in found), found
    assert any(p.startswith("suptitle") and "leaves the canvas" in p for p in found), found
    plt.close(fig)


def test_the_checker_passes_a_clear_figure_and_slanted_labels_that_do_not_touch():
    fig, ax = plt.subplots(figsize=(3.5, 2.5), layout="constrained")
    names = ["matex", "raw_attention", "rollout", "gradcam", "chefer", "category_box"]
    ax.bar(range(len(names)), np.arange(len(names)))
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_title("clear")
    fig.canvas.draw()
    boxes = [t.get_window_extent() for t in ax.get_xticklabels()]
    assert any(p.overlaps(q) for p, q in zip(boxes, boxes[1:]))  # upright boxes would collide ...
    assert style.text_collisions(fig) == []  # ... the slanted text itself does not
    ax.set_xticks(range(len(names)), names, rotation=0)  # upright, the long names run together
    assert any("tick label" in p for p in style.text_collisions(fig))
    plt.close(fig)


def test_small_texts_are_reported():
    fig, ax = plt.subplots(figsize=(3.5, 2))
    ax.set_title("tiny", fontsize=4)
    assert style.small_texts(fig) == ["title of panel 0 'tiny' is 4.0 pt"]
    plt.close(fig)
