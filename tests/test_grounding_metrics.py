"""MS-CXR grounding metrics (CNR, mIoU), per-box recall, the pointing game's 15-pixel tolerance
and the relative tie rule, on hand-made maps whose values are computed by hand."""

import math

import numpy as np
import pytest

from matex.data.transforms import box_mask
from matex.metrics.localisation import (
    GROUNDING_ANCHORS,
    MIOU_THRESHOLDS,
    TIE_RTOL,
    auroc,
    box_recall,
    cnr,
    iou_top_fraction,
    miou,
    pointing_game,
    tie_groups,
)


def box(h: int, w: int, rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros((h, w), dtype=bool)
    mask[rows, cols] = True
    return mask


# ---------------------------------------------------------------- CNR


def test_cnr_hand_values_constant_wrong_place_and_perfect_map():
    mask = box(4, 4, slice(None), slice(0, 2))[None]  # left half, 8 pixels
    good = np.zeros((1, 4, 4))
    good[0, :, 0] = 1.0
    good[0, :, 1] = 3.0  # inside: mean 2, var 1; outside: 0, var 0
    assert cnr(good, mask)[0] == pytest.approx(2.0)
    # affine rescaling (min-max normalisation) leaves it unchanged
    assert cnr(0.1 * good + 0.4, mask)[0] == pytest.approx(2.0)
    # a constant map: no contrast, 0 and never NaN
    for value in (0.0, 0.7):
        assert cnr(np.full((1, 4, 4), value), mask)[0] == 0.0
    # wrong place: a 2x2 box in a 10x10 map, the map's 4 hot pixels outside it
    small = box(10, 10, slice(0, 2), slice(0, 2))[None]
    wrong = np.zeros((1, 10, 10))
    wrong[0, 8:, 8:] = 1.0  # inside: 0 +- 0; outside: p = 4/96, var p(1-p)
    p = 4 / 96
    assert cnr(wrong, small)[0] == pytest.approx(p / math.sqrt(p * (1 - p)))
    assert cnr(wrong, small)[0] < 0.21
    # a map equal to the mask: both sides noiseless with different means -> +inf, not 0 or NaN
    assert cnr(small.astype(float), small)[0] == math.inf
    # empty or full mask: one side missing -> NaN
    assert np.isnan(cnr(good, np.zeros((1, 4, 4), bool))[0])
    assert np.isnan(cnr(good, np.ones((1, 4, 4), bool))[0])


# ---------------------------------------------------------------- mIoU


def test_miou_hand_values():
    mask = np.zeros((1, 1, 10), dtype=bool)
    mask[0, 0, 7:] = True  # the three highest pixels
    ramp = (np.arange(10) / 9.0).reshape(1, 1, 10)  # min-max normalised already
    # thresholds 0.1..0.5 select 9, 8, 7, 6, 5 pixels, every one containing the 3 box pixels
    expected = np.mean([3 / 9, 3 / 8, 3 / 7, 3 / 6, 3 / 5])
    assert MIOU_THRESHOLDS == (0.1, 0.2, 0.3, 0.4, 0.5)
    assert miou(ramp, mask)[0] == pytest.approx(expected)
    # normalised inside: the same map on another scale scores the same
    assert miou(5 * ramp - 2, mask)[0] == pytest.approx(expected)
    # a map equal to the box mask scores 1, the wrong place 0, a constant map 0 (selects nothing)
    square = box(8, 8, slice(2, 5), slice(2, 5))[None]
    assert miou(square.astype(float), square)[0] == 1.0
    assert miou(np.roll(square, 3, axis=2).astype(float), square)[0] == 0.0
    assert miou(np.full((1, 8, 8), 0.3), square)[0] == 0.0
    assert np.isnan(miou(ramp, np.zeros_like(mask))[0])


def test_grounding_anchors_are_in_one_place():
    assert GROUNDING_ANCHORS["BioViL"]["cnr"] == 1.07 and GROUNDING_ANCHORS["BioViL"]["miou"] == 0.229
    assert GROUNDING_ANCHORS["BioViL-T"]["cnr"] == 1.33 and GROUNDING_ANCHORS["BioViL-T"]["miou"] == 0.240


# ---------------------------------------------------------------- box_recall on a two-lesion film


def _bump(size: int, cy: float, cx: float, sigma: float) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size] + 0.5
    return np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma**2))


