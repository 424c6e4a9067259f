"""ROAR+ (Hooker et al. 2019, as used by M2IB and MATEX): remove the top-k % pixels of each map
from the training images and fine-tune; a method whose maps point at what the model needs makes
the retrained model worse on untouched validation images."""
from __future__ import annotations

import math

import numpy as np


def top_fraction_mask(maps: np.ndarray, fraction: float) -> np.ndarray:
    """(B, H, W) bool: exactly ceil(fraction*H*W) highest pixels per map; ties broken by the lower
    flat index (stable sort), so the result is deterministic."""
    b, h, w = maps.shape
    k = math.ceil(fraction * h * w)
    flat = maps.reshape(b, -1).astype(np.float64)
    order = np.argsort(-flat, axis=1, kind="stable")[:, :k]
    mask = np.zeros_like(flat, dtype=bool)
    np.put_along_axis(mask, order, True, axis=1)
    return mask.reshape(b, h, w)


def degrade_images(images_u8: np.ndarray, maps: np.ndarray, fraction: float, fill_value: float) -> np.ndarray:
    """Replace each image's top-``fraction`` pixels (by its map) with ``fill_value``, the training
    set's per-channel mean (grey-scale radiographs: one channel replicated)."""
    if images_u8.shape != maps.shape:
        raise ValueError(f"images {images_u8.shape} and maps {maps.shape} differ in shape")
    out = np.array(images_u8, copy=True)
    out[top_fraction_mask(maps, fraction)] = np.uint8(round(fill_value))
    return out


def random_maps(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """The random-removal control: uniform noise maps, seeded."""
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def roar_plus(loss_degraded: float, loss_clean: float) -> float:
    """ROAR+ = 100 (L_val(theta_deg) - L_val(theta_clean)) / L_val(theta_clean)."""
    return 100.0 * (loss_degraded - loss_clean) / loss_clean
