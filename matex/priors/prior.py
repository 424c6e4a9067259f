"""Text-guided spatial prior (DESIGN.md 3.4, the paper's Eqs. 3-5, as we read them).

For each region box B_k = [x0, x1] x [y0, y1] (normalised image coordinates) the soft mask is

    m_k(x, y) = clamp(1 - d_k(x, y) / sigma, 0, 1)                                   (Eq. 3)

with d_k the Euclidean distance from the pixel centre ((j + 0.5) / W, (i + 0.5) / H) to the box
(0 inside). The regions are merged by a pixel-wise maximum, M = max_k m_k (Eq. 4), and the prior is

    P = 1 + (lambda_s - 1) * M                                                          (Eq. 5)

so P = lambda_s inside any named region, falls linearly to 1 within sigma of it, and is 1 elsewhere.
No location found, or the finding negated: P is all ones (the prior is absent).
"""
from __future__ import annotations

import functools
import math

import numpy as np

from matex.errors import ConfigError
from matex.priors.parser import Box, PhraseParse, parse_phrase


def _check_size(size: tuple[int, int] | int) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    try:
        height, width = (int(v) for v in size)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"size must be (H, W) positive integers, got {size!r}") from exc
    if height <= 0 or width <= 0:
        raise ValueError(f"size must be (H, W) positive integers, got {size!r}")
    return height, width


def _check_sigma(sigma: float) -> float:
    sigma = float(sigma)
    if not (math.isfinite(sigma) and sigma > 0):
        raise ConfigError(f"prior_sigma must be a finite number > 0, got {sigma!r}")
    return sigma


@functools.lru_cache(maxsize=1024)
def _soft_mask(boxes: tuple[Box, ...], height: int, width: int, sigma: float) -> np.ndarray:
    """max_k clamp(1 - d_k / sigma, 0, 1) on the (height, width) pixel-centre grid (Eqs. 3-4)."""
    if not boxes:
        return np.zeros((height, width), dtype=np.float32)
    b = np.asarray(boxes, dtype=np.float64)                    # (K, 4): x0, x1, y0, y1
    xs = (np.arange(width, dtype=np.float64) + 0.5) / width    # (W,)
    ys = (np.arange(height, dtype=np.float64) + 0.5) / height  # (H,)
    dx = np.maximum(np.maximum(b[:, 0:1] - xs, xs - b[:, 1:2]), 0.0)  # (K, W)
    dy = np.maximum(np.maximum(b[:, 2:3] - ys, ys - b[:, 3:4]), 0.0)  # (K, H)
    # max_k of a decreasing function of d_k = the function of min_k d_k
    dist = np.sqrt(dy[:, :, None] ** 2 + dx[:, None, :] ** 2).min(axis=0)  # (H, W)
    mask = np.clip(1.0 - dist / sigma, 0.0, 1.0).astype(np.float32)
    mask.setflags(write=False)
    return mask


def region_mask(text_or_parse: str | PhraseParse, size: tuple[int, int] | int,
                sigma: float = 0.1) -> np.ndarray:
    """Soft union of the phrase's regions, max_k m_k (Eqs. 3-4): float32 (H, W) in [0, 1].

    ``size`` is (H, W). All zeros when the phrase names no (non-negated) location.
    """
    parse = text_or_parse if isinstance(text_or_parse, PhraseParse) else parse_phrase(text_or_parse)
    height, width = _check_size(size)
    boxes = tuple(r.box for r in parse.regions)
    return _soft_mask(boxes, height, width, _check_sigma(sigma)).copy()


def spatial_prior(text: str | PhraseParse, size: tuple[int, int] | int, sigma: float = 0.1,
                  strength: float = 2.5) -> np.ndarray:
    """Text-guided spatial prior P = 1 + (strength - 1) * max_k m_k (Eq. 5): float32 (H, W).

    ``strength`` is lambda_s (config ``prior_strength``, >= 1); ``sigma`` the fall-off distance in
    normalised image units (config ``prior_sigma``). P is all ones when the phrase has no location or
    its finding is negated (``parse_phrase(text).has_location`` is then False).
    """
    strength = float(strength)
    if not (math.isfinite(strength) and strength >= 1.0):
        raise ConfigError(f"prior_strength must be a finite number >= 1, got {strength!r}")
    mask = region_mask(text, size, sigma)
    prior = 1.0 + (strength - 1.0) * mask
    return prior.astype(np.float32, copy=False)
