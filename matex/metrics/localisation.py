"""Localisation metrics of attribution maps against box masks (DESIGN.md section 5, lessons in 7).

Every function takes ``maps`` (B, H, W) float and ``masks`` (B, H, W) bool (the union of a pair's
boxes, aligned to the model input) and returns one float per pair, shape (B,). A pair whose mask
cannot define the metric (an empty box mask; for AUROC also a full one) gets NaN, so aggregation
excludes it instead of silently counting it as a hit or a miss.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.stats import rankdata

from ..errors import MapError


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


def pointing_game(maps, masks) -> np.ndarray:
    """1.0 when any pixel attaining the map's maximum lies inside the mask, else 0.0.

    A tied maximum counts as a hit as soon as one of the tied pixels is inside (the map cannot be
    blamed for a tie it did not break). An empty mask gives NaN (Quantus counts it as a hit).
    """
    flat, inside = _check(maps, masks, "pointing_game")
    at_max = flat == flat.max(axis=1, keepdims=True)
    hit = (at_max & inside).any(axis=1).astype(np.float64)
    hit[~inside.any(axis=1)] = np.nan
    return hit


def energy_in_box(maps, masks) -> np.ndarray:
    """Map mass inside the mask / total map mass (maps must be >= 0).

    NaN when the map has zero total mass (nothing to distribute) or the mask is empty.
    """
    flat, inside = _check(maps, masks, "energy_in_box", non_negative=True)
    total = flat.sum(axis=1)
    inner = (flat * inside).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        energy = inner / total
    energy[(total <= 0) | ~inside.any(axis=1)] = np.nan
    return energy


def top_k_count(fraction: float, n_pixels: int) -> int:
    """Exactly ceil(fraction * n_pixels), guarded against float round-off (0.07 * 100 is
    7.000000000000001 in binary floating point, whose ceil would be 8)."""
    if not 0.0 < fraction <= 1.0:
        raise MapError(f"top fraction must lie in (0, 1], got {fraction}")
    return max(1, math.ceil(round(fraction * n_pixels, 9)))


def top_fraction_masks(maps, fraction: float = 0.05) -> np.ndarray:
    """(B, H, W) bool of exactly ceil(fraction*H*W) highest pixels per map.

    Deterministic tie-breaking: a stable sort by descending value, so equal values are taken in
    ascending flat (row-major) index order; a constant map selects its first k pixels.
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 3:
        raise MapError(f"top_fraction_masks: maps must be (B, H, W), got {maps.shape}")
    b, h, w = maps.shape
    k = top_k_count(fraction, h * w)
    order = np.argsort(-maps.reshape(b, -1), axis=1, kind="stable")[:, :k]
    top = np.zeros((b, h * w), dtype=bool)
    np.put_along_axis(top, order, True, axis=1)
    return top.reshape(b, h, w)


def iou_top_fraction(maps, masks, fraction: float = 0.05) -> np.ndarray:
    """IoU between the map's top ceil(fraction*H*W) pixels and the mask; empty mask -> NaN."""
    _, inside = _check(maps, masks, "iou_top_fraction")
    top = top_fraction_masks(maps, fraction).reshape(inside.shape)
    inter = (top & inside).sum(axis=1)
    union = (top | inside).sum(axis=1)
    iou = inter / union.astype(np.float64)  # union >= k >= 1, never zero
    iou[~inside.any(axis=1)] = np.nan
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
