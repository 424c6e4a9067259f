"""Evaluation metrics on hand-computed cases: localisation, confidence drop/increase (with a tiny
open_clip CLIP), model-randomisation sanity and bootstrap intervals."""

import math

import numpy as np
import open_clip
import pandas as pd
import pytest
import torch

from matex.data.transforms import InputGeometry
from matex.errors import MapError
from matex.metrics.faithfulness import (
    confidence_scores,
    image_confidence,
    masked_input,
    text_confidence,
    text_keep_tokens,
)
from matex.metrics.localisation import auroc, energy_in_box, iou_top_fraction, pointing_game, top_fraction_masks
from matex.metrics.sanity import spearman_maps
from matex.metrics.stats import bootstrap_ci, summarise
from matex.models.base import MatexModel

SIZE = 56
SOT, EOT = 49406, 49407


def box(h: int, w: int, rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros((h, w), dtype=bool)
    mask[rows, cols] = True
    return mask


def tiny_model(seed: int = 0) -> MatexModel:
    # open_clip 3.3's vision config takes head_width (width / heads), not heads: 32 / 16 = 2 heads.
    torch.manual_seed(seed)
    clip = open_clip.CLIP(
        embed_dim=32,
        vision_cfg=dict(image_size=SIZE, patch_size=8, width=32, layers=3, head_width=16),
        text_cfg=dict(context_length=16, vocab_size=49408, width=32, heads=2, layers=2),
    ).eval()
    return MatexModel(clip, open_clip.tokenizer.SimpleTokenizer(context_length=16), InputGeometry(SIZE))


@pytest.fixture(scope="module")
def model() -> MatexModel:
    return tiny_model()


@pytest.fixture(scope="module")
def batch(model):
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(3, 3, SIZE, SIZE, generator=gen)
    tokens = model.tokenize(["left basal effusion", "cardiomegaly", "right upper lobe consolidation"])
    return images, tokens


# ---------------------------------------------------------------- localisation


def test_map_equal_to_small_box_hits_and_iou_is_hand_computed():
    # 10x10 map, top 5 % = ceil(5) = 5 pixels, box of 3x3 = 9 pixels: all 5 top pixels inside.
    mask = box(10, 10, slice(2, 5), slice(3, 6))[None]
    maps = mask.astype(np.float32)
    assert pointing_game(maps, mask).tolist() == [1.0]
    assert iou_top_fraction(maps, mask, 0.05)[0] == pytest.approx(5 / 9)
    # 20x20 map, top 5 % = 20 pixels, box of 2x3 = 6 pixels: the 6 box pixels plus 14 zero-valued
    # pixels (drawn at random among the zeros, all outside the box) -> IoU 6 / 20.
    mask = box(20, 20, slice(10, 12), slice(4, 7))[None]
    maps = mask.astype(np.float32)
    assert iou_top_fraction(maps, mask, 0.05)[0] == pytest.approx(6 / 20)
    top = top_fraction_masks(maps, 0.05)[0]
    assert top[mask[0]].all() and top.sum() == 20 and not top[0, :14].all()


def test_tied_maximum_scores_the_fraction_of_tied_pixels_inside():
    mask = box(8, 8, slice(4, 6), slice(4, 6))[None].repeat(2, axis=0)
    maps = np.zeros((2, 8, 8), dtype=np.float32)
    maps[0, 0, 0] = maps[0, 5, 5] = 1.0  # max tied outside (first in flat order) and inside
    maps[1, 0, 0] = 1.0  # max only outside
    maps[1, 5, 5] = 0.9
    assert pointing_game(maps, mask).tolist() == [0.5, 0.0]


def test_empty_mask_is_nan_for_every_metric():
    maps = np.random.default_rng(0).random((2, 6, 6))
    masks = np.zeros((2, 6, 6), dtype=bool)
    masks[1, 2:4, 2:4] = True
    for metric in (pointing_game, energy_in_box, iou_top_fraction, auroc):
        values = metric(maps, masks)
        assert math.isnan(values[0]) and not math.isnan(values[1]), metric.__name__


def test_top_k_is_exactly_ceil_fraction_even_for_a_constant_map():
    maps = np.full((2, 9, 11), 0.5)
    for fraction, k in [(0.05, math.ceil(0.05 * 99)), (0.07, 7), (0.5, 50), (1.0, 99)]:
        top = top_fraction_masks(maps, fraction)
        assert top.sum(axis=(1, 2)).tolist() == [k, k]
        if k < 99:
            assert not top.reshape(2, -1)[:, :k].all(axis=1).any()  # ties never go to the lowest flat indices
    # 0.07 * 100 is 7.000000000000001 in floating point: still exactly 7 pixels
    assert top_fraction_masks(np.zeros((1, 10, 10)), 0.07).sum() == 7


def test_energy_in_box():
    mask = box(10, 10, slice(0, 5), slice(0, 5))[None]
    assert energy_in_box(mask.astype(float), mask)[0] == pytest.approx(1.0)
    assert energy_in_box(np.ones((1, 10, 10)), mask)[0] == pytest.approx(0.25)
    assert energy_in_box(np.zeros((1, 10, 10)), mask)[0] == pytest.approx(0.25)  # zero mass: the area fraction
    with pytest.raises(MapError, match="negative"):
        energy_in_box(-np.ones((1, 10, 10)), mask)


def test_auroc_of_mask_complement_constant_and_hand_cases():
    mask = box(8, 8, slice(2, 5), slice(1, 7))[None]
    assert auroc(mask.astype(float), mask)[0] == pytest.approx(1.0)
    assert auroc((~mask).astype(float), mask)[0] == pytest.approx(0.0)
    assert auroc(np.full((1, 8, 8), 0.3), mask)[0] == pytest.approx(0.5)
    assert math.isnan(auroc(np.ones((1, 8, 8)), np.ones((1, 8, 8), dtype=bool))[0])
    # inside scores {0.4, 0.8} vs outside {0.1, 0.5}: 3 of 4 pairs won -> 0.75
    maps = np.array([[[0.1, 0.4, 0.5, 0.8]]])
    inside = np.array([[[False, True, False, True]]])
    assert auroc(maps, inside)[0] == pytest.approx(0.75)
    # inside {0.4, 0.9} vs outside {0.4, 0.1}: one tie counts 1/2 -> 3.5 / 4
    maps = np.array([[[0.4, 0.4, 0.1, 0.9]]])
    inside = np.array([[[True, False, False, True]]])
    assert auroc(maps, inside)[0] == pytest.approx(0.875)


def test_localisation_rejects_bad_shapes_and_non_finite_maps():
    with pytest.raises(MapError, match="shape|must both"):
        pointing_game(np.zeros((1, 4, 4)), np.zeros((1, 4, 5), dtype=bool))
    bad = np.zeros((2, 4, 4))
    bad[1, 0, 0] = np.nan
    with pytest.raises(MapError, match=r"\[1\]"):
        auroc(bad, np.ones((2, 4, 4), dtype=bool))


# ---------------------------------------------------------------- faithfulness


def test_all_ones_map_leaves_similarity_unchanged(model, batch):
    images, tokens = batch
    s, s_prime = image_confidence(model, images, tokens, torch.ones(3, SIZE, SIZE))
    assert np.array_equal(s, s_prime)
    scores = confidence_scores(s, s_prime)
    assert scores["drop"].tolist() == [0.0, 0.0, 0.0] and scores["increase"].tolist() == [0.0, 0.0, 0.0]
    # a zero map sends every pixel to the grey fill: s' changes
    _, s_zero = image_confidence(model, images, tokens, np.zeros((3, SIZE, SIZE), np.float32), batch_size=2)
    assert not np.allclose(s_zero, s)
    assert np.allclose(s, model.similarity(images, tokens).double().numpy())


def test_first_row_broadcast_scales_every_row_by_the_first_map_row():
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 5, 4, generator=gen)
    maps = torch.rand(2, 5, 4, generator=gen)
    full = masked_input(images, maps, "full")
    first = masked_input(images, maps, "first_row")
    assert not torch.allclose(full, first)
    assert torch.allclose(full, images * maps[:, None])
    for i in range(5):
        assert torch.allclose(first[:, :, i, :], images[:, :, i, :] * maps[:, None, 0, :])
    same_rows = maps[:, :1, :].expand(-1, 5, -1)
    assert torch.equal(masked_input(images, same_rows, "full"), masked_input(images, same_rows, "first_row"))
    with pytest.raises(MapError, match="map_broadcast"):
        masked_input(images, maps, "columns")
    with pytest.raises(MapError, match="do not match"):
        masked_input(images, maps[:, :4], "full")


