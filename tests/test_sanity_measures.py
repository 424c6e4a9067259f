"""Sanity check (Adebayo et al. 2018): SSIM against hand computations, |Spearman rho| (an
anti-correlated map does not pass), the cascade's steps (image tower, text tower, full), a
weight-independent map that the measures flag, the cascade points and the figure with intervals."""

import matplotlib

matplotlib.use("Agg")
import numpy as np
import open_clip
import pandas as pd
import pytest
import torch

from matex.data.transforms import InputGeometry
from matex.errors import MapError
from matex.figures.sanity import sanity_cascade, step_intervals
from matex.metrics.sanity import abs_spearman, cascade_labels, cascade_plan, spearman_maps, ssim
from matex.metrics.studies import cascade_points, sanity_curve
from matex.models.base import MatexModel

SIZE = 56
C1, C2 = 0.01**2, 0.03**2


def tiny_model(seed: int = 0) -> MatexModel:
    torch.manual_seed(seed)
    clip = open_clip.CLIP(
        embed_dim=32,
        vision_cfg=dict(image_size=SIZE, patch_size=8, width=32, layers=3, head_width=16),
        text_cfg=dict(context_length=16, vocab_size=49408, width=32, heads=2, layers=2),
    ).eval()
    return MatexModel(clip, open_clip.tokenizer.SimpleTokenizer(context_length=16), InputGeometry(SIZE))


def ssim_formula(mu_a, mu_b, var_a, var_b, cov):
    return (2 * mu_a * mu_b + C1) * (2 * cov + C2) / ((mu_a**2 + mu_b**2 + C1) * (var_a + var_b + C2))


# ---------------------------------------------------------------- SSIM


def test_ssim_matches_a_hand_computation_with_a_uniform_window():
    # x: columns 0, 1; y: rows 0, 1 -> both means 0.5, variances 0.25, covariance 0
    x = np.array([[[0.0, 1.0], [0.0, 1.0]]])
    y = np.array([[[0.0, 0.0], [1.0, 1.0]]])
    assert ssim(x, y, window=2, sigma=None)[0] == pytest.approx((0.5 + C1) * C2 / ((0.5 + C1) * (0.5 + C2)))
    # 1 - x: covariance -0.25 -> negative
    assert ssim(x, 1 - x, window=2, sigma=None)[0] == pytest.approx(
        (0.5 + C1) * (-0.5 + C2) / ((0.5 + C1) * (0.5 + C2))
    )
    assert ssim(x, x, window=2, sigma=None)[0] == pytest.approx(1.0)


def test_ssim_gaussian_window_matches_an_explicit_loop_over_valid_positions():
    rng = np.random.default_rng(0)
    a, b = rng.random((2, 13, 12))
    b = 0.5 * a + 0.5 * b
    a, b = (m / m.max() for m in (a - a.min(), b - b.min()))  # already in [0, 1] with min 0 and max 1
    g = np.exp(-0.5 * ((np.arange(11) - 5) / 1.5) ** 2)
    w = np.outer(g, g) / np.outer(g, g).sum()
    values = []
    for i in range(13 - 11 + 1):
        for j in range(12 - 11 + 1):
            pa, pb = a[i : i + 11, j : j + 11], b[i : i + 11, j : j + 11]
            mu_a, mu_b = (w * pa).sum(), (w * pb).sum()
            values.append(
                ssim_formula(
                    mu_a,
                    mu_b,
                    (w * (pa - mu_a) ** 2).sum(),
                    (w * (pb - mu_b) ** 2).sum(),
                    (w * (pa - mu_a) * (pb - mu_b)).sum(),
                )
            )
    assert len(values) == 6
    assert ssim(a[None], b[None])[0] == pytest.approx(np.mean(values), rel=1e-9)


def test_ssim_rescales_maps_to_unit_range_and_rejects_bad_input():
    a = np.random.default_rng(1).random((2, 16, 16))
    assert np.allclose(ssim(a, 3 * a + 2), 1.0)
    assert np.all(ssim(a, np.random.default_rng(2).random((2, 16, 16))) < 0.5)
    with pytest.raises(MapError, match="window"):
        ssim(a[:, :8, :8], a[:, :8, :8])
    with pytest.raises(MapError, match="differ"):
        ssim(a, a[:, :15])
    with pytest.raises(MapError, match="finite"):
        ssim(np.full((1, 12, 12), np.nan), a[:1, :12, :12])


def test_abs_spearman_does_not_reward_an_anti_correlated_map():
    maps = np.random.default_rng(3).random((3, 9, 9))
    assert np.allclose(spearman_maps(maps, 1 - maps), -1.0)  # signed rho: "lowest" = looks best
    assert np.allclose(abs_spearman(maps, 1 - maps), 1.0)  # |rho|: as bad as an unchanged map
    assert np.allclose(abs_spearman(maps, maps), 1.0)


# ---------------------------------------------------------------- cascade (see also test_sanity_cascade.py)


def perturbed_model() -> MatexModel:
    model = tiny_model()
    with torch.no_grad():  # move every parameter off its init value, so any re-init is visible
        gen = torch.Generator().manual_seed(5)
        for p in model.clip.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1 + 0.05)
    return model


