"""Localisation metrics of attribution maps against box masks (docs/evaluation.md).

Every function takes ``maps`` (B, H, W) float and ``masks`` (B, H, W) bool (the union of a pair's
boxes, aligned to the model input) and returns one float per pair, shape (B,); ``box_recall``
takes one mask per box instead. A pair whose mask cannot define the metric (an empty box mask; for
AUROC and CNR also a full one) gets NaN, so aggregation excludes it instead of silently counting
it as a hit or a miss. MS-CXR's grounding metrics (``cnr``, ``miou``) and their published values
(``GROUNDING_ANCHORS``) are at the end.

Ties are scored by expectation (docs/evaluation.md): a method is credited with what a uniformly
random tie-break would give it, never with the tie-break most favourable to it or with row-major
order, so constant, all-zero and plateau maps score chance rather than a hit. Which values tie is
defined once, relative to the values compared (``tie_groups``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.ndimage import distance_transform_edt
from scipy.special import gammaln

from ..errors import MapError

# Relative tolerance for tied map values (see tie_groups).
TIE_RTOL = 1e-6


def _check(maps, masks, metric: str, non_negative: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Flatten to (B, H*W) float64 / bool after checking shapes and finiteness."""
    maps = np.asarray(maps, dtype=np.float64)
    masks = np.asarray(masks)
    if maps.ndim != 3 or maps.shape != masks.shape:
        raise MapError(f"{metric}: maps {maps.shape} and masks {masks.shape} must both be (B, H, W)")
    if masks.dtype != bool:
        if not np.isin(masks, (0, 1)).all():
            raise MapError(f"{metric}: masks must be boolean (or 0/1), got values outside {{0, 1}}")
        masks = masks.astype(bool)
    if not np.isfinite(maps).all():
        bad = np.flatnonzero(~np.isfinite(maps).reshape(len(maps), -1).all(axis=1))
        raise MapError(f"{metric}: maps of pairs {bad.tolist()} (batch rows) are not finite")
    if non_negative and (maps < 0).any():
        bad = np.flatnonzero((maps < 0).reshape(len(maps), -1).any(axis=1))
        raise MapError(f"{metric}: maps must be >= 0; batch rows {bad.tolist()} have negative values")
    b = maps.shape[0]
    return maps.reshape(b, -1), masks.reshape(b, -1)


def tie_groups(flat: np.ndarray, rtol: float = TIE_RTOL, order: np.ndarray | None = None) -> np.ndarray:
    """(B, N) int64 tie-group index of every value, increasing with the value (0 = the smallest).

    Sorted by value, two neighbours fall into one group when they differ by at most ``TIE_RTOL``
    times the larger of their two magnitudes: the tolerance is relative to the values compared,
    never to the map's maximum. About 8 float32 ulps (eps = 1.19e-7), it merges the round-off that
    upsampling or normalising a flat region leaves behind, and never two distinct float16 values
    (their relative step is at least 2**-11 = 4.9e-4, also far below the maximum). Zero ties only
    with zero. Every tie rule (pointing game, IoU@k, AUROC) reads these groups. ``rtol=0``: only
    exactly equal values tie. ``order``: ``np.argsort(flat, axis=1)`` when the caller has it.
    """
    flat = np.asarray(flat)
    order = np.argsort(flat, axis=1) if order is None else order  # any order of equal values will do
    ordered = np.take_along_axis(flat, order, axis=1).astype(np.float64)
    scale = np.maximum(np.abs(ordered[:, 1:]), np.abs(ordered[:, :-1]))
    new_group = (ordered[:, 1:] - ordered[:, :-1]) > rtol * scale
    sorted_groups = np.concatenate([np.zeros((len(flat), 1), dtype=np.int64), np.cumsum(new_group, axis=1)], axis=1)
    groups = np.empty_like(sorted_groups)
    np.put_along_axis(groups, order, sorted_groups, axis=1)
    return groups


def group_average_ranks(groups: np.ndarray) -> np.ndarray:
    """(B, N) float64 average rank (1-based) of each value's tie group (Mann-Whitney's ties)."""
    ranks = np.empty(groups.shape, dtype=np.float64)
    for i, g in enumerate(groups):
        counts = np.bincount(g)
        before = np.concatenate([[0], np.cumsum(counts)[:-1]])
        ranks[i] = (before + (counts + 1) / 2.0)[g]
    return ranks


