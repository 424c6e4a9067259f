"""Anatomy of a synthetic frontal chest radiograph: the per-image geometry and the drawing helpers.

Normalised coordinates u = x / width, v = y / height. Radiological convention: the patient's RIGHT
lung is on the image's LEFT. Lungs are superellipses (rounded apex, squarer base) cut by the
diaphragm domes; the heart sits to the image right and rests on the left hemidiaphragm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import ConfigError

# a box encloses the pixels where the finding's drawn weight exceeds this fraction of its peak
BOX_THRESHOLD = 0.2


@dataclass(frozen=True)
class SyntheticSpec:
    """Generator settings that shape each case (the config's ``data.synthetic`` keys)."""

    width: tuple[int, int] = (288, 352)
    height: tuple[int, int] = (320, 384)
    no_location_fraction: float = 0.15
    second_finding_fraction: float = 0.1
    conspicuity: float = 1.0  # lesion contrast multiplier (1 = the drawn default)

    def validate(self) -> None:
        for key, (lo, hi) in (("width", self.width), ("height", self.height)):
            if not (32 <= lo <= hi):
                raise ConfigError(f"data.synthetic.{key} must be [lo, hi] with 32 <= lo <= hi, got {[lo, hi]}")
        if not 0.0 < self.conspicuity <= 3.0:
            raise ConfigError(f"data.synthetic.conspicuity must lie in (0, 3], got {self.conspicuity}")
        for key in ("no_location_fraction", "second_finding_fraction"):
            value = getattr(self, key)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"data.synthetic.{key} must lie in [0, 1], got {value}")


@dataclass(frozen=True)
class Lung:
    """One lung field: a superellipse (rounded apex, squarer base) cut by its diaphragm dome."""

    side: str  # patient side
    xc: float
    yc: float
    a: float  # half width
    b: float  # half height
    x_medial: float
    x_lateral: float
    apex_y: float
    dome_y: float  # top of the hemidiaphragm dome
    base_y: float  # costophrenic angle level (bottom of the superellipse)
    dome_h: float


@dataclass(frozen=True)
class Anatomy:
    width: int
    height: int
    cx: float
    scale: float
    lungs: dict  # patient side -> Lung
    heart: tuple[float, float, float, float]  # centre u, centre v, half width, half height
    mediastinum_half: float
    rib_y0: float
    rib_spacing: float
    rib_curve: float
    clavicle_y: float
    soft_level: float
    lung_level: float
    heart_level: float
    gamma: float
    gain: float
    noise_sigma: float


# ------------------------------------------------------------------------------------- helpers
def ramp(z):
    """Soft step from 0 to 1 over z in [-0.5, 0.5] (a cheap sigmoid)."""
    return np.clip(z + 0.5, 0.0, 1.0)


def smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Noise in [0, 1] with about ``cells`` features across: a coarse random grid, bilinear upsampled
    (separable gathers, no BLAS: BLAS threads would fight over the shared cores)."""
    gh = max(2, round(cells * height / width) + 1)
    gw = max(2, cells + 1)
    grid = rng.random((gh, gw)).astype(np.float32)

    def coords(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
        pos = (np.arange(n_out, dtype=np.float32) + 0.5) / n_out * (n_in - 1)
        lo = np.minimum(pos.astype(np.int64), n_in - 2)
        return lo, (pos - lo).astype(np.float32)

    ry, fy = coords(height, gh)
    rx, fx = coords(width, gw)
    rows = grid[ry] * (1 - fy[:, None]) + grid[ry + 1] * fy[:, None]
    return rows[:, rx] * (1 - fx) + rows[:, rx + 1] * fx


def bbox(weight: np.ndarray, mask: np.ndarray | None = None) -> tuple[int, int, int, int] | None:
    """(x, y, w, h) enclosing the pixels where ``weight`` exceeds BOX_THRESHOLD of its peak."""
    if mask is not None:
        weight = weight * mask
    peak = float(weight.max())
    if peak <= 1e-6:
        return None
    on = weight > BOX_THRESHOLD * peak
    cols = np.flatnonzero(on.any(axis=0))
    rows = np.flatnonzero(on.any(axis=1))
    return (
        int(cols[0]),
        int(rows[0]),
        int(cols[-1] - cols[0] + 1),
        int(rows[-1] - rows[0] + 1),
    )


class Grid:
    """Normalised pixel-centre coordinates as broadcastable row/column vectors."""

    def __init__(self, width: int, height: int):
        self.width, self.height = width, height
        self.u = ((np.arange(width, dtype=np.float32) + 0.5) / width)[None, :]
        self.v = ((np.arange(height, dtype=np.float32) + 0.5) / height)[:, None]
        self.px = 1.0 / min(width, height)  # one pixel in normalised units (edge softness)


# ------------------------------------------------------------------------------------- anatomy
def sample_anatomy(rng: np.random.Generator, spec: SyntheticSpec) -> Anatomy:
    width = int(rng.integers(spec.width[0], spec.width[1] + 1))
    height = int(rng.integers(spec.height[0], spec.height[1] + 1))
    cx = 0.5 + rng.normal(0, 0.015)
    s = rng.uniform(0.9, 1.03)
    apex = 0.13 + rng.normal(0, 0.012)
    base = apex + 0.66 * s + rng.normal(0, 0.01)
    lungs = {}
    for side, sign in (("right", -1.0), ("left", 1.0)):  # patient right = image left
        x_med = cx + sign * (0.045 + rng.uniform(0, 0.01)) * s
        x_lat = cx + sign * (0.40 + rng.uniform(-0.015, 0.015)) * s
        dome_h = (0.11 if side == "right" else 0.09) * s + rng.uniform(-0.01, 0.01)
        lungs[side] = Lung(
            side=side,
            xc=(x_med + x_lat) / 2,
            yc=(apex + base) / 2,
            a=abs(x_lat - x_med) / 2,
            b=(base - apex) / 2,
            x_medial=x_med,
            x_lateral=x_lat,
            apex_y=apex,
            dome_y=base - dome_h,
            base_y=base,
            dome_h=dome_h,
        )
    # normal cardiothoracic ratio about 0.45; the heart rests on the left hemidiaphragm
    heart = (
        cx + 0.06 * s + rng.normal(0, 0.008),
        lungs["left"].dome_y - 0.01 * s,
        0.185 * s * rng.uniform(0.94, 1.06),
        0.19 * s * rng.uniform(0.94, 1.06),
    )
    return Anatomy(
        width=width,
        height=height,
        cx=cx,
        scale=s,
        lungs=lungs,
        heart=heart,
        mediastinum_half=0.075 * s,
        rib_y0=apex - 0.03,
        rib_spacing=0.068 * s * rng.uniform(0.95, 1.05),
        rib_curve=rng.uniform(0.10, 0.16),
        clavicle_y=apex + 0.035 + rng.normal(0, 0.01),
        soft_level=rng.uniform(0.42, 0.5),
        lung_level=rng.uniform(0.12, 0.18),
        heart_level=rng.uniform(0.7, 0.78),
        gamma=rng.uniform(0.85, 1.15),
        gain=rng.uniform(0.92, 1.05),
        noise_sigma=rng.uniform(0.01, 0.025),
    )


def diaphragm_row(g: Grid, an: Anatomy) -> np.ndarray:
    """Image row (normalised) of the diaphragm surface at each column: two domes."""
    out = np.empty_like(g.u)
    for side, lung in an.lungs.items():
        bump = np.clip(
            1.0 - ((g.u - (lung.xc + 0.2 * (lung.x_medial - lung.xc))) / (1.15 * lung.a)) ** 2,
            0,
            1,
        )
        curve = lung.base_y - lung.dome_h * np.sqrt(bump)
        left_of_mid = g.u < an.cx
        sel = left_of_mid if side == "right" else ~left_of_mid
        out[sel] = curve[sel]
    return out


def lung_shape(g: Grid, lung: Lung) -> np.ndarray:
    """Soft superellipse value f (<1 inside): exponent 2 above the centre, 4 below."""
    dx2 = ((g.u - lung.xc) / lung.a) ** 2
    dy2 = ((g.v - lung.yc) / lung.b) ** 2
    upper = dx2 + dy2
    lower = np.sqrt(dx2 * dx2 + dy2 * dy2)
    return np.where(g.v < lung.yc, upper, lower)


def ellipse_mask(g: Grid, cu: float, cv: float, a: float, b: float, soft_px: float = 1.5) -> np.ndarray:
    r = np.sqrt(((g.u - cu) / a) ** 2 + ((g.v - cv) / b) ** 2)
    return ramp((1.0 - r) * min(a, b) / (soft_px * g.px))


def upsample(a: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize of a float map to the original size (PIL's C resampler: fast)."""
    from PIL import Image

    return np.asarray(
        Image.fromarray(np.ascontiguousarray(a, dtype=np.float32)).resize((width, height), Image.Resampling.BILINEAR)
    )


# Anatomy and findings are drawn on a grid this many times coarser than the image, then upsampled
