"""Localisation metrics of attribution maps against box masks (docs/evaluation.md, lessons in 7).

Every function takes ``maps`` (B, H, W) float and ``masks`` (B, H, W) bool (the union of a pair's
boxes, aligned to the model input) and returns one float per pair, shape (B,). A pair whose mask
cannot define the metric (an empty box mask; for AUROC also a full one) gets NaN, so aggregation
excludes it instead of silently counting it as a hit or a miss.

Ties are scored by expectation (docs/evaluation.md): a method is credited with what a uniformly
random tie-break would give it, never with the tie-break most favourable to it or with row-major
order, so constant, all-zero and plateau maps score chance rather than a hit.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import gammaln
from scipy.stats import rankdata

from ..errors import MapError

# Relative tolerance for tied map values (see tie_tolerance).
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


def tie_tolerance(flat: np.ndarray) -> np.ndarray:
    """(B, 1) absolute tolerance under which two values of a map count as tied.

    ``TIE_RTOL`` times the map's largest magnitude: about 8 float32 ulps (eps = 1.19e-7), enough
    to merge the round-off that upsampling or normalising a flat region leaves behind, and far
    below the float16 storage step of the cached maps (4.9e-4 near 1), so two stored values that
    differ are never merged. An all-zero map gets tolerance 0 (all its pixels are exactly tied).
    """
    return TIE_RTOL * np.abs(flat).max(axis=1, keepdims=True)


def pointing_game(maps, masks) -> np.ndarray:
    """Fraction of the pixels attaining the map's maximum that lie inside the mask (Zhang et al.,
    "Top-down neural attention by excitation backprop", IJCV 2018, scored by expectation).

    A unique maximum scores 1 (hit) or 0 (miss). A tied maximum (within :func:`tie_tolerance`)
    scores the expected hit when the tie is broken uniformly at random, |tied ∩ mask| / |tied|,
    so a constant or all-zero map scores the mask's area fraction (chance) and a plateau is
    credited only for the part of it inside the box (Quantus's PointingGame, like our old rule,
    credits a hit when any tied pixel is inside). An empty mask gives NaN and is excluded.
    """
    flat, inside = _check(maps, masks, "pointing_game")
    tied = flat >= flat.max(axis=1, keepdims=True) - tie_tolerance(flat)
    hit = (tied & inside).sum(axis=1) / tied.sum(axis=1).astype(np.float64)
    hit[~inside.any(axis=1)] = np.nan
    return hit


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


def _expected_iou(values: np.ndarray, inside: np.ndarray, k: int, tol: float) -> float:
    """E[IoU(top k, mask)] when the pixels tied at the k-th largest value are drawn at random.

    Pixels above the tie band are always selected (a of them); r = k - a more are drawn without
    replacement from the m tied ones, t of which are inside, so the number drawn inside is
    hypergeometric(m, t, r) and IoU = (i0 + X) / (k + |mask| - i0 - X).
    """
    kth = np.partition(values, values.size - k)[values.size - k]
    above = values > kth + tol
    tied = (values >= kth - tol) & ~above
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


def iou_top_fraction(maps, masks, fraction: float = 0.05) -> np.ndarray:
    """IoU between the map's top ceil(fraction*H*W) pixels and the mask (the top-k localisation
    of Chefer et al., CVPR 2021 / MATEX), its expected value when ties at the threshold are broken
    uniformly at random (exact, hypergeometric); empty mask -> NaN.

    A constant map thus scores the IoU of a random k-pixel set, never that of the image's first
    rows."""
    flat, inside = _check(maps, masks, "iou_top_fraction")
    k = top_k_count(fraction, flat.shape[1])
    tol = tie_tolerance(flat)[:, 0]
    iou = np.array(
        [_expected_iou(flat[i], inside[i], k, tol[i]) if inside[i].any() else np.nan for i in range(len(flat))]
    )
    return iou


def auroc(maps, masks) -> np.ndarray:
    """AUROC of pixel values as scores for mask membership (Mann-Whitney U with average ranks for
    ties): U = sum of the inside pixels' ranks - n_in(n_in+1)/2, AUROC = U / (n_in * n_out).

    1 when every inside pixel outscores every outside one, 0.5 for a constant map. NaN when the
    mask is empty or covers the whole map (no negatives).
    """
    flat, inside = _check(maps, masks, "auroc")
    ranks = rankdata(flat, method="average", axis=1)
    n_in = inside.sum(axis=1).astype(np.float64)
    n_out = inside.shape[1] - n_in
    rank_sum = (ranks * inside).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = (rank_sum - n_in * (n_in + 1) / 2.0) / (n_in * n_out)
    score[(n_in == 0) | (n_out == 0)] = np.nan
    return score
