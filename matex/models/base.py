"""The model handle every part of matex passes around: an open_clip CLIP plus its tokenizer and
input geometry, so preprocessing and tokenisation are never guessed twice."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from ..data.transforms import CLIP_MEAN, CLIP_STD, InputGeometry, normalize_batch


@dataclass
class MatexModel:
    clip: torch.nn.Module                 # open_clip CLIP (eval mode)
    tokenizer: Any                        # open_clip tokenizer: list[str] -> LongTensor (B, ctx)
    geometry: InputGeometry = field(default_factory=InputGeometry)
    mean: Sequence[float] = CLIP_MEAN
    std: Sequence[float] = CLIP_STD
    name: str = "model"
    meta: dict = field(default_factory=dict)  # arch, source, checkpoint sha256, ...

    @property
    def device(self) -> torch.device:
        return next(self.clip.parameters()).device

    def to(self, device: str | torch.device) -> "MatexModel":
        self.clip.to(device)
        return self

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        return self.tokenizer(list(texts)).to(self.device)

    def preprocess(self, images) -> torch.Tensor:
        """PIL images, a (B, H, W) uint8 grey array, or an already-normalised (B, 3, H, W) float
        tensor -> normalised (B, 3, S, S) float tensor on the model's device."""
        if isinstance(images, torch.Tensor) and images.ndim == 4:
            return images.to(self.device, torch.float32)
        if isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 3:
            return normalize_batch(images, self.mean, self.std).to(self.device)
        arrays = np.stack([self.geometry.image_to_input(im) for im in images])
        return normalize_batch(arrays, self.mean, self.std).to(self.device)

    @torch.no_grad()
    def similarity(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Per-pair cosine similarity S = cos(f_I(x_i), f_T(t_i)), shape (B,)."""
        fi = torch.nn.functional.normalize(self.clip.encode_image(images), dim=-1)
        ft = torch.nn.functional.normalize(self.clip.encode_text(tokens), dim=-1)
        return (fi * ft).sum(-1)