def test_box_recall_on_a_film_with_two_lesions():
    size = 224
    # two effusion-like lesions, one per lung base: boxes (x0, y0, x1, y1)
    boxes = [(30.0, 140.0, 90.0, 200.0), (134.0, 140.0, 194.0, 200.0)]
    per_box = np.stack([box_mask([b], size) for b in boxes])
    both = _bump(size, 170, 60, 12) + 0.9 * _bump(size, 170, 164, 12)
    one = _bump(size, 170, 60, 12)
    elsewhere = _bump(size, 40, 112, 12)  # the apex: neither box
    maps = np.stack([both, one, elsewhere])
    radius = 0.1 * size
    recall = box_recall(maps, [per_box] * 3, radius, seeds=[0, 1, 2])
    assert recall.tolist() == [1.0, 0.5, 0.0]
    # the union of the boxes cannot see the difference between "both" and "one" on the pointing game
    union = np.repeat(per_box.any(axis=0)[None], 2, axis=0)
    assert pointing_game(maps[:2], union).tolist() == [1.0, 1.0]
    # no box at all (both clipped away) -> NaN; a single box is the argmax-in-box test
    empty = np.zeros((2, size, size), dtype=bool)
    assert np.isnan(box_recall(maps[:1], [empty], radius, seeds=[0])[0])
    assert box_recall(maps[1:2], [per_box[:1]], radius, seeds=[0])[0] == 1.0


# ---------------------------------------------------------------- pointing game tolerance


def test_pointing_game_tolerance_of_15_pixels():
    size = 100
    mask = box(size, size, slice(40, 60), slice(40, 60))[None]
    maps = np.zeros((3, size, size))
    maps[0, 50, 70] = 1.0  # 10 pixels right of the box's last column (59)
    maps[1, 50, 80] = 1.0  # 21 pixels away
    maps[2, 50, 50] = 1.0  # inside
    masks = np.repeat(mask, 3, axis=0)
    assert pointing_game(maps, masks).tolist() == [0.0, 0.0, 1.0]
    assert pointing_game(maps, masks, tolerance=15).tolist() == [1.0, 0.0, 1.0]


# ---------------------------------------------------------------- ties relative to the values compared


def test_relative_ties_keep_distinct_float16_values_far_below_the_maximum():
    # a narrow Gaussian bump stored in float16: its tail holds distinct values below 1e-6 x max,
    # which a tolerance proportional to the maximum merged with the zeros
    size = 224
    bump = _bump(size, 112, 112, 3.0).astype(np.float16).astype(np.float32)[None]
    tail = (bump > 0) & (bump < 1e-6 * bump.max())
    assert tail.sum() > 50  # the test is meaningful: these values were tied with 0 before
    mask = box(size, size, slice(92, 132), slice(92, 132))[None]
    got = iou_top_fraction(bump, mask, 0.05)[0]
    # independent: exact order (only exactly equal values tie), ties at the k-th value by expectation
    flat, inside = bump.ravel().astype(np.float64), mask.ravel()
    k = math.ceil(0.05 * flat.size)
    kth = np.sort(flat)[::-1][k - 1]
    above, tied = flat > kth, flat == kth
    r = k - above.sum()
    inter = (above & inside).sum() + r * (tied & inside).sum() / tied.sum()  # E[X], X hypergeometric
    approx = inter / (k + inside.sum() - inter)
    assert got == pytest.approx(approx, abs=2e-3)
    # the old rule (values within 1e-6 x max of each other tied) scored visibly less
    old_above = flat > kth + 1e-6 * flat.max()
    old_tied = ~old_above & (flat >= kth - 1e-6 * flat.max())
    old_r = k - old_above.sum()
    old_inter = (old_above & inside).sum() + old_r * (old_tied & inside).sum() / old_tied.sum()
    assert got - old_inter / (k + inside.sum() - old_inter) > 0.03
    # AUROC uses the same groups: the tail now ranks above the zeros
    assert auroc(bump, mask)[0] > auroc(np.where(tail, 0, bump), mask)[0]


def test_tie_groups_are_relative_to_the_values_compared():
    values = np.array([[0.0, 0.0, 1e-7, 1e-7 * (1 + 1e-8), 2e-7, 1.0, 1.0 - 1e-7, 1.0 - 4 * TIE_RTOL]])
    g = tie_groups(values)[0]
    assert g[0] == g[1]  # exact zeros
    assert g[2] == g[3] and g[1] < g[2] < g[4]  # tiny values keep their order, round-off merges
    assert g[5] == g[6] and g[7] < g[6]  # near the max: float32 round-off ties, 4 x rtol does not


def test_constant_map_iou_at_5_percent_is_fp_over_f_plus_p_minus_fp_not_the_area_fraction():
    size = 224
    mask = box(size, size, slice(80, 140), slice(80, 140))[None]  # 3600 pixels: f = 7.2 %
    f, p = mask.mean(), 0.05
    assert f == pytest.approx(0.072, abs=5e-4)
    got = iou_top_fraction(np.full((1, size, size), 0.5), mask, p)[0]
    assert got == pytest.approx(f * p / (f + p - f * p), abs=1e-3)
    assert got == pytest.approx(0.030, abs=1e-3) and got < f / 2