def pointing_game(maps, masks, tolerance: float = 0.0, groups: np.ndarray | None = None) -> np.ndarray:
    """Fraction of the pixels attaining the map's maximum that lie inside the mask (Zhang et al.,
    "Top-down neural attention by excitation backprop", ECCV 2016 / IJCV 2018, scored by
    expectation).

    A unique maximum scores 1 (hit) or 0 (miss). A tied maximum (one :func:`tie_groups` group)
    scores the expected hit when the tie is broken uniformly at random, |tied ∩ mask| / |tied|,
    so a constant or all-zero map scores the mask's area fraction (chance) and a plateau is
    credited only for the part of it inside the box (Quantus's PointingGame, like our old rule,
    credits a hit when any tied pixel is inside). ``tolerance`` > 0 is Zhang et al.'s original
    rule: a maximum within ``tolerance`` pixels (Euclidean, pixel centres) of the mask is a hit;
    they used 15 pixels. An empty mask gives NaN and is excluded. ``groups``: the maps'
    :func:`tie_groups`, when the caller already has them (one sort serves every metric).
    """
    flat, inside = _check(maps, masks, "pointing_game")
    groups = tie_groups(flat) if groups is None else groups
    tied = groups == groups.max(axis=1, keepdims=True)
    if tolerance <= 0:
        hit = (tied & inside).sum(axis=1) / tied.sum(axis=1).astype(np.float64)
    else:
        width = np.asarray(masks).shape[-1]
        hit = np.array([_near_fraction(t, m, width, tolerance) for t, m in zip(tied, inside)])
    hit[~inside.any(axis=1)] = np.nan
    return hit


def _near_fraction(tied: np.ndarray, inside: np.ndarray, width: int, radius: float) -> float:
    """Fraction of the ``tied`` pixels (flat bool) lying within ``radius`` pixels (Euclidean,
    pixel centres) of a mask pixel; directly for a few tied pixels, by a distance transform else."""
    if not inside.any():
        return np.nan
    idx = np.flatnonzero(tied)
    if len(idx) > 64:
        near = distance_transform_edt(~inside.reshape(-1, width)).ravel() <= radius
        return float(near[idx].mean())
    ty, tx = np.divmod(idx, width)
    my, mx = np.divmod(np.flatnonzero(inside), width)
    d2 = ((ty[:, None] - my[None, :]) ** 2 + (tx[:, None] - mx[None, :]) ** 2).min(axis=1)
    return float((d2 <= radius**2).mean())