def test_confidence_scores_hand_values():
    s = np.array([0.5, 0.3, 0.2, -0.1])
    s_prime = np.array([0.4, 0.35, 0.2, -0.3])
    absolute = confidence_scores(s, s_prime, "absolute")
    assert np.allclose(absolute["drop"], [0.1, 0.0, 0.0, 0.2])
    assert absolute["increase"].tolist() == [0.0, 1.0, 0.0, 0.0]
    relative = confidence_scores(s, s_prime, "relative")
    assert np.allclose(relative["drop"][:3], [0.2, 0.0, 0.0]) and math.isnan(relative["drop"][3])
    assert relative["increase"].tolist() == absolute["increase"].tolist()
    with pytest.raises(MapError, match="drop_variant"):
        confidence_scores(s, s_prime, "percent")


def test_text_keep_tokens_keeps_above_median_words_and_sot_eot():
    tokens = torch.zeros(2, 10, dtype=torch.long)
    tokens[0, :6] = torch.tensor([SOT, 10, 20, 30, 40, EOT])
    tokens[1, :4] = torch.tensor([SOT, 11, 12, EOT])
    # text 0: median of (0, .9, .1, .5, .7, .2) is .35 -> keep 10, 30, 40; SOT/EOT always kept
    # text 1 (map over the whole context): median of (.5, .5, .5, .5) -> no word is strictly above
    maps = [np.array([0.0, 0.9, 0.1, 0.5, 0.7, 0.2]), np.r_[np.full(4, 0.5), np.full(6, 9.0)]]
    kept = text_keep_tokens(tokens, maps)
    assert kept[0].tolist() == [SOT, 10, 0, 30, 40, EOT, 0, 0, 0, 0]
    assert kept[1].tolist() == [SOT, 0, 0, EOT, 0, 0, 0, 0, 0, 0]
    assert tokens[0, 2] == 20  # input untouched
    with pytest.raises(MapError, match="text 0 has 5 scores"):
        text_keep_tokens(tokens, [np.zeros(5), maps[1]])


