"""The model handle every part of matex passes around: an open_clip CLIP plus its tokenizer and
input geometry, so preprocessing and tokenisation are never guessed twice."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..data.transforms import CLIP_MEAN, CLIP_STD, InputGeometry, normalize_batch


@dataclass
class MatexModel:
    clip: torch.nn.Module  # open_clip CLIP (eval mode)
    tokenizer: Any  # open_clip tokenizer: list[str] -> LongTensor (B, ctx)
    geometry: InputGeometry = field(default_factory=InputGeometry)
    mean: Sequence[float] = CLIP_MEAN
    std: Sequence[float] = CLIP_STD
    name: str = "model"
    meta: dict = field(default_factory=dict)  # arch, source, checkpoint sha256, ...

    @property
    def device(self) -> torch.device:
        return next(self.clip.parameters()).device

    def to(self, device: str | torch.device) -> MatexModel:
        self.clip.to(device)
        return self

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        return self.tokenizer(list(texts)).to(self.device)

    def preprocess(self, images) -> torch.Tensor:
        """PIL images or image file paths, a (B, H, W) uint8 grey array, or an already-normalised
        (B, 3, S, S) float tensor -> normalised (B, 3, S, S) float tensor on the model's device.

        Bad input is a :class:`~matex.errors.DataError` naming the image (index or file): an
        unreadable file, a tensor of the wrong size, NaN/Inf pixels, an empty batch."""
        from ..errors import DataError

        s = self.geometry.size
        if isinstance(images, torch.Tensor):
            if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[2:]) != (s, s):
                raise DataError(
                    f"image tensor must be (B, 3, {s}, {s}) for this model (input.size {s}), got {tuple(images.shape)}"
                )
            x = images.to(self.device, torch.float32)
        elif isinstance(images, np.ndarray):
            if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (s, s):
                raise DataError(
                    f"image array must be uint8 (B, {s}, {s}) grey input images, got "
                    f"{images.dtype} {images.shape}; pass PIL images or file paths to resize"
                )
            x = normalize_batch(images, self.mean, self.std).to(self.device)
        else:
            images = list(images)
            arrays = [self.geometry.image_to_input(_open_image(im, i, self.geometry)) for i, im in enumerate(images)]
            if not arrays:
                raise DataError("no images given")
            x = normalize_batch(np.stack(arrays), self.mean, self.std).to(self.device)
        if x.shape[0] == 0:
            raise DataError("no images given")
        from ..attribution.common import nonfinite_items

        bad = nonfinite_items(x)
        if bad:
            raise DataError(f"images {bad} contain NaN or Inf values")
        return x

    @torch.no_grad()
    def similarity(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Per-pair cosine similarity S = cos(f_I(x_i), f_T(t_i)), shape (B,)."""
        fi = torch.nn.functional.normalize(self.clip.encode_image(images), dim=-1)
        ft = torch.nn.functional.normalize(self.clip.encode_text(tokens), dim=-1)
        return (fi * ft).sum(-1)


def _open_image(im, index: int, geometry: InputGeometry | None = None):
    """A PIL image as given, or the film at a file path (PNG/JPEG/TIFF of any bit depth, or DICOM) as
    an 8-bit grey image with its provenance in ``img.info["matex"]``; errors name the file, and a
    film over the pixel limit is refused with the limit and how to raise it."""
    import os

    from PIL import Image

    from ..data.images import read_image
    from ..errors import DataError

    if isinstance(im, Image.Image):
        return im
    if isinstance(im, (str, os.PathLike)):
        img, info = read_image(im, geometry, label=f"image {index}")
        img.info["matex"] = info
        return img
    raise DataError(
        f"image {index} is a {type(im).__name__}; expected a PIL image, a file path, a (B, H, W) "
        "uint8 array or a (B, 3, H, W) tensor"
    )
