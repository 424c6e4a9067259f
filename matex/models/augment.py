"""Label-preserving image augmentation for contrastive training of the demo model.

The demo model is a ViT trained from scratch on a few thousand films, so it memorises them within a
few epochs (training loss falls while validation loss rises). Each epoch therefore sees every film
under a fresh small random affine transform and exposure change, drawn from the training generator
(seeded, so a run is reproducible). Nothing here flips the image: left and right are part of what
the phrases say ("left apical pneumothorax"), so a mirror image would carry the wrong label.

Transforms, per image: translation by up to ``shift`` of the side, isotropic scale by a factor in
[1 - scale, 1 + scale], rotation by up to ``rotate_deg`` degrees (bilinear resampling, border
replicated), then intensity ``a * x + b`` with a in [1 - contrast, 1 + contrast] and b in
[-brightness, brightness] on the [0, 1] scale, clipped to [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augmentation:
    """Ranges of the random transforms (0 disables one); see the module docstring."""

    shift: float = 0.0
    scale: float = 0.0
    rotate_deg: float = 0.0
    contrast: float = 0.0
    brightness: float = 0.0

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> Augmentation | None:
        """``model.demo.augment`` (a mapping, or null / empty = none) -> an Augmentation or None."""
        if not cfg:
            return None
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            from ..errors import ConfigError

            raise ConfigError(f"config key model.demo.augment: unknown keys {unknown} (known: {sorted(known)})")
        aug = cls(**{k: float(v) for k, v in cfg.items()})
        return aug if aug.active else None

    @property
    def active(self) -> bool:
        return any(getattr(self, f.name) > 0 for f in fields(self))

    def apply(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(B, H, W) images in [0, 1] (float) -> augmented copies, same shape and dtype."""
        b = images.shape[0]

        def uniform(half_width: float) -> torch.Tensor:
            return (torch.rand(b, generator=generator) * 2 - 1) * half_width

        x = images.unsqueeze(1)
        if self.shift > 0 or self.scale > 0 or self.rotate_deg > 0:
            angle = uniform(self.rotate_deg) * (math.pi / 180.0)
            zoom = 1.0 + uniform(self.scale)
            tx, ty = uniform(self.shift) * 2, uniform(self.shift) * 2  # affine_grid spans [-1, 1]
            cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
            theta = torch.stack(
                [torch.stack([cos, -sin, tx], dim=1), torch.stack([sin, cos, ty], dim=1)],
                dim=1,
            ).to(x.dtype)
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if self.contrast > 0 or self.brightness > 0:
            gain = (1.0 + uniform(self.contrast)).view(b, 1, 1, 1)
            offset = uniform(self.brightness).view(b, 1, 1, 1)
            x = (x * gain + offset).clamp_(0.0, 1.0)
        return x.squeeze(1)
