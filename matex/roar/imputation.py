"""Filling removed pixels: ROAD's noisy linear imputation (the default), one grey level, or a blur.

Noisy linear imputation (Rong, Leemann, Borisov, Kasneci, Kasneci: "A Consistent and Efficient
Evaluation Strategy for Attribution Methods", ICML 2022, Sec. 4): every removed pixel x_i takes
the weighted mean of its 8 neighbours,

    x_i = sum_j w_ij z_j / sum_j w_ij,   w = 1/6 (edge neighbours), 1/12 (diagonal neighbours),   (1)

where z_j is the neighbour's known value or, if it was removed too, its own unknown x_j; neighbours
outside the image are left out of both sums. (1) is one sparse linear system over all removed
pixels (a discrete Laplace equation with the kept pixels as boundary values); its solution is
smooth inside a hole and continues the surroundings across it, so the filled region has no flat
patch and no edge that would tell a model where the hole was. Gaussian noise is then added to the
imputed pixels (ROAD's default: std 0.01 of the intensity range), so the fill carries the local
texture's grain instead of a glassy surface.

The system is symmetric positive definite, (D - W) x = W_k z_k with D the in-image weight sums.
It is solved for a whole batch at once by conjugate gradients preconditioned with a multigrid
V-cycle (Jacobi smoothing, bilinear transfer), started from the solution on the 2x coarser grid,
to a largest residual of 1e-4 of the intensity range: within 0.2-0.9 grey levels (of 255) of a
direct sparse solve, below the noise that is added next. Measured on 224 x 224 images (smooth
random blobs, k = 10-90 %), one thread of a shared 2-core VM: 40-60 ms CPU per image, where a
direct sparse solve (scipy spsolve) took 0.05-0.9 s. It runs on one thread whatever torch's
setting: with two, the many small steps cost 5-10x the CPU in thread synchronisation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, MapError

Fill = Literal["noisy_linear", "grey", "blur"]
FILLS = ("noisy_linear", "grey", "blur")

EDGE_WEIGHT, DIAGONAL_WEIGHT = 1.0 / 6.0, 1.0 / 12.0  # ROAD's neighbour weights (they sum to 1)
DEFAULT_NOISE = 0.01  # ROAD's noise std, as a fraction of the intensity range
_COARSEST = 16  # grids this small (or of odd side) are solved by Jacobi sweeps inside the V-cycle


def neighbour_sum(z: torch.Tensor) -> torch.Tensor:
    """(B, H, W): sum_j w_j z_j over each pixel's 8 neighbours inside the image (zero outside).

    The weights are the separable [1, 2, 1] x [1, 2, 1] / 12 stencil less its centre (4/12), computed
    with shifted slices (a single-channel conv2d is several times slower on a CPU)."""
    zp = F.pad(z, (1, 1, 1, 1))
    rows = zp[:, :-2] + 2.0 * zp[:, 1:-1] + zp[:, 2:]
    both = rows[:, :, :-2] + 2.0 * rows[:, :, 1:-1] + rows[:, :, 2:]
    return both / 12.0 - z / 3.0


def linear_imputation(
    images: torch.Tensor, removed: torch.Tensor, tol: float = 1e-4, max_iter: int = 3000
) -> torch.Tensor:
    """``images`` (B, H, W) float with the ``removed`` (B, H, W bool) pixels replaced by the solution
    of (1), no noise. An image with every pixel removed has no boundary values: it gets 0.5 (mid-grey
    of a [0, 1] image). ``tol``: largest residual |D_i x_i - sum_j w_j z_j| accepted, in image units."""
    if images.shape != removed.shape or images.ndim != 3:
        raise MapError(
            f"imputation: images {tuple(images.shape)} and masks {tuple(removed.shape)} must be equal (B, H, W)"
        )
    removed = removed.to(torch.bool)
    known = ~removed
    z = torch.where(known, images, torch.zeros((), dtype=images.dtype, device=images.device))
    empty = ~known.flatten(1).any(1)
    out = torch.where(removed, _solve(z, removed, tol, max_iter), images)
    if bool(empty.any()):
        out[empty] = 0.5
    return out


def _operator(p: torch.Tensor, diag: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """(D - W) p on the removed pixels (``m`` = 1 there); ``p`` is 0 on the kept ones."""
    return (diag * p - neighbour_sum(p)) * m


def _restrict(r: torch.Tensor) -> torch.Tensor:
    """(B, H, W) -> (B, H/2, W/2): cell-centred full weighting, weights (1, 3, 3, 1)/4 per axis
    (zero outside the image); the transpose of :func:`_prolong`."""
    for axis in (1, 2):
        pad = [0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = 1
        rp = F.pad(r, pad)
        n = rp.shape[axis]
        even = rp.narrow(axis, 1, n - 2)[:, ::2] if axis == 1 else rp.narrow(axis, 1, n - 2)[:, :, ::2]
        odd = rp.narrow(axis, 2, n - 2)[:, ::2] if axis == 1 else rp.narrow(axis, 2, n - 2)[:, :, ::2]
        outer_lo = rp.narrow(axis, 0, n - 2)[:, ::2] if axis == 1 else rp.narrow(axis, 0, n - 2)[:, :, ::2]
        outer_hi = rp.narrow(axis, 3, n - 3)[:, ::2] if axis == 1 else rp.narrow(axis, 3, n - 3)[:, :, ::2]
        r = (outer_lo + 3.0 * even + 3.0 * odd + outer_hi) / 4.0
    return r


def _prolong(c: torch.Tensor) -> torch.Tensor:
    """(B, h, w) -> (B, 2h, 2w): cell-centred bilinear interpolation (weights 3/4 and 1/4 per axis,
    zero outside the image)."""
    for axis in (1, 2):
        pad = [0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = 1
        cp = F.pad(c, pad)
        n = cp.shape[axis]
        mid, lo, hi = cp.narrow(axis, 1, n - 2), cp.narrow(axis, 0, n - 2), cp.narrow(axis, 2, n - 2)
        first, second = 0.75 * mid + 0.25 * lo, 0.75 * mid + 0.25 * hi
        c = torch.stack((first, second), dim=axis + 1).flatten(axis, axis + 1)
    return c


def _vcycle(r: torch.Tensor, m: torch.Tensor, sweeps: int = 2) -> torch.Tensor:
    """One multigrid V-cycle for (D - W) e = r on the removed pixels ``m``: Jacobi smoothing, the
    residual restricted to a 2x coarser grid (the transpose of the bilinear prolongation, so the
    cycle is a symmetric preconditioner), coarse cells removed where any of their pixels is. A fixed
    linear map of ``r``, as conjugate gradients needs."""
    diag = neighbour_sum(torch.ones_like(r[:1]))
    h, w = r.shape[-2:]
    coarsest = min(h, w) <= _COARSEST or h % 2 or w % 2
    e = torch.zeros_like(r)
    for _ in range(4 * max(h, w) if coarsest else sweeps):  # the coarsest grid: sweeps enough to cross it
        e = e + (r - _operator(e, diag, m)) / diag * m
    if coarsest:
        return e
    mc = F.max_pool2d(m[:, None], 2)[:, 0]
    e = e + _prolong(_vcycle(_restrict(r - _operator(e, diag, m)) * mc, mc, sweeps)) * m
    for _ in range(sweeps):
        e = e + (r - _operator(e, diag, m)) / diag * m
    return e


def _coarse_start(z: torch.Tensor, removed: torch.Tensor, tol: float, max_iter: int) -> torch.Tensor:
    """A start for the removed pixels: the solution on the 2x coarser grid (a coarse cell is kept if
    any of its pixels is, at their mean), interpolated bilinearly; zero below the coarsest grid."""
    h, w = z.shape[-2:]
    if min(h, w) <= 2 * _COARSEST or h % 2 or w % 2:
        return torch.zeros_like(z)
    kept = (~removed).to(z.dtype)[:, None]
    total, count = F.avg_pool2d(z[:, None] * kept, 2)[:, 0], F.avg_pool2d(kept, 2)[:, 0]
    coarse_removed = count == 0
    coarse = torch.where(coarse_removed, torch.zeros_like(total), total / count.clamp_min(1e-12))
    coarse = torch.where(coarse_removed, _solve(coarse, coarse_removed, tol, max_iter), coarse)
    return F.interpolate(coarse[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]


def _solve(z: torch.Tensor, removed: torch.Tensor, tol: float, max_iter: int) -> torch.Tensor:
    """The removed pixels' solution of (D - W_rr) x = W_rk z_k: conjugate gradients preconditioned
    by a multigrid V-cycle, batched (one step size per image), started from the coarse-grid solution."""
    m = removed.to(z.dtype)
    diag = neighbour_sum(torch.ones_like(z[:1]))  # in-image weight sum D_i (1 inside, less at borders)
    x = _coarse_start(z, removed, tol, max_iter) * m
    r = neighbour_sum(z * (1 - m)) * m - _operator(x, diag, m)
    y = _vcycle(r, m)
    p = y.clone()
    ry = (r * y).flatten(1).sum(1)
    for _ in range(max_iter):
        if float(r.abs().amax()) <= tol:
            break
        q = _operator(p, diag, m)
        alpha = ry / (p * q).flatten(1).sum(1).clamp_min(1e-30)
        x = x + alpha.view(-1, 1, 1) * p
        r = r - alpha.view(-1, 1, 1) * q
        y = _vcycle(r, m)
        ry_new = (r * y).flatten(1).sum(1)
        p = y + (ry_new / ry.clamp_min(1e-30)).view(-1, 1, 1) * p
        ry = ry_new
    return x


def noisy_linear_imputation(
    images_u8: np.ndarray,
    removed: np.ndarray,
    seed: int = 0,
    noise: float = DEFAULT_NOISE,
    batch: int = 64,
    seeds: Sequence[int] | None = None,
) -> np.ndarray:
    """uint8 images (N, H, W) with the ``removed`` pixels imputed by (1) plus Gaussian noise of std
    ``noise`` x 255, rounded and clipped to 0..255. Kept pixels are returned unchanged. The noise is
    drawn from ``seed``, or per image from ``seeds`` (one each: an image's fill then does not depend
    on the batch it came in)."""
    images_u8 = np.asarray(images_u8)
    removed = np.asarray(removed, dtype=bool)
    if images_u8.shape != removed.shape or images_u8.ndim != 3:
        raise MapError(f"imputation: images {images_u8.shape} and masks {removed.shape} must be equal (N, H, W)")
    if noise < 0:
        raise ConfigError(f"config key roar.imputation_noise: must be >= 0, got {noise}")
    if seeds is not None and len(seeds) != len(images_u8):
        raise MapError(f"imputation: {len(images_u8)} images but {len(seeds)} seeds")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small elementwise steps: more threads cost 5-10x the CPU in synchronisation
    try:
        return _impute_batches(images_u8, removed, seed, noise, batch, seeds)
    finally:
        torch.set_num_threads(previous_threads)


def _impute_batches(
    images_u8: np.ndarray, removed: np.ndarray, seed: int, noise: float, batch: int, seeds: Sequence[int] | None
) -> np.ndarray:
    """:func:`noisy_linear_imputation`'s loop over batches."""
    generator = torch.Generator().manual_seed(int(seed))
    out = np.array(images_u8, copy=True)
    for s in range(0, len(out), batch):
        rem = torch.from_numpy(removed[s : s + batch])
        if not bool(rem.any()):
            continue
        x = torch.from_numpy(np.ascontiguousarray(images_u8[s : s + batch])).to(torch.float32) / 255.0
        filled = linear_imputation(x, rem)
        if seeds is None:
            draws = torch.randn(filled.shape, generator=generator)
        else:
            draws = torch.stack(
                [
                    torch.randn(filled.shape[1:], generator=torch.Generator().manual_seed(int(q)))
                    for q in seeds[s : s + batch]
                ]
            )
        filled = filled + noise * draws * rem
        values = (filled * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()
        out[s : s + batch][rem.numpy()] = values[rem.numpy()]
    return out


@dataclass(frozen=True)
class FillSpec:
    """How removed pixels are filled (config ``roar.fill``): ``noisy_linear`` (ROAD, the default),
    ``grey`` (one level: ``grey``, default the mean of the images being filled) or ``blur`` (a
    Gaussian-blurred copy of each image, std ``blur_sigma`` pixels: RISE's substrate). ``noise``:
    the imputation noise std as a fraction of the intensity range (``roar.imputation_noise``)."""

    kind: str = "noisy_linear"
    noise: float = DEFAULT_NOISE
    grey: float | None = None
    blur_sigma: float = 5.0

    def __post_init__(self) -> None:
        if self.kind not in FILLS:
            raise ConfigError(f"config key roar.fill: expected one of {FILLS}, got {self.kind!r}")
        if self.noise < 0:
            raise ConfigError(f"config key roar.imputation_noise: must be >= 0, got {self.noise}")

    @classmethod
    def from_config(cls, roar_cfg: Mapping[str, Any], grey: float | None = None) -> FillSpec:
        """The ``roar`` section's fill; ``grey``: the dataset grey level for ``fill: grey``."""
        return cls(
            kind=str(roar_cfg.get("fill", "noisy_linear")),
            noise=float(roar_cfg.get("imputation_noise", DEFAULT_NOISE)),
            grey=grey,
            blur_sigma=float(roar_cfg.get("blur_sigma", 5.0)),
        )

    def describe(self) -> str:
        """The fill in words, for table notes."""
        if self.kind == "noisy_linear":
            return f"ROAD's noisy linear imputation (Rong et al. 2022; noise std {self.noise:g} of the range)"
        if self.kind == "grey":
            return "the dataset grey mean"
        return f"a Gaussian-blurred copy of the image (std {self.blur_sigma:g} px)"

    def apply(self, images_u8: np.ndarray, removed: np.ndarray, seed: int) -> np.ndarray:
        """uint8 images with the ``removed`` pixels filled; kept pixels unchanged."""
        removed = np.asarray(removed, dtype=bool)
        if self.kind == "noisy_linear":
            return noisy_linear_imputation(images_u8, removed, seed, self.noise)
        out = np.array(images_u8, copy=True)
        if out.shape != removed.shape:
            raise MapError(f"fill: images {out.shape} and masks {removed.shape} differ in shape")
        if self.kind == "grey":
            level = float(np.mean(images_u8, dtype=np.float64)) if self.grey is None else float(self.grey)
            out[removed] = np.uint8(round(level))
            return out
        from ..metrics.faithfulness import gaussian_blur

        blurred = gaussian_blur(torch.from_numpy(out.astype(np.float32)), self.blur_sigma).round().clamp(0, 255)
        out[removed] = blurred.to(torch.uint8).numpy()[removed]
        return out


def as_fill(fill: float | FillSpec) -> FillSpec:
    """A number is the grey level of a ``grey`` fill (the older ROAR interface); a FillSpec as is."""
    return fill if isinstance(fill, FillSpec) else FillSpec(kind="grey", grey=float(fill))
