"""Model-randomisation sanity check (Adebayo et al., NeurIPS 2018; docs/evaluation.md).

The cascade (``matex.metrics.cascade``) re-initialises every parameter tensor of the image tower from
the top down (projection and final norm, blocks L..1, ``ln_pre``, positional and class embeddings,
the patch embedding / stem), then, separately, of the text tower, and last of both ("full"). Each
step's maps are compared with the trained model's by |Spearman rho| and SSIM (Wang et al. 2004);
both are "lower = the map depends on the weights". A map that survives randomisation explains the
input or the text prior, not the model. The signed rho is kept for reference only: an
anti-correlated map also depends on the weights.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from ..errors import MapError
from .cascade import cascade_labels, cascade_plan, randomize_cascading, reinitialised_state

__all__ = [
    "abs_spearman",
    "cascade_labels",
    "cascade_plan",
    "randomize_cascading",
    "reinitialised_state",
    "spearman_maps",
    "ssim",
]


def spearman_maps(a, b) -> np.ndarray:
    """Per-pair Spearman rank correlation of the flattened maps a[i] and b[i], shape (B,): the
    Pearson correlation of their average ranks. NaN when either map is constant."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 3 or a.shape != b.shape:
        raise MapError(f"spearman_maps: maps {a.shape} and {b.shape} must both be (B, H, W)")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise MapError("spearman_maps: maps are not finite")
    n = a.shape[0]
    ra = rankdata(a.reshape(n, -1), method="average", axis=1)
    rb = rankdata(b.reshape(n, -1), method="average", axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    denom = np.sqrt((ra**2).sum(axis=1) * (rb**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (ra * rb).sum(axis=1) / denom
    rho[denom == 0] = np.nan
    return np.clip(rho, -1.0, 1.0)


def abs_spearman(a, b) -> np.ndarray:
    """|Spearman rho| per pair (B,): 0 = the ranks share nothing, 1 = same (or reversed) order."""
    return np.abs(spearman_maps(a, b))


def _window(size: int, sigma: float | None) -> np.ndarray:
    """(size,) 1-D weights summing to 1: Gaussian (std ``sigma``) or uniform when sigma is None."""
    x = np.arange(size) - (size - 1) / 2
    w = np.ones(size) if sigma is None else np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def ssim(a, b, window: int = 11, sigma: float | None = 1.5, k1: float = 0.01, k2: float = 0.03) -> np.ndarray:
    """Mean structural similarity per pair (B,) (Wang et al., IEEE TIP 2004, eq. 13-16).

    Each map is min-max rescaled to [0, 1] (data range L = 1; attribution maps already are, a
    constant map becomes 0). Local means, variances and covariance use a ``window`` x ``window``
    Gaussian window (std ``sigma``; None = uniform) with weights summing to 1, at every position
    where it fits inside the map ('valid'); C1 = (k1 L)^2, C2 = (k2 L)^2;
    SSIM = mean over positions of (2 mu_a mu_b + C1)(2 s_ab + C2) / ((mu_a^2 + mu_b^2 + C1)(s_a^2 + s_b^2 + C2)).
    """
    a = _unit_range(a, "a")
    b = _unit_range(b, "b")
    if a.shape != b.shape:
        raise MapError(f"ssim: maps {a.shape} and {b.shape} differ in shape")
    if window > min(a.shape[1:]):
        raise MapError(f"ssim: window {window} is larger than the maps {a.shape[1:]}")
    w = _window(window, sigma)

    def local_mean(x: np.ndarray) -> np.ndarray:
        # the window is separable (outer(w, w)): filter rows, then columns, 'valid' positions only;
        # float64 throughout (a float64 2-D torch convolution on the CPU is ~100x slower)
        rows = np.lib.stride_tricks.sliding_window_view(x, window, axis=2) @ w
        return np.lib.stride_tricks.sliding_window_view(rows, window, axis=1) @ w

    mu_a, mu_b = local_mean(a), local_mean(b)
    var_a = local_mean(a * a) - mu_a**2
    var_b = local_mean(b * b) - mu_b**2
    cov = local_mean(a * b) - mu_a * mu_b
    c1, c2 = k1**2, k2**2
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return index.mean(axis=(-2, -1))


def _unit_range(maps, name: str) -> np.ndarray:
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 3:
        raise MapError(f"ssim: maps {name} must be (B, H, W), got {maps.shape}")
    if not np.isfinite(maps).all():
        raise MapError(f"ssim: maps {name} are not finite")
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    return np.where(span > 0, (maps - low) / np.where(span > 0, span, 1.0), 0.0)
