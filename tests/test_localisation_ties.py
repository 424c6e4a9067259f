"""Tie rules of the localisation metrics (docs/evaluation.md): a tied maximum or a tied
top-k threshold is scored by expectation under a random tie-break, a zero map scores the box's
area fraction, and every method is scored on the same pairs."""

import math

import numpy as np
import open_clip
import pandas as pd
import pytest
import torch

from matex.data.transforms import InputGeometry
from matex.io import write_npz
from matex.metrics.localisation import (
    TIE_RTOL,
    auroc,
    energy_in_box,
    iou_top_fraction,
    pointing_game,
    top_fraction_masks,
)
from matex.models.base import MatexModel


def box(h: int, w: int, rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros((h, w), dtype=bool)
    mask[rows, cols] = True
    return mask


def monte_carlo_iou(value_map: np.ndarray, mask: np.ndarray, fraction: float, draws: int, seed: int) -> float:
    """Independent re-derivation: the mean IoU of top-k sets whose ties are broken by random keys."""
    rng = np.random.default_rng(seed)
    flat, inside = value_map.ravel(), mask.ravel()
    k = math.ceil(round(fraction * flat.size, 9))
    ious = []
    for _ in range(draws):
        top = np.zeros(flat.size, dtype=bool)
        top[np.lexsort((rng.random(flat.size), -flat))[:k]] = True
        ious.append((top & inside).sum() / (top | inside).sum())
    return float(np.mean(ious))


# ---------------------------------------------------------------- constant, zero and plateau maps


def test_constant_map_scores_chance_not_a_hit():
    mask = box(20, 20, slice(0, 5), slice(0, 8))[None]  # 40 of 400 pixels, top-left corner
    area = mask.mean()
    const = np.full((1, 20, 20), 0.7, dtype=np.float32)
    assert pointing_game(const, mask)[0] == pytest.approx(area)
    assert energy_in_box(const, mask)[0] == pytest.approx(area)
    assert auroc(const, mask)[0] == pytest.approx(0.5)
    # top 5 % = 20 pixels: in row-major order they would all sit in the box's first row (IoU 0.5)
    iou = iou_top_fraction(const, mask, 0.05)[0]
    assert iou == pytest.approx(monte_carlo_iou(const[0], mask[0], 0.05, 4000, 1), abs=0.01)
    assert iou < 0.1


def test_zero_map_scores_the_area_fraction_on_every_localisation_metric():
    mask = box(10, 10, slice(2, 7), slice(2, 7))[None]  # 25 % of the map
    zero = np.zeros((1, 10, 10), dtype=np.float32)
    for metric in (pointing_game, energy_in_box):
        value = metric(zero, mask)[0]
        assert not math.isnan(value) and value == pytest.approx(0.25), metric.__name__
    assert np.isfinite(iou_top_fraction(zero, mask, 0.05)[0])


def test_plateau_maximum_is_credited_only_for_its_part_inside_the_box():
    # a prior-like map: a 10x10 plateau at the maximum, of which a 4x5 corner lies in the box
    mask = box(32, 32, slice(6, 10), slice(5, 10))[None]
    plateau = np.zeros((1, 32, 32), dtype=np.float32)
    plateau[0, 6:16, 5:15] = 1.0
    plateau[0, 16:20, 5:15] = 0.5
    assert pointing_game(plateau, mask)[0] == pytest.approx(20 / 100)
    # a sharp map with its single peak in the box still scores a full hit
    sharp = plateau * 0.5
    sharp[0, 7, 7] = 1.0
    assert pointing_game(sharp, mask)[0] == 1.0
    # IoU@10 %: 103 pixels among the 100 plateau pixels and the 40 half-height ones
    expected = monte_carlo_iou(plateau[0], mask[0], 0.10, 4000, 2)
    assert iou_top_fraction(plateau, mask, 0.10)[0] == pytest.approx(expected, abs=0.005)


def test_float32_round_off_is_a_tie_but_a_float16_step_is_not():
    mask = box(4, 4, slice(0, 1), slice(0, 1))[None]  # only pixel (0, 0)
    maps = np.zeros((3, 4, 4), dtype=np.float32)
    maps[:, 0, 0] = 1.0
    maps[0, 3, 3] = np.float32(1.0) - np.float32(2**-23)  # one float32 ulp below: tied
    maps[1, 3, 3] = np.float32(1.0) - np.float32(2**-11)  # one float16 step below: not tied
    maps[2, 3, 3] = np.float32(1.0) - np.float32(4 * TIE_RTOL)  # beyond the tolerance: not tied
    masks = np.repeat(mask, 3, axis=0)
    assert pointing_game(maps, masks).tolist() == [0.5, 1.0, 1.0]


def test_iou_expectation_matches_random_tie_breaking_on_three_levels():
    rng = np.random.default_rng(3)
    levels = rng.choice([0.2, 0.6, 0.6, 1.0], size=(1, 12, 12)).astype(np.float32)
    mask = box(12, 12, slice(3, 9), slice(2, 7))[None]
    for fraction in (0.05, 0.25, 0.6):
        exact = iou_top_fraction(levels, mask, fraction)[0]
        assert exact == pytest.approx(monte_carlo_iou(levels[0], mask[0], fraction, 3000, 4), abs=0.01)


def test_top_fraction_masks_break_ties_by_seeded_random_order():
    const = np.zeros((2, 20, 20))
    top = top_fraction_masks(const, 0.1)
    assert top.sum(axis=(1, 2)).tolist() == [40, 40]
    assert not top[:, :2, :].all(axis=(1, 2)).any()  # not the first two rows
    assert np.array_equal(top, top_fraction_masks(const, 0.1))  # deterministic for a seed
    assert not np.array_equal(top, top_fraction_masks(const, 0.1, seed=1))
    # distinct values are still taken strictly by value
    ramp = np.arange(400, dtype=float).reshape(1, 20, 20)
    assert top_fraction_masks(ramp, 0.1)[0].ravel()[-40:].all()


# ---------------------------------------------------------------- identical pair sets across methods

SIZE = 56


def _tiny_model() -> MatexModel:
    torch.manual_seed(0)
    clip = open_clip.CLIP(
        embed_dim=32,
        vision_cfg={"image_size": SIZE, "patch_size": 8, "width": 32, "layers": 2, "head_width": 16},
        text_cfg={"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    ).eval()
    return MatexModel(clip, open_clip.tokenizer.SimpleTokenizer(context_length=16), InputGeometry(SIZE))


def test_every_method_is_scored_on_the_same_pairs(tmp_path):
    from matex.metrics.evaluate import evaluate_maps

    pairs = pd.DataFrame(
        {
            "pair_id": ["a", "b", "c", "d"],
            "category": ["Pneumonia"] * 4,
            "phrase": ["left lower opacity", "cardiomegaly", "right effusion", "no box"],
            "boxes": [[(4.0, 30.0, 20.0, 50.0)], [(18.0, 20.0, 40.0, 44.0)], [(34.0, 30.0, 52.0, 52.0)], []],
        }
    )
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(4, SIZE, SIZE), dtype=np.uint8)
    plateau = np.zeros((SIZE, SIZE), dtype=np.float16)
    plateau[10:40, 10:40] = 1.0
    method_maps = {
        "zero": {p: np.zeros((SIZE, SIZE), dtype=np.float16) for p in pairs["pair_id"]},
        "constant": {p: np.full((SIZE, SIZE), 0.5, dtype=np.float16) for p in pairs["pair_id"]},
        "plateau": {p: plateau for p in pairs["pair_id"]},
        "noise": {p: rng.random((SIZE, SIZE)).astype(np.float16) for p in pairs["pair_id"]},
    }
    model = _tiny_model()
    cfg = {"evaluation": {"localisation": {"top_fraction": 0.05}}}
    tables = {}
    for name, arrays in method_maps.items():
        write_npz(tmp_path / f"{name}.npz", arrays, {"method": name})
        tables[name] = evaluate_maps(model, name, pairs, images, tmp_path / f"{name}.npz", cfg, progress=False)
    for metric in ("pointing_game", "energy_in_box", "iou_top5", "auroc"):
        scored = {name: frozenset(t.loc[np.isfinite(t[metric]), "pair_id"]) for name, t in tables.items()}
        assert set(scored.values()) == {frozenset({"a", "b", "c"})}, (metric, scored)
    # the zero map scores chance, not a hit: pair a's box covers 16 x 20 of 56 x 56 pixels
    zero = tables["zero"].set_index("pair_id")
    assert zero.loc["a", "pointing_game"] == pytest.approx(16 * 20 / SIZE**2)
    assert zero.loc["a", "energy_in_box"] == pytest.approx(16 * 20 / SIZE**2)
