"""Helpers every attribution method shares: per-map min-max normalisation (docs/method.md, ``norm``),
bilinear upsampling from the patch grid to the input size, finiteness checks and small tensor
utilities. All functions are batched over the leading dimension."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch

from ..errors import MapError

# A map whose range is below this fraction of its magnitude is float32 rounding noise, not signal:
# it normalises to all zeros like an exactly constant map (docs/method.md: "a constant map normalises to
# all zeros, never NaN").
_RELATIVE_FLAT = 4 * float(torch.finfo(torch.float32).eps)


def minmax_norm(x: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each map over its last two dims (H, W) to [0, 1].

    A constant map (range zero, or at rounding level) becomes all zeros, never NaN."""
    if x.ndim < 2:
        raise MapError(f"minmax_norm expects maps (..., H, W), got shape {tuple(x.shape)}")
    flat = x.flatten(-2)
    lo = flat.amin(-1, keepdim=True)  # two reductions: torch.aminmax is ~15x slower on CPU (torch 2.15)
    hi = flat.amax(-1, keepdim=True)
    span = hi - lo
    flat_map = span <= _RELATIVE_FLAT * torch.maximum(hi.abs(), lo.abs())
    # full-size work is one subtract, one divide and one multiply (by 0 for flat maps, 1 otherwise)
    out = (flat - lo).div_(torch.where(flat_map, 1.0, span)).mul_(~flat_map)
    return out.clamp_(0.0, 1.0).view_as(x)


def masked_minmax(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each row of ``x`` (B, T) over the entries where ``mask`` is True; the
    other entries become 0. Used for token scores, where padding must not set the range."""
    big = torch.finfo(x.dtype).max
    lo = torch.where(mask, x, big).amin(-1, keepdim=True)
    hi = torch.where(mask, x, -big).amax(-1, keepdim=True)
    span = hi - lo
    flat_row = span <= _RELATIVE_FLAT * torch.maximum(hi.abs(), lo.abs())
    out = torch.where(flat_row, torch.zeros_like(x), (x - lo) / torch.where(flat_row, 1.0, span))
    return torch.where(mask, out.clamp(0.0, 1.0), torch.zeros_like(x))


def upsample(grid_maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(B, gh, gw) patch-grid maps -> (B, H, W), bilinear with align_corners=False (docs/method.md).

    Computed as W_y · map · W_xᵀ with the interpolation matrices of ``F.interpolate``'s rule (equal
    to it up to float rounding, ~3x faster on CPU for 7x7 -> 224x224: two small matmuls instead of
    a gather per output pixel)."""
    if grid_maps.ndim != 3:
        raise MapError(f"upsample expects (B, g, g) grid maps, got shape {tuple(grid_maps.shape)}")
    h, w = (int(s) for s in size)
    device = grid_maps.device
    w_y = bilinear_matrix(grid_maps.shape[1], h, str(device))
    w_x = bilinear_matrix(grid_maps.shape[2], w, str(device))
    return w_y @ grid_maps.float() @ w_x.T


@lru_cache(maxsize=64)
def bilinear_matrix(n_in: int, n_out: int, device: str = "cpu") -> torch.Tensor:
    """(n_out, n_in) weights of 1-D linear interpolation with align_corners=False: output pixel d
    samples the input at (d + 0.5)·n_in/n_out − 0.5, clamped to the first/last input cell."""
    src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5).clamp_min(0.0)
    lower = src.floor().long().clamp_max(n_in - 1)
    upper = (lower + 1).clamp_max(n_in - 1)
    frac = src - lower
    rows = torch.arange(n_out)
    weights = torch.zeros(n_out, n_in, dtype=torch.float64)
    weights.index_put_((rows, lower), 1.0 - frac, accumulate=True)
    weights.index_put_((rows, upper), frac, accumulate=True)
    return weights.to(device=device, dtype=torch.float32)


def tokens_to_grid(patch_scores: torch.Tensor) -> torch.Tensor:
    """(B, N) patch-token scores -> (B, g, g) with g = sqrt(N), row-major as the ViT flattens them."""
    b, n = patch_scores.shape
    g = int(round(n**0.5))
    if g * g != n:
        raise MapError(f"{n} patch tokens do not form a square grid; only square ViT grids are supported")
    return patch_scores.reshape(b, g, g)


def grid_to_image(patch_scores: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(B, N) patch scores -> normalised (B, H, W) map: reshape to the grid, upsample, ``norm``."""
    return minmax_norm(upsample(tokens_to_grid(patch_scores), size))


def nonfinite_items(x: torch.Tensor) -> list[int]:
    """Indices (along dim 0) of the batch items holding a NaN or Inf value.

    Fast path: NaN/Inf propagate into the sum, so a finite sum means a finite batch (an overflowing
    sum of huge finite values falls through to the exact scan)."""
    if bool(torch.isfinite(x.sum())):
        return []
    return (~torch.isfinite(x)).flatten(1).any(1).nonzero().flatten().tolist()


def check_finite(maps: torch.Tensor, method: str, what: str = "map") -> torch.Tensor:
    """Raise MapError naming the method when any value is NaN or infinite."""
    bad = nonfinite_items(maps)
    if bad:
        raise MapError(f"attribution method {method!r} produced a non-finite {what} for batch items {bad}")
    return maps


def pair_seed(seed: int, image: torch.Tensor, text: str) -> int:
    """A 63-bit seed derived from (seed, image bytes, text): a pair gets the same random draw
    whether it is explained alone or inside any batch, and different pairs get different draws."""
    h = hashlib.blake2b(digest_size=8)
    h.update(int(seed).to_bytes(8, "little", signed=True))
    h.update(np.ascontiguousarray(image.detach().float().cpu().numpy()).tobytes())
    h.update(text.encode("utf-8"))
    return int.from_bytes(h.digest(), "little") & ((1 << 63) - 1)


def rownorm(a: torch.Tensor) -> torch.Tensor:
    """Normalise rows to sum to one, keeping the row dimension (the vit-explain bug drops it)."""
    return a / a.sum(-1, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)


def identity_like(a: torch.Tensor) -> torch.Tensor:
    """Identity matrices broadcastable against square (…, T, T) attention."""
    return torch.eye(a.shape[-1], dtype=a.dtype, device=a.device).expand_as(a)


def resolve_block(index: int, n_blocks: int, key: str) -> int:
    """A block index (negative counts from the end) -> 0-based index, or a ConfigError naming ``key``."""
    from ..errors import ConfigError

    i = int(index)
    j = i + n_blocks if i < 0 else i
    if not 0 <= j < n_blocks:
        raise ConfigError(f"{key}={index} is out of range for a model with {n_blocks} blocks")
    return j
