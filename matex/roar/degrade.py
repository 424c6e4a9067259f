"""ROAR+ (Hooker et al. 2019, as used by M2IB and MATEX): remove the top-k % pixels of each map
from the training images and fine-tune; a method whose maps point at what the model needs makes
the retrained model worse on untouched validation images."""
from __future__ import annotations

import numpy as np

# One definition of "the top k % pixels" (exact count, stable tie-breaking) for ROAR+ and IoU@k.
from ..metrics.localisation import top_fraction_masks


def degrade_images(images_u8: np.ndarray, maps: np.ndarray, fraction: float, fill_value: float) -> np.ndarray:
    """Replace each image's top-``fraction`` pixels (by its map) with ``fill_value``, the training
    set's per-channel mean (grey-scale radiographs: one channel replicated)."""
    if images_u8.shape != maps.shape:
        raise ValueError(f"images {images_u8.shape} and maps {maps.shape} differ in shape")
    out = np.array(images_u8, copy=True)
    out[top_fraction_masks(maps, fraction)] = np.uint8(round(fill_value))
    return out


def random_maps(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """The random-removal control: uniform noise maps, seeded."""
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def roar_plus(loss_degraded: float, loss_clean: float) -> float:
    """ROAR+ = 100 (L_val(theta_deg) - L_val(theta_clean)) / L_val(theta_clean)."""
    return 100.0 * (loss_degraded - loss_clean) / loss_clean
