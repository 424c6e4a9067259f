"""Text-guided spatial prior (docs/method.md, the paper's Eqs. 3-5, as we read them).

For each region box B_k = [x0, x1] x [y0, y1] (normalised image coordinates) the soft mask is

    m_k(x, y) = clamp(1 - d_k(x, y) / sigma, 0, 1)                                   (Eq. 3)

with d_k the Euclidean distance from the pixel centre ((j + 0.5) / W, (i + 0.5) / H) to the box
(0 inside). The regions are merged by a pixel-wise maximum, M = max_k m_k (Eq. 4), and the prior is

    P = 1 + (lambda_s - 1) * M                                                          (Eq. 5)

so P = lambda_s inside any named region, falls linearly to 1 within sigma of it, and is 1 elsewhere.
No location found, or the finding negated: P is all ones (the prior is absent).

Weights (issue 13): the parser gives each region a relative weight w_k in (0, 1] (max 1; see
``regions.yaml``), and Eq. 4 becomes M = max_k w_k m_k, so a diffuse or hedged region lifts the prior
less than a specific one. With one region, or equal weights, this is Eq. 5 unchanged.

The model's frame: the regions are boxes on the whole film, while the model sees the film after
``InputGeometry`` (centre crop or letterbox). Given the film's size, every input pixel centre is
mapped back to film coordinates through the same affine map as the boxes, and the masks are computed
there; without it the input is taken to be the film.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from matex.errors import ConfigError
from matex.priors.parser import Box, PhraseParse, parse_phrase

Grid = tuple[tuple[float, ...], tuple[float, ...]]


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


def film_grid(
    size: tuple[int, int] | int, image_size: tuple[int, int] | None = None, input_mode: str = "center_crop"
) -> Grid:
    """Film coordinates (x / film width, y / film height) of the pixel centres of a (H, W) input.

    ``image_size`` is the film's (height, width) in pixels; the input is the film put through
    ``InputGeometry(H, input_mode)`` (the same affine map as the boxes). ``None``: the input is the film.
    """
    height, width = _check_size(size)
    xs = np.arange(width, dtype=np.float64) + 0.5
    ys = np.arange(height, dtype=np.float64) + 0.5
    if image_size is None:
        return tuple(xs / width), tuple(ys / height)
    from matex.data.transforms import InputGeometry

    film_h, film_w = _check_size(image_size)
    if height != width:
        raise ValueError(f"the model input must be square to map a film onto it, got {(height, width)}")
    a = InputGeometry(height, input_mode).affine(film_w, film_h)
    return tuple((xs - a.ox) / a.sx / film_w), tuple((ys - a.oy) / a.sy / film_h)


@functools.lru_cache(maxsize=128)
def _soft_mask(boxes: tuple[Box, ...], weights: tuple[float, ...], grid: Grid, sigma: float) -> np.ndarray:
    """max_k w_k clamp(1 - d_k / sigma, 0, 1) at the grid's pixel centres (Eqs. 3-4, weighted)."""
    xs, ys = (np.asarray(g, dtype=np.float64) for g in grid)
    if not boxes:
        return np.zeros((len(ys), len(xs)), dtype=np.float32)
    b = np.asarray(boxes, dtype=np.float64)  # (K, 4): x0, x1, y0, y1
    dx = np.maximum(np.maximum(b[:, 0:1] - xs, xs - b[:, 1:2]), 0.0)  # (K, W)
    dy = np.maximum(np.maximum(b[:, 2:3] - ys, ys - b[:, 3:4]), 0.0)  # (K, H)
    dist = np.sqrt(dy[:, :, None] ** 2 + dx[:, None, :] ** 2)  # (K, H, W)
    w = np.asarray(weights, dtype=np.float64)[:, None, None]
    mask = (w * np.clip(1.0 - dist / sigma, 0.0, 1.0)).max(axis=0).astype(np.float32)
    mask.setflags(write=False)
    return mask


def region_mask(
    text_or_parse: str | PhraseParse,
    size: tuple[int, int] | int,
    sigma: float = 0.1,
    *,
    image_size: tuple[int, int] | None = None,
    input_mode: str = "center_crop",
) -> np.ndarray:
    """Weighted soft union of the phrase's regions, max_k w_k m_k (Eqs. 3-4): float32 (H, W) in [0, 1].

    ``size`` is (H, W) of the map; ``image_size`` / ``input_mode`` place it in the model's frame
    (see :func:`film_grid`). All zeros when the phrase names no (non-negated) location.
    """
    parse = text_or_parse if isinstance(text_or_parse, PhraseParse) else parse_phrase(text_or_parse)
    grid = film_grid(size, image_size, input_mode)
    boxes = tuple(r.box for r in parse.regions)
    return _soft_mask(boxes, tuple(parse.weights), grid, _check_sigma(sigma)).copy()


def spatial_prior(
    text: str | PhraseParse,
    size: tuple[int, int] | int,
    sigma: float = 0.1,
    strength: float = 2.5,
    *,
    image_size: tuple[int, int] | None = None,
    input_mode: str = "center_crop",
) -> np.ndarray:
    """Text-guided spatial prior P = 1 + (strength - 1) * max_k w_k m_k (Eq. 5): float32 (H, W).

    ``strength`` is lambda_s (config ``prior_strength``, >= 1); ``sigma`` the fall-off distance in
    normalised film units (config ``prior_sigma``). P is all ones when the phrase has no location or
    its finding is negated (``parse_phrase(text).has_location`` is then False). ``image_size`` (the
    film's (H, W)) and ``input_mode`` lay the prior on the model input as the boxes are laid.
    """
    strength = float(strength)
    if not (math.isfinite(strength) and strength >= 1.0):
        raise ConfigError(f"prior_strength must be a finite number >= 1, got {strength!r}")
    mask = region_mask(text, size, sigma, image_size=image_size, input_mode=input_mode)
    prior = 1.0 + (strength - 1.0) * mask
    return prior.astype(np.float32, copy=False)
