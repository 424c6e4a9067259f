"""Sanity check (Adebayo et al. 2018): SSIM against hand computations, |Spearman rho| (an
anti-correlated map does not pass), the cascade from the top (heads and final norms, then blocks),
a weight-independent map that the measures flag, and the figure."""

import matplotlib

matplotlib.use("Agg")
import numpy as np
import open_clip
import pandas as pd
import pytest
import torch

from matex.data.transforms import InputGeometry
from matex.errors import MapError, MatexError
from matex.figures.sanity import sanity_cascade
from matex.metrics.sanity import (
    HEADS_LABEL,
    abs_spearman,
    cascade_labels,
    randomize_cascading,
    spearman_maps,
    ssim,
)
from matex.metrics.studies import cascade_points, sanity_curve
from matex.models.base import MatexModel

SIZE = 56
C1, C2 = 0.01**2, 0.03**2
HEAD_KEYS = ("visual.proj", "visual.ln_post.", "text_projection", "ln_final.")


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


# ---------------------------------------------------------------- cascade


def perturbed_model() -> MatexModel:
    model = tiny_model()
    with torch.no_grad():  # move every parameter off its init value, so any re-init is visible
        gen = torch.Generator().manual_seed(5)
        for p in model.clip.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1 + 0.05)
    return model


def changed_keys(model, randomized) -> set[str]:
    before, after = model.clip.state_dict(), randomized.clip.state_dict()
    return {k for k in before if before[k].is_floating_point() and not torch.equal(before[k], after[k])}


def test_cascade_randomises_heads_and_final_norms_first_then_blocks_from_the_top():
    model = perturbed_model()
    before = {k: v.clone() for k, v in model.clip.state_dict().items()}
    n_blocks = len(model.clip.visual.transformer.resblocks)
    assert cascade_labels(model) == [HEADS_LABEL, "+ block 3", "+ blocks 3–2", "+ blocks 3–1"]
    assert changed_keys(model, randomize_cascading(model, 0, seed=3)) == set()
    step1 = changed_keys(model, randomize_cascading(model, 1, seed=3))
    assert step1 and all(k.startswith(HEAD_KEYS) for k in step1)
    assert {k.split(".")[0] for k in step1} == {"visual", "text_projection", "ln_final"}
    step3 = randomize_cascading(model, 3, seed=3)
    top = tuple(f"visual.transformer.resblocks.{i}." for i in range(n_blocks - 2, n_blocks))
    assert all(k.startswith(HEAD_KEYS + top) for k in changed_keys(model, step3))
    assert any(k.startswith(top[0]) for k in changed_keys(model, step3))
    assert step3.meta["randomized_vision_blocks"] == 2 and step3.meta["randomized_heads"]
    after = model.clip.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the original is untouched

    # seeded and nested: the same seed gives the same weights; step 3 keeps step 2's block and heads
    new = step3.clip.state_dict()
    again = randomize_cascading(model, 3, seed=3).clip.state_dict()
    two = randomize_cascading(model, 2, seed=3).clip.state_dict()
    other = randomize_cascading(model, 3, seed=4).clip.state_dict()
    last = f"visual.transformer.resblocks.{n_blocks - 1}.mlp.c_fc.weight"
    assert all(torch.equal(new[k], again[k]) for k in new)
    assert torch.equal(new[last], two[last]) and torch.equal(new["visual.proj"], two["visual.proj"])
    assert not torch.equal(new[last], other[last])
    with pytest.raises(MatexError, match="cascade step 5"):
        randomize_cascading(model, 5, seed=0)


def test_sanity_curve_flags_a_map_that_ignores_the_weights():
    """Sobel edges never read the model: |rho| and SSIM stay 1 at every step, while a gradient map
    (saliency) moves away from the trained model's."""
    model = perturbed_model()
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
    assert sorted(edges["cascade_step"].unique()) == [1, 2, 3, 4] and len(edges) == 12
    assert np.allclose(edges["abs_spearman"], 1.0) and np.allclose(edges["ssim"], 1.0)
    kept: dict = {}
    grads = sanity_curve(
        model, "saliency", {}, pairs, images, rows, batch_size=2, seed=0, steps=[4, 1], keep_maps=kept, keep_pairs=2
    )
    assert sorted(grads["cascade_step"].unique()) == [1, 4]
    # the auditor's view: the kept pairs' maps, trained and at each step run
    assert sorted(kept) == ["step1/a", "step1/b", "step4/a", "step4/b", "trained/a", "trained/b"]
    assert not np.allclose(kept["trained/a"], kept["step4/a"], atol=1e-2)
    full = grads[grads["cascade_step"] == 4]
    assert (full["abs_spearman"] < 0.9).all() and (full["ssim"] < 0.9).all()
    assert set(grads["randomized"]) == {HEADS_LABEL, "+ blocks 3–1"}


def test_sanity_figure_labels_steps_and_draws_matex_on_top():
    rows = []
    for method in ("random", "matex", "gradcam"):
        for step, label in enumerate([HEADS_LABEL, "+ block 2", "+ block 1"], start=1):
            rows += [
                {
                    "pair_id": p,
                    "method": method,
                    "cascade_step": step,
                    "randomized": label,
                    "abs_spearman": 1.0 / step,
                    "ssim": 0.5 / step,
                }
                for p in ("a", "b")
            ]
    fig = sanity_cascade(pd.DataFrame(rows), ["matex", "gradcam", "random"])
    assert len(fig.axes) == 2
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == [HEADS_LABEL, "+ block 2", "+ block 1"]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert lines["matex"].get_zorder() > max(lines[m].get_zorder() for m in ("gradcam", "random"))
    assert lines["random"].get_linestyle() == "--" and lines["gradcam"].get_linestyle() == "-"
    assert np.allclose(lines["matex"].get_ydata(), [1.0, 0.5, 1 / 3])


def test_cascade_points_keep_both_ends():
    assert cascade_points(7, None) == [1, 2, 3, 4, 5, 6, 7]
    assert cascade_points(7, 4) == [1, 3, 5, 7]
    assert cascade_points(4, 4) == [1, 2, 3, 4] and cascade_points(4, 9) == [1, 2, 3, 4]
    assert cascade_points(13, 2) == [1, 13]
    with pytest.raises(ValueError, match="cascade_points"):
        cascade_points(7, 1)
