"""ROAR as Hooker et al. (NeurIPS 2019) define it: both splits degraded, smooth random control,
the curve's area, and (tiny synthetic task, tiny model retrained from scratch) a map that removes
the label's evidence hurts the retrained model more than smooth random removal."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from matex.errors import MapError
from matex.roar import retrain as rt
from matex.roar.curve import auc_table, roar_auc, roar_curve, roar_note, with_roar_auc

# --- degradation of both splits ---------------------------------------------------------------


def test_degrade_splits_removes_the_top_pixels_of_train_and_val_alike():
    rng = np.random.default_rng(0)
    train = rng.choice(np.array([0, 255], dtype=np.uint8), size=(4, 16, 16))
    val = rng.choice(np.array([0, 255], dtype=np.uint8), size=(3, 16, 16))
    tmaps, vmaps = rng.random((4, 16, 16)), rng.random((3, 16, 16))
    k = math.ceil(0.3 * 256)
    out_t, out_v = rt.degrade_splits(train, val, tmaps, vmaps, 0.3, fill=128.0, seed=0)
    for out, src, maps in ((out_t, train, tmaps), (out_v, val, vmaps)):
        for i in range(len(src)):
            top = np.argsort(-maps[i].ravel())[:k]
            assert (out[i].ravel()[top] == 128).all()
            assert (out[i] == 128).sum() == k  # nothing else filled (originals are 0 or 255)
            rest = np.setdiff1d(np.arange(256), top)
            assert np.array_equal(out[i].ravel()[rest], src[i].ravel()[rest])
    clean_t, clean_v = rt.degrade_splits(train, val, tmaps, vmaps, 0.0, fill=128.0, seed=0)
    assert np.array_equal(clean_t, train) and np.array_equal(clean_v, val)
    with pytest.raises(MapError, match="both the training and the validation"):
        rt.degrade_splits(train, val, tmaps, None, 0.3, fill=128.0, seed=0)


def test_ties_are_broken_at_random_not_from_the_top_left_corner():
    flat = np.zeros((1, 20, 20))
    mask = rt.top_fraction_random_ties(flat, 0.25, seed=0)
    assert mask.sum() == 100
    assert mask[0, :5].sum() < 60  # row-major tie-breaking would take exactly rows 0..4 (100 pixels)


def test_the_run_measures_a_model_retrained_on_degraded_train_on_degraded_val(monkeypatch):
    """The images the retrain sees and those the measure sees both lost their top pixels."""
    seen = {}

    def fake_retrain(cfg, base, images, texts, seed, threads, device="cpu", categories=None):
        seen.setdefault("train", []).append(np.array(images))
        return None

    def fake_measure(model, val, texts, cats, batch):
        seen.setdefault("val", []).append(np.array(val))
        return {"val_loss": 1.0, "zero_shot_accuracy": 0.5}

    monkeypatch.setattr(rt, "retrain", fake_retrain)
    monkeypatch.setattr(rt, "measure", fake_measure)
    rng = np.random.default_rng(1)
    images = rng.choice(np.array([10, 250], dtype=np.uint8), size=(6, 14, 14))
    pairs = pd.DataFrame({"phrase": list("abcdef"), "category": list("ababab"), "pair_id": list("uvwxyz")})
    maps = rng.random((6, 14, 14))
    cfg = {
        "seed": 0,
        "model": {"source": "demo", "demo": {"batch_size": 4}},
        "roar": {"batch_size": 4, "fill": "grey", "retrain": {"fractions": [0.2, 0.6], "epochs": 1, "random_grid": 7}},
    }
    samples: dict = {}
    rows = rt.roar_retrain_runs(
        cfg,
        None,
        pairs,
        images,
        np.arange(4),
        np.arange(4, 6),
        "m",
        maps[:4],
        maps[4:],
        0,
        samples=samples,
        n_samples=2,
    )
    assert [r["k"] for r in rows] == [0.2, 0.6]
    # the auditor's view: the degraded training images actually trained on, per k
    assert sorted(samples) == ["k20/u", "k20/v", "k60/u", "k60/v"]
    np.testing.assert_array_equal(samples["k60/v"], seen["train"][1][1])
    fill = round(images[:4].mean())
    for split, n in (("train", 4), ("val", 2)):
        for k, out in zip((0.2, 0.6), seen[split]):
            assert out.shape == (n, 14, 14)
            assert ((out == fill).sum(axis=(1, 2)) == math.ceil(k * 196)).all()
    # the random control draws its own smooth maps for both splits
    seen.clear()
    rt.roar_retrain_runs(cfg, None, pairs, images, np.arange(4), np.arange(4, 6), "random", None, None, 0)
    assert all(((o == fill).sum(axis=(1, 2)) > 0).all() for o in seen["train"] + seen["val"])


# --- smooth random maps ----------------------------------------------------------------------


def test_smooth_random_maps_are_patch_grid_noise_upsampled_bilinearly():
    maps = rt.smooth_random_maps(3, 224, 7, seed=5)
    cells = np.random.default_rng(5).random((3, 7, 7), dtype=np.float32)
    expected = F.interpolate(torch.from_numpy(cells)[:, None], size=(224, 224), mode="bilinear", align_corners=False)[
        :, 0
    ].numpy()
    np.testing.assert_allclose(maps, expected, atol=1e-5)
    assert not np.allclose(maps, rt.smooth_random_maps(3, 224, 7, seed=6))


def _blobs(maps, fraction):
    return [ndimage.label(m)[1] for m in rt.top_fraction_random_ties(maps, fraction, seed=0)]


def test_smooth_random_maps_remove_contiguous_blobs_like_the_methods_but_noise_does_not():
    smooth = rt.smooth_random_maps(4, 224, 7, seed=0)
    noise = np.random.default_rng(0).random((4, 224, 224))
    # a 7x7 grid has at most 49 local maxima, so its top 10 % is a handful of blobs; noise scatters
    assert max(_blobs(smooth, 0.1)) <= 49
    assert min(_blobs(noise, 0.1)) > 1000


# --- curve and area --------------------------------------------------------------------------


def test_auc_is_the_trapezoid_area_over_k():
    assert roar_auc([0.0, 0.5, 1.0], [1.0, 0.5, 0.0]) == pytest.approx(0.5)
    assert roar_auc([0.3, 0.0, 0.1], [0.0, 1.0, 1.0]) == pytest.approx(0.1 + 0.2 * 0.5)  # unsorted, unequal steps
    assert math.isnan(roar_auc([0.1], [0.4]))
    assert math.isnan(roar_auc([0.1, 0.3], [0.4, float("nan")]))
    with pytest.raises(ValueError):
        roar_auc([0.1, 0.1], [0.4, 0.3])


def _runs():
    rows = [{"variant": "clean", "k": 0.0, "seed": s, "val_loss": 2.0, "zero_shot_accuracy": 0.8} for s in (0, 1)]
    for s in (0, 1):
        rows += [
            {"variant": "good", "k": k, "seed": s, "val_loss": 2 + 3 * k, "zero_shot_accuracy": 0.8 - k}
            for k in (0.3, 0.7)
        ]
        rows += [
            {"variant": "random", "k": k, "seed": s, "val_loss": 2 + k, "zero_shot_accuracy": 0.8 - 0.2 * k + 0.01 * s}
            for k in (0.3, 0.7)
        ]
    return pd.DataFrame(rows)


def test_curve_shares_the_clean_point_and_the_faster_fall_has_the_smaller_accuracy_area():
    curve = roar_curve(_runs())
    assert sorted(curve["method"].unique()) == ["good", "random"]
    assert curve.groupby("method")["k_percent"].apply(list).to_dict() == {"good": [0, 30, 70], "random": [0, 30, 70]}
    aucs = auc_table(curve).set_index("method")
    expected_good = roar_auc([0, 0.3, 0.7], [0.8, 0.5, 0.1])
    assert aucs.loc["good", "auc_zero_shot_accuracy"] == pytest.approx(expected_good)
    assert aucs.loc["good", "auc_zero_shot_accuracy"] < aucs.loc["random", "auc_zero_shot_accuracy"]
    assert aucs.loc["good", "auc_val_loss"] > aucs.loc["random", "auc_val_loss"]
    assert curve.set_index(["method", "k_percent"]).loc[("random", 30), "zero_shot_accuracy_sd"] > 0


def test_a_curve_missing_a_k_has_no_area_and_the_table_column_says_so():
    runs = _runs()
    runs = runs[~((runs["variant"] == "good") & (runs["k"] == 0.7))]
    curve = roar_curve(runs)
    assert math.isnan(auc_table(curve).set_index("method").loc["good", "auc_zero_shot_accuracy"])
    table = pd.DataFrame(
        {"Img ROAR+ ↑": ["1", "2", "3"], "AUROC ↑": ["x", "y", "z"]}, index=["good", "random", "other"]
    )
    out = with_roar_auc(table, curve)
    assert list(out.columns) == ["Img ROAR+ ↑", "ROAR AUC ↓", "AUROC ↑"]
    assert out["ROAR AUC ↓"].tolist()[0] == "–" and out["ROAR AUC ↓"].tolist()[2] == "–"
    assert float(out.loc["random", "ROAR AUC ↓"].split()[0]) > 0  # "mean [t-interval]" over the seeds
    # without text ROAR+ (the demo) the column still follows the whole confidence block
    table = pd.DataFrame(
        {"Img conf. drop ↓": ["1"] * 3, "Img ROAR+ ↑": ["1"] * 3, "Txt conf. drop ↓": ["5"] * 3, "AUROC ↑": ["x"] * 3},
        index=["good", "random", "other"],
    )
    assert list(with_roar_auc(table, curve).columns) == [
        "Img conf. drop ↓",
        "Img ROAR+ ↑",
        "Txt conf. drop ↓",
        "ROAR AUC ↓",
        "AUROC ↑",
    ]


def test_a_hub_model_cannot_be_retrained_from_init_and_defaults_to_finetuning():
    from matex.errors import ConfigError

    cfg = {"model": {"source": "hub"}, "roar": {"batch_size": 8, "retrain": {"mode": "from_init"}}}
    with pytest.raises(ConfigError, match="roar.retrain.mode"):
        rt.retrain_mode(cfg)
    cfg["roar"]["retrain"]["mode"] = None
    assert rt.retrain_mode(cfg) == "finetune" and rt.retrain_batch_size(cfg) == 8
    assert rt.retrain_mode({"model": {"source": "demo"}, "roar": {"retrain": {}}}) == "from_init"


def test_the_note_names_a_reduced_protocol():
    cfg = {
        "model": {"source": "demo"},
        "roar": {
            "train_pairs": 400,
            "retrain": {"methods": ["matex"], "fractions": [0.3, 0.7], "seeds": [0], "epochs": 4, "finetune_lr": 1e-4},
        },
    }
    note = roar_note(cfg)
    assert "Reduced protocol" in note and "k = 0, 30, 70 %" in note and "matex, random" in note
    assert "400 training pairs (full: all)" in note and "1 seed(s) (full: 5)" in note
    assert "noisy linear imputation" in note and "no interval" in note
    cfg["roar"]["retrain"].update(fractions=[0.1, 0.3, 0.5, 0.7, 0.9], seeds=[0, 1, 2, 3, 4])
    cfg["roar"]["train_pairs"] = None
    assert "Full protocol" in roar_note(cfg) and "t-interval] over 5 retraining seeds" in roar_note(cfg)
    cfg["roar"]["retrain"]["mode"] = "finetune"
    assert "not retrained from its initialisation" in roar_note(cfg)
    cfg["roar"]["fill"] = "grey"
    assert "fill: the dataset grey mean" in roar_note(cfg)


# --- a tiny task where we know which pixels carry the label ----------------------------------

QUADRANTS = ["alpha", "beta", "gamma", "delta"]  # category = phrase: where the bright square is


def _task(n, seed, size=56):
    rng = np.random.default_rng(seed)
    images = rng.normal(90, 12, size=(n, size, size)).clip(0, 255).astype(np.uint8)
    truth = np.zeros((n, size, size), dtype=np.float32)
    labels = rng.integers(0, 4, size=n)
    half = size // 2
    for i, q in enumerate(labels):
        y0 = (q // 2) * half + rng.integers(4, half - 16)
        x0 = (q % 2) * half + rng.integers(4, half - 16)
        images[i, y0 : y0 + 12, x0 : x0 + 12] = 230
        truth[i, y0 : y0 + 12, x0 : x0 + 12] = 1.0
    names = [QUADRANTS[q] for q in labels]
    return images, truth, pd.DataFrame({"phrase": names, "category": names})


def test_removing_the_label_evidence_hurts_the_retrained_model_more_than_smooth_random_removal():
    images, truth, pairs = _task(320, seed=0)
    train, val = np.arange(256), np.arange(256, 320)
    cfg = {
        "seed": 0,
        "input": {"size": 56, "mode": "center_crop", "mean": [0.35] * 3, "std": [0.2] * 3},
        "model": {
            "source": "demo",
            "name": "tiny",
            "demo": {
                "embed_dim": 32,
                "vision": {"layers": 2, "width": 64, "heads": 2, "patch_size": 8, "mlp_ratio": 2.0, "stem_channels": 0},
                "text": {"layers": 1, "width": 32, "heads": 2, "context_length": 8},
                "epochs": 12,
                "batch_size": 32,
                "lr": 5e-4,
                "weight_decay": 0.0,
                "warmup_steps": 0,
            },
        },
        "roar": {
            "batch_size": 32,
            "retrain": {"fractions": [0.2], "epochs": 12, "warmup_steps": 0, "random_grid": None},
        },
    }
    from matex.models.loading import load_model_from_config

    base = load_model_from_config(cfg)

    def run(variant, maps):
        return rt.roar_retrain_runs(
            cfg,
            base,
            pairs,
            images,
            train,
            val,
            variant,
            None if maps is None else maps[train],
            None if maps is None else maps[val],
            0,
            threads=1,
        )[0]

    clean, oracle, random = run("clean", None), run("oracle", truth), run("random", None)
    # the task is learnable (otherwise the comparison below says nothing) ...
    assert clean["zero_shot_accuracy"] > 0.5
    # ... and removing where the square is leaves nothing to learn from; random blobs leave most squares
    assert oracle["zero_shot_accuracy"] < random["zero_shot_accuracy"]
    assert oracle["val_loss"] > random["val_loss"]


def test_the_figure_draws_one_curve_per_method_in_its_colour_with_integer_percent_ticks():
    from matex.figures.roar import roar_curve_figure
    from matex.figures.style import method_color

    fig = roar_curve_figure(roar_curve(_runs()), ["random", "good"])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "30", "70"]
    lines = {line.get_label().split(" ")[0]: line for line in ax.get_lines()}
    assert lines["random"].get_color() == method_color("random") and lines["random"].get_linestyle() == "--"
    assert list(lines["good"].get_xdata()) == [0, 30, 70]
    assert list(lines["good"].get_ydata()) == pytest.approx([80.0, 50.0, 10.0])


def test_per_seed_areas_pair_each_seed_with_its_clean_run_and_the_table_shows_their_t_interval():
    from scipy import stats

    from matex.roar.curve import auc_over_seeds, per_seed_auc

    runs = pd.DataFrame(
        {
            "variant": ["clean"] * 3 + ["m"] * 3 + ["prior_only"] * 2,
            "k": [0.0] * 3 + [0.5] * 5,
            "seed": [0, 1, 2, 0, 1, 2, 0, 1],
            "zero_shot_accuracy": [0.6, 0.62, 0.58, 0.2, 0.3, 0.25, 0.5, 0.4],
            "val_loss": [1.0] * 8,
        }
    )
    per_seed = per_seed_auc(runs)
    assert {"method", "seed"} <= set(per_seed.columns)
    m = per_seed[per_seed["method"] == "m"].set_index("seed")["auc_zero_shot_accuracy"]
    np.testing.assert_allclose(m.to_numpy(), [0.5 * (0.6 + 0.2) / 2, 0.5 * (0.62 + 0.3) / 2, 0.5 * (0.58 + 0.25) / 2])
    stats_ = auc_over_seeds(per_seed).set_index("method")
    half = stats.t.ppf(0.975, 2) * m.std(ddof=1) / np.sqrt(3)
    assert stats_.at["m", "auc_lo"] == pytest.approx(m.mean() - half)
    assert stats_.at["m", "auc_n_seeds"] == 3 and stats_.at["m", "auc_min"] == pytest.approx(m.min())
    # prior_only has two seeds (seed 2 never ran): its interval uses those two
    assert stats_.at["prior_only", "auc_n_seeds"] == 2
    curve = roar_curve(runs)
    table = with_roar_auc(pd.DataFrame(index=["m", "prior_only", "x"], data={"a": [1, 2, 3]}), curve)
    cell = table.at["m", "ROAR AUC ↓"]
    assert cell == f"{100 * m.mean():.2f} [{100 * (m.mean() - half):.2f}, {100 * (m.mean() + half):.2f}]"
    assert table.at["x", "ROAR AUC ↓"] == "–"