def test_sanity_curve_runs_image_then_text_then_full_and_flags_a_map_that_ignores_the_weights():
    """Sobel edges never read the model: |rho| and SSIM stay 1 at every step, while a gradient map
    (saliency) moves away from the trained model's."""
    model = perturbed_model()
    plan = cascade_plan(model)
    assert (plan.n_image, plan.n_text) == (7, 5)  # 3 vision blocks + 4 other groups; 2 text blocks + 3
    labels = cascade_labels(model)
    assert labels[0] == "image: projection + final norm" and labels[1] == "image: + block 3"
    assert labels[6] == "image: + patch embedding / stem" and labels[7] == "text: projection + final norm"
    assert labels[-1] == "full: both towers" and len(labels) == 13
    rng = np.random.default_rng(6)
    images = rng.integers(0, 256, (3, SIZE, SIZE), dtype=np.uint8)
    pairs = pd.DataFrame(
        {
            "pair_id": ["a", "b", "c"],
            "category": ["x", "y", "x"],
            "phrase": ["left effusion", "cardiomegaly", "right upper opacity"],
        }
    )
    rows = np.arange(3)
    edges = sanity_curve(model, "sobel", {}, pairs, images, rows, batch_size=2, seed=0)
    assert sorted(edges["cascade_step"].unique()) == list(range(1, 14)) and len(edges) == 39
    assert np.allclose(edges["abs_spearman"], 1.0) and np.allclose(edges["ssim"], 1.0)
    assert list(edges.drop_duplicates("cascade_step")["tower"]) == ["image"] * 7 + ["text"] * 5 + ["full"]
    kept: dict = {}
    grads = sanity_curve(
        model, "saliency", {}, pairs, images, rows, batch_size=2, seed=0, steps=[13, 1], keep_maps=kept, keep_pairs=2
    )
    assert sorted(grads["cascade_step"].unique()) == [1, 13]
    # the auditor's view: the kept pairs' maps, trained and at each step run
    assert sorted(kept) == ["step1/a", "step1/b", "step13/a", "step13/b", "trained/a", "trained/b"]
    assert not np.allclose(kept["trained/a"], kept["step13/a"], atol=1e-2)
    full = grads[grads["cascade_step"] == 13]
    assert (full["abs_spearman"] < 0.9).all() and (full["ssim"] < 0.9).all()
    assert set(grads["randomized"]) == {"image: projection + final norm", "full: both towers"}
    assert set(full["n_tensors_randomized"]) == {sum(1 for n, _ in model.clip.named_parameters()) - 1}


def cascade_table(n_pairs: int = 4) -> pd.DataFrame:
    steps = [("image", "image: head"), ("image", "image: + block 1"), ("text", "text: head"), ("full", "full")]
    rows = []
    for method in ("random", "matex", "gradcam"):
        for step, (tower, label) in enumerate(steps, start=1):
            rows += [
                {
                    "pair_id": f"{p}",
                    "patient_id": f"pt{p // 2}",
                    "method": method,
                    "cascade_step": step,
                    "tower": tower,
                    "randomized": label,
                    "abs_spearman": 1.0 / step + 0.05 * p,
                    "ssim": 0.5 / step,
                }
                for p in range(n_pairs)
            ]
    return pd.DataFrame(rows)


def test_sanity_figure_shows_every_step_by_tower_with_patient_intervals():
    table = cascade_table()
    fig = sanity_cascade(table, ["matex", "gradcam", "random"])
    assert len(fig.axes) == 2
    ax = fig.axes[0]  # |rho| above, SSIM below; the step labels sit under the lower panel
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == [
        "image: head",
        "image: + block 1",
        "text: head",
        "full",
    ]
    assert list(ax.get_xticks()) == [0, 1, 3, 5]  # a gap between the towers' cascades
    lines = [line for line in ax.get_lines() if line.get_label() == "matex"]
    assert len(lines) == 1  # one legend entry; the text and full segments are unlabelled
    assert lines[0].get_zorder() > 2 and np.allclose(lines[0].get_ydata(), [1.075, 0.575])
    # intervals: the spread of abs_spearman over pairs gives a non-empty bar, resampled by patient
    stats = step_intervals(table, n_resamples=200)
    one = stats[(stats["method"] == "matex") & (stats["measure"] == "abs_spearman")].set_index("cascade_step")
    assert (one["low"] < one["mean"]).all() and (one["high"] > one["mean"]).all()
    assert np.allclose(one["mean"], 1.0 / one.index + 0.075) and set(one["n"]) == {4}
    ssim_rows = stats[stats["measure"] == "ssim"]
    assert np.allclose(ssim_rows["low"], ssim_rows["high"])  # no spread, no interval width
    # a patient's pairs move together: two patients of four similar pairs each give a wider interval
    # than eight independent pairs (what the table would get without its patient_id column)
    eight = cascade_table(n_pairs=8)
    eight["patient_id"] = "pt" + (eight["pair_id"].astype(int) // 4).astype(str)
    by_pair = step_intervals(eight.drop(columns="patient_id"), n_resamples=2000)
    by_patient = step_intervals(eight, n_resamples=2000)
    width = [(t["high"] - t["low"])[t["measure"] == "abs_spearman"].mean() for t in (by_patient, by_pair)]
    assert width[0] > width[1] > 0


def test_cascade_points_keep_full_the_towers_ends_and_the_image_top():
    assert cascade_points(7, 5, None) == list(range(1, 14))
    assert cascade_points(7, 5, 4) == [1, 7, 12, 13]  # image top, whole image tower, whole text tower, full
    assert cascade_points(7, 5, 3) == [7, 12, 13]
    assert cascade_points(7, 5, 2) == [7, 13]
    assert cascade_points(7, 5, 5) == [1, 4, 7, 12, 13]
    assert cascade_points(2, 1, 9) == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="cascade_points"):
        cascade_points(7, 5, 1)