def energy_in_box(maps, masks) -> np.ndarray:
    """Map mass inside the mask / total map mass (maps must be >= 0; Wang et al., Score-CAM,
    CVPRW 2020).

    A map with zero total mass scores the mask's area fraction, the value of a uniform map (it
    distributes nothing, so it is scored like spreading its attention evenly); every method is
    then scored on the same pairs. An empty mask gives NaN.
    """
    flat, inside = _check(maps, masks, "energy_in_box", non_negative=True)
    total = flat.sum(axis=1)
    inner = (flat * inside).sum(axis=1)
    area = inside.mean(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        energy = np.where(total > 0, inner / np.where(total > 0, total, 1.0), area)
    energy[~inside.any(axis=1)] = np.nan
    return energy


def top_k_count(fraction: float, n_pixels: int) -> int:
    """Exactly ceil(fraction * n_pixels), guarded against float round-off (0.07 * 100 is
    7.000000000000001 in binary floating point, whose ceil would be 8)."""
    if not 0.0 < fraction <= 1.0:
        raise MapError(f"top fraction must lie in (0, 1], got {fraction}")
    return max(1, math.ceil(round(fraction * n_pixels, 9)))


def top_fraction_masks(maps, fraction: float = 0.05, seed: int = 0) -> np.ndarray:
    """(B, H, W) bool of exactly ceil(fraction*H*W) highest pixels per map.

    Pixels are ordered by descending value; equal values are ordered by a random key drawn from
    ``default_rng(seed)``, never by position (a row-major order would turn a constant map's top
    pixels into the image's top rows). Deterministic for a seed.
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 3:
        raise MapError(f"top_fraction_masks: maps must be (B, H, W), got {maps.shape}")
    b, h, w = maps.shape
    k = top_k_count(fraction, h * w)
    flat = maps.reshape(b, -1)
    tie_key = np.random.default_rng(seed).random(flat.shape)
    order = np.lexsort((tie_key, -flat), axis=-1)[:, :k]  # last key is the primary one
    top = np.zeros((b, h * w), dtype=bool)
    np.put_along_axis(top, order, True, axis=1)
    return top.reshape(b, h, w)


def _expected_iou(values: np.ndarray, groups: np.ndarray, inside: np.ndarray, k: int) -> float:
    """E[IoU(top k, mask)] when the pixels tied at the k-th largest value are drawn at random.

    Pixels of a higher tie group than the k-th largest one are always selected (a of them);
    r = k - a more are drawn without replacement from the m pixels of its group, t of which are
    inside, so the number drawn inside is hypergeometric(m, t, r) and IoU = (i0 + X) / (k + |mask| - i0 - X).
    """
    kth_group = groups[np.argpartition(values, values.size - k)[values.size - k]]
    above = groups > kth_group
    tied = groups == kth_group
    i0 = int((above & inside).sum())
    m, t, r = int(tied.sum()), int((tied & inside).sum()), k - int(above.sum())
    x = np.arange(max(0, r - (m - t)), min(r, t) + 1)
    inter = i0 + x
    return float((_hypergeom_pmf(x, m, t, r) * inter / (k + int(inside.sum()) - inter)).sum())


def _log_choose(n, k) -> np.ndarray:
    return (
        gammaln(np.asarray(n, dtype=np.float64) + 1)
        - gammaln(np.asarray(k, dtype=np.float64) + 1)
        - gammaln(np.asarray(n, dtype=np.float64) - k + 1)
    )


def _hypergeom_pmf(x: np.ndarray, m: int, t: int, r: int) -> np.ndarray:
    """P(X = x) for X ~ hypergeometric (r draws from m items, t marked), via log-gamma
    (scipy.stats.hypergeom.pmf is ~1 s per call at m = 224**2)."""
    return np.exp(_log_choose(t, x) + _log_choose(m - t, r - x) - _log_choose(m, r))


def iou_top_fraction(maps, masks, fraction: float = 0.05, groups: np.ndarray | None = None) -> np.ndarray:
    """IoU between the map's top ceil(fraction*H*W) pixels and the mask (the top-k localisation
    of Chefer et al., CVPR 2021 / MATEX), its expected value when ties at the threshold are broken
    uniformly at random (exact, hypergeometric); empty mask -> NaN.

    A constant map thus scores the IoU of a random k-pixel set, never that of the image's first
    rows."""
    flat, inside = _check(maps, masks, "iou_top_fraction")
    k = top_k_count(fraction, flat.shape[1])
    groups = tie_groups(flat) if groups is None else groups
    return np.array(
        [_expected_iou(flat[i], groups[i], inside[i], k) if inside[i].any() else np.nan for i in range(len(flat))]
    )


def auroc(maps, masks, groups: np.ndarray | None = None) -> np.ndarray:
    """AUROC of pixel values as scores for mask membership (Mann-Whitney U with average ranks for
    ties, ties as :func:`tie_groups` defines them): U = sum of the inside pixels' ranks -
    n_in(n_in+1)/2, AUROC = U / (n_in * n_out).

    1 when every inside pixel outscores every outside one, 0.5 for a constant map. NaN when the
    mask is empty or covers the whole map (no negatives).
    """
    flat, inside = _check(maps, masks, "auroc")
    ranks = group_average_ranks(tie_groups(flat) if groups is None else groups)
    n_in = inside.sum(axis=1).astype(np.float64)
    n_out = inside.shape[1] - n_in
    rank_sum = (ranks * inside).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = (rank_sum - n_in * (n_in + 1) / 2.0) / (n_in * n_out)
    score[(n_in == 0) | (n_out == 0)] = np.nan
    return score


# ---------------------------------------------------------------- MS-CXR grounding metrics

# Published MS-CXR phrase grounding results, printed beside ours in the MS-CXR table (the papers
# compute them on their own similarity maps; see docs/evaluation.md). Source: the performance table of
# Microsoft's BioViL-T model card (Hugging Face microsoft/BiomedVLP-BioViL-T, which refers to Bannur et
# al., CVPR 2023), mean over runs: BioViL 1.07 +- 0.04 / 0.229 +- 0.005, BioViL-T 1.33 +- 0.04 /
# 0.240 +- 0.005. BioViL's own release (Boecking et al., ECCV 2022; the CXR-BERT-specialized model
# card) gives BioViL an average CNR of 1.027 under its original evaluation; the BioViL row here is the
# BioViL-T release's re-evaluation, so both rows come from one protocol.
BIOVIL_T_CARD = "BioViL-T model card, microsoft/BiomedVLP-BioViL-T (Bannur et al., CVPR 2023), MS-CXR phrase grounding"
GROUNDING_ANCHORS: dict[str, dict[str, float | str]] = {
    "BioViL": {"cnr": 1.07, "miou": 0.229, "source": BIOVIL_T_CARD},
    "BioViL-T": {"cnr": 1.33, "miou": 0.240, "source": BIOVIL_T_CARD},
}

# Thresholds of the mIoU (Boecking et al. 2022), applied to the min-max normalised map.
MIOU_THRESHOLDS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5)


def cnr(maps, masks) -> np.ndarray:
    """Contrast-to-noise ratio |mu_in - mu_out| / sqrt(var_in + var_out) of the map inside and
    outside the mask (Boecking et al., BioViL, ECCV 2022), population variances (ddof 0).

    Invariant to any affine rescaling a * M + b (a != 0), so min-max normalisation does not
    change it. A constant map scores 0 (no contrast), never NaN; a map whose two sides are
    each constant but different (a binary map equal to the mask) has no noise and scores +inf.
    An empty or full mask gives NaN (one side is missing).
    """
    flat, inside = _check(maps, masks, "cnr")
    n_in = inside.sum(axis=1)
    n_out = inside.shape[1] - n_in
    with np.errstate(invalid="ignore", divide="ignore"):
        mu_in = (flat * inside).sum(axis=1) / n_in
        mu_out = (flat * ~inside).sum(axis=1) / n_out
        var_in = (((flat - mu_in[:, None]) ** 2) * inside).sum(axis=1) / n_in
        var_out = (((flat - mu_out[:, None]) ** 2) * ~inside).sum(axis=1) / n_out
        contrast = np.abs(mu_in - mu_out)
        noise = np.sqrt(var_in + var_out)
        score = np.where(noise > 0, contrast / np.where(noise > 0, noise, 1.0), np.where(contrast > 0, np.inf, 0.0))
    score[(n_in == 0) | (n_out == 0)] = np.nan
    return score


def miou(maps, masks, thresholds: Sequence[float] = MIOU_THRESHOLDS) -> np.ndarray:
    """Mean over ``thresholds`` of IoU({M_norm >= t}, mask) (Boecking et al., ECCV 2022; BioViL-T,
    CVPR 2023), with M_norm the map min-max normalised to [0, 1].

    A constant map has no contrast: it selects no pixel and scores 0. An empty mask gives NaN.
    """
    flat, inside = _check(maps, masks, "miou")
    if len(thresholds) == 0:
        raise MapError("miou: give at least one threshold")
    lo, hi = flat.min(axis=1, keepdims=True), flat.max(axis=1, keepdims=True)
    span = hi - lo
    norm = np.where(span > 0, (flat - lo) / np.where(span > 0, span, 1.0), -np.inf)
    n_in = inside.sum(axis=1)
    ious = []
    for t in thresholds:
        sel = norm >= float(t)
        inter = (sel & inside).sum(axis=1)
        ious.append(inter / (sel.sum(axis=1) + n_in - inter).clip(min=1))
    score = np.mean(ious, axis=0)
    score[n_in == 0] = np.nan
    return score


def top_peaks(values: np.ndarray, n: int, radius: float, seed: int, groups: np.ndarray | None = None) -> np.ndarray:
    """Flat indices of the ``n`` highest peaks of one (H, W) map by greedy non-maximum
    suppression: take the highest remaining pixel, discard every pixel within ``radius`` pixels
    (Euclidean) of it, repeat. Tied values (:func:`tie_groups`) are taken in a random order
    seeded by ``seed``, never row-major. Fewer than ``n`` when the map runs out of pixels."""
    h, w = values.shape
    groups = tie_groups(values.reshape(1, -1))[0] if groups is None else np.asarray(groups).ravel()
    key = np.random.default_rng(int(seed)).random(h * w)
    rows, cols = np.divmod(np.arange(h * w), w)
    free = np.ones(h * w, dtype=bool)
    peaks = []
    for _ in range(n):
        if not free.any():
            break
        level = np.where(free, groups, -1)
        tied = np.flatnonzero(level == level.max())
        p = int(tied[np.argmin(key[tied])])
        peaks.append(p)
        free &= (rows - rows[p]) ** 2 + (cols - cols[p]) ** 2 > radius**2
    return np.array(peaks, dtype=np.int64)


def box_recall(
    maps, box_masks: Sequence[np.ndarray], radius: float, seeds: Sequence[int], groups: np.ndarray | None = None
) -> np.ndarray:
    """Fraction of a phrase's boxes that contain one of the map's top peaks, with as many peaks as
    boxes (:func:`top_peaks`, NMS radius ``radius`` pixels): a map that lights up only one of two
    effusions scores 0.5 where the union-of-boxes metrics may not notice.

    ``box_masks``: per pair, (n_boxes, H, W) bool, one mask per box; boxes that lie entirely
    outside the model input (empty masks) are not counted, and a pair without any box gives NaN.
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 3 or len(box_masks) != len(maps) or len(seeds) != len(maps):
        raise MapError(f"box_recall: maps {maps.shape}, {len(box_masks)} box sets and {len(seeds)} seeds must match")
    out = np.full(len(maps), np.nan)
    for i, (m, boxes, seed) in enumerate(zip(maps, box_masks, seeds)):
        boxes = np.asarray(boxes, dtype=bool).reshape(-1, *m.shape)
        boxes = boxes[boxes.any(axis=(1, 2))]
        if not len(boxes):
            continue
        if not np.isfinite(m).all():
            raise MapError(f"box_recall: map of batch row {i} is not finite")
        peaks = top_peaks(m, len(boxes), radius, seed, None if groups is None else groups[i])
        out[i] = boxes.reshape(len(boxes), -1)[:, peaks].any(axis=1).mean()
    return out