def test_text_confidence_uses_the_reduced_tokens(model, batch):
    images, tokens = batch
    eot = tokens.argmax(-1).tolist()
    rng = np.random.default_rng(0)
    maps = [rng.random(e + 1) for e in eot]
    s, s_prime = text_confidence(model, images, tokens, maps, batch_size=2)
    assert np.allclose(s, model.similarity(images, tokens).double().numpy())
    reduced = text_keep_tokens(tokens, maps)
    assert np.allclose(s_prime, model.similarity(images, reduced).double().numpy())
    assert not np.allclose(s, s_prime)


# ---------------------------------------------------------------- sanity


def test_spearman_of_map_with_itself_negation_and_monotone_transform():
    maps = np.random.default_rng(0).random((3, 7, 7))
    assert np.allclose(spearman_maps(maps, maps), 1.0)
    assert np.allclose(spearman_maps(maps, -maps), -1.0)
    assert np.allclose(spearman_maps(maps, maps**3), 1.0)  # ranks only
    constant = maps.copy()
    constant[1] = 0.5
    rho = spearman_maps(maps, constant)
    assert math.isnan(rho[1]) and np.allclose(rho[[0, 2]], 1.0)


# ---------------------------------------------------------------- stats


def test_bootstrap_ci_contains_mean_is_deterministic_and_ignores_nan():
    values = np.random.default_rng(0).normal(2.0, 1.0, 400)
    est, low, high = bootstrap_ci(values, n_resamples=2000, seed=7)
    assert est == pytest.approx(values.mean()) and low < est < high
    assert (est, low, high) == bootstrap_ci(values, n_resamples=2000, seed=7)
    assert (low, high) != bootstrap_ci(values, n_resamples=2000, seed=8)[1:]
    # the 95 % half-width of a mean is about 1.96 * sd / sqrt(n)
    assert (high - low) / 2 == pytest.approx(1.96 * values.std() / math.sqrt(400), rel=0.15)
    with_nan = np.r_[values, np.nan, np.nan]
    assert bootstrap_ci(with_nan, n_resamples=2000, seed=7) == (est, low, high)
    assert all(math.isnan(v) for v in bootstrap_ci([np.nan, np.nan]))
    assert bootstrap_ci([3.0]) == (3.0, 3.0, 3.0)


def test_summarise_gives_a_tidy_table_per_group_and_metric():
    df = pd.DataFrame(
        {
            "method": ["a", "a", "a", "b", "b", "b"],
            "x": [1.0, 2.0, 3.0, 4.0, np.nan, 6.0],
            "y": [0.0, 1.0, 0.0, 1.0, 1.0, 1.0],
        }
    )
    out = summarise(df, ["method"], ["x", "y"], n_resamples=200, ci=0.95, seed=0)
    assert list(out.columns) == ["method", "metric", "mean", "ci_low", "ci_high", "n"]
    row = out.set_index(["method", "metric"])
    assert row.loc[("a", "x"), "mean"] == pytest.approx(2.0) and row.loc[("b", "x"), "n"] == 2
    assert row.loc[("b", "x"), "mean"] == pytest.approx(5.0) and row.loc[("b", "y"), "ci_low"] == 1.0
    overall = summarise(df, [], ["y"], n_resamples=200, ci=0.9, seed=0)
    assert overall.shape == (1, 5) and overall["n"].item() == 6
