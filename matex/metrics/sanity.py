"""Model-randomisation sanity check (Adebayo et al. 2018; DESIGN.md section 5): re-initialise the
vision tower from the top block down and compare each method's maps before and after with a
Spearman rank correlation. A map that survives randomisation explains the input or the text prior,
not the model."""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch
from scipy.stats import rankdata

from ..errors import MapError, MatexError

INIT_STD = 0.02


def vision_blocks(model) -> torch.nn.ModuleList:
    """The vision tower's transformer blocks, input to output (open_clip VisionTransformer)."""
    try:
        return model.clip.visual.transformer.resblocks
    except AttributeError as err:
        raise MatexError(f"sanity check: model {getattr(model, 'name', '?')!r} has no "
                         "clip.visual.transformer.resblocks (only open_clip ViTs are supported)") from err


@torch.no_grad()
def _reinit_block(block: torch.nn.Module, generator: torch.Generator) -> None:
    """Every parameter of ``block``: LayerNorm weight -> 1, bias -> 0; matrices (Linear weights,
    attention in/out projections) -> normal(0, 0.02); other biases -> 0; any other vector (e.g. a
    LayerScale gamma) -> 1. Values are drawn on the CPU so the same seed gives the same weights on
    any device."""
    for module in block.modules():
        is_norm = isinstance(module, torch.nn.LayerNorm)
        for name, param in module.named_parameters(recurse=False):
            if is_norm:
                value = torch.ones(param.shape) if name == "weight" else torch.zeros(param.shape)
            elif param.ndim >= 2:
                value = torch.randn(param.shape, generator=generator) * INIT_STD
            elif "bias" in name:
                value = torch.zeros(param.shape)
            else:
                value = torch.ones(param.shape)
            param.copy_(value.to(param.dtype))


def randomize_cascading(model, n_blocks: int, seed: int):
    """A copy of ``model`` whose top ``n_blocks`` vision blocks (the last block and down) are
    re-initialised; the original model is untouched.

    Each block's draw depends only on (seed, block index), so the cascade is nested: randomising
    k+1 blocks keeps the k blocks randomised before with the very same weights.
    """
    blocks = vision_blocks(model)
    n_total = len(blocks)
    if not 0 <= int(n_blocks) <= n_total:
        raise MatexError(f"sanity check: n_blocks={n_blocks} must lie in [0, {n_total}] "
                         f"(the vision tower has {n_total} blocks)")
    clip = copy.deepcopy(model.clip)
    copied_blocks = clip.visual.transformer.resblocks
    for index in range(n_total - int(n_blocks), n_total):
        generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + index)
        _reinit_block(copied_blocks[index], generator)
    meta = {**model.meta, "randomized_vision_blocks": int(n_blocks), "randomization_seed": int(seed)}
    return dataclasses.replace(model, clip=clip, meta=meta)


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
    denom = np.sqrt((ra ** 2).sum(axis=1) * (rb ** 2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (ra * rb).sum(axis=1) / denom
    rho[denom == 0] = np.nan
    return np.clip(rho, -1.0, 1.0)
