"""The model's input geometry: how an original radiograph becomes the model's square input, and
how a box in original pixels lands on that input.

Both the image and its boxes go through the *same* per-axis affine map ``x_in = x * sx + ox``,
``y_in = y * sy + oy``, so a box drawn on the original covers the same anatomy on the input.
Modes: ``center_crop`` (scale the short side to ``size``, crop the centre: open_clip's default) and
``letterbox`` (scale the long side to ``size``, pad with black: nothing is cut off).

Before the geometry, a film's stored values become 8-bit grey levels (:class:`Intensity`): 8-bit
images are used as stored; 16-bit (and 12-bit in a 16-bit container), 32-bit integer and float images
are windowed, min-max or between two percentiles, onto 0..255 (docs/getting-started.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from PIL import Image

# open_clip's OpenAI CLIP normalisation; grey-scale radiographs are replicated over 3 channels.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class Affine:
    """Per-axis map from original pixel coordinates to input pixel coordinates."""

    sx: float
    sy: float
    ox: float
    oy: float

    def point(self, x: float, y: float) -> tuple[float, float]:
        return x * self.sx + self.ox, y * self.sy + self.oy


INTENSITY_MODES = ("minmax", "percentile")
# PIL modes whose values are not 8-bit grey levels: 16-bit integer, 32-bit integer, 32-bit float
WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


@dataclass(frozen=True)
class Intensity:
    """How stored pixel values become 8-bit grey levels (``input.intensity`` in the config).

    ``minmax`` maps the image's smallest value to 0 and its largest to 255; ``percentile`` maps the
    ``low``-th percentile to 0 and the ``high``-th to 255 and clips beyond (robust to a few hot or dead
    pixels and burnt-in labels). Both are linear in between, rounded to the nearest level. 8-bit images
    are used as stored unless ``rescale_8bit`` (so 8-bit results never move by default)."""

    mode: Literal["minmax", "percentile"] = "minmax"
    low: float = 0.5
    high: float = 99.5
    rescale_8bit: bool = False

    def __post_init__(self) -> None:
        if self.mode not in INTENSITY_MODES:
            raise ValueError(f"input.intensity.mode must be one of {INTENSITY_MODES}, got {self.mode!r}")
        if not 0.0 <= self.low < self.high <= 100.0:
            raise ValueError(f"input.intensity needs 0 <= low < high <= 100, got low={self.low}, high={self.high}")

    def window(self, values: np.ndarray) -> tuple[float, float]:
        """The stored values (lo, hi) that map to grey levels 0 and 255 (NaN/Inf ignored)."""
        v = np.asarray(values, dtype=np.float64)
        v = v[np.isfinite(v)]
        if v.size == 0:
            return 0.0, 0.0
        if self.mode == "minmax":
            return float(v.min()), float(v.max())
        lo, hi = np.percentile(v, [self.low, self.high])
        return float(lo), float(hi)

    def to_uint8(self, values: np.ndarray) -> np.ndarray:
        """``round(255 * clip((v - lo) / (hi - lo), 0, 1))``; a flat image (hi == lo) becomes black."""
        v = np.asarray(values, dtype=np.float64)
        lo, hi = self.window(v)
        if not hi > lo:
            return np.zeros(v.shape, dtype=np.uint8)
        scaled = np.clip((np.nan_to_num(v, nan=lo) - lo) / (hi - lo), 0.0, 1.0)
        return np.rint(scaled * 255.0).astype(np.uint8)


def to_grey8(img: Image.Image, intensity: Intensity | None = None) -> Image.Image:
    """``img`` as an 8-bit grey (``L``) image: 16-bit, 32-bit and float images through ``intensity``;
    8-bit grey or colour images converted as stored (or rescaled too, with ``rescale_8bit``)."""
    intensity = intensity or Intensity()
    if img.mode in WIDE_MODES:
        return Image.fromarray(intensity.to_uint8(np.asarray(img)), "L")
    grey = img if img.mode == "L" else img.convert("L")
    if intensity.rescale_8bit:
        return Image.fromarray(intensity.to_uint8(np.asarray(grey)), "L")
    return grey


@dataclass(frozen=True)
class InputGeometry:
    """The model input: ``size`` x ``size`` pixels by ``mode``; ``intensity``: how stored values
    become grey levels; ``max_pixels``: the largest film decoded (None: the default or the
    ``MATEX_MAX_IMAGE_PIXELS`` environment variable, see :func:`matex.data.images.pixel_limit`)."""

    size: int = 224
    mode: Literal["center_crop", "letterbox"] = "center_crop"
    intensity: Intensity = field(default_factory=Intensity)
    max_pixels: int | None = None

    @classmethod
    def from_config(cls, inp: Mapping[str, Any]) -> InputGeometry:
        """The geometry of a config's ``input`` section (size, mode, intensity, max_image_pixels)."""
        max_pixels = inp.get("max_image_pixels")
        return cls(
            int(inp["size"]),
            inp.get("mode", "center_crop"),
            Intensity(**dict(inp.get("intensity") or {})),
            None if max_pixels is None else int(max_pixels),
        )

    def affine(self, width: int, height: int) -> Affine:
        s = self.size
        if self.mode == "center_crop":
            side = min(width, height)
            scale = s / side
            x0, y0 = (width - side) / 2.0, (height - side) / 2.0
            return Affine(scale, scale, -x0 * scale, -y0 * scale)
        if self.mode == "letterbox":
            scale = s / max(width, height)
            new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
            return Affine(new_w / width, new_h / height, float((s - new_w) // 2), float((s - new_h) // 2))
        raise ValueError(f"unknown input mode {self.mode!r} (expected center_crop or letterbox)")

    def image_to_input(self, img: Image.Image) -> np.ndarray:
        """Grey-scale uint8 (size, size) array of the model input for ``img`` (any PIL mode: wide
        modes go through ``self.intensity``)."""
        img = to_grey8(img, self.intensity)
        w, h = img.size
        a = self.affine(w, h)
        s = self.size
        if self.mode == "center_crop":
            # source region that maps onto [0, s) x [0, s)
            box = (-a.ox / a.sx, -a.oy / a.sy, (s - a.ox) / a.sx, (s - a.oy) / a.sy)
            out = img.resize((s, s), Image.Resampling.BILINEAR, box=box, reducing_gap=2.0)
            return np.asarray(out, dtype=np.uint8)
        new_w, new_h = round(w * a.sx), round(h * a.sy)
        resized = img.resize((new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=2.0)
        canvas = Image.new("L", (s, s), 0)
        canvas.paste(resized, (int(a.ox), int(a.oy)))
        return np.asarray(canvas, dtype=np.uint8)

    def map_box(
        self, x: float, y: float, w: float, h: float, width: int, height: int
    ) -> tuple[tuple[float, float, float, float] | None, str]:
        """Map an MS-CXR box (x, y top-left, w, h; original pixels) onto the input.

        Returns ``((x0, y0, x1, y1), status)`` in input pixels, status one of ``ok``, ``clipped``
        (part of the box lay outside the original image or the crop) or ``dropped`` (nothing of the
        box is left, or it had zero area): then the box is ``None``.
        """
        if not (w > 0 and h > 0) or not all(np.isfinite([x, y, w, h])):
            return None, "dropped"
        a = self.affine(width, height)
        # clip to the original image first, then to the input square
        ox0, oy0 = max(0.0, x), max(0.0, y)
        ox1, oy1 = min(float(width), x + w), min(float(height), y + h)
        status = "ok" if (ox0, oy0, ox1, oy1) == (x, y, x + w, y + h) else "clipped"
        if ox1 <= ox0 or oy1 <= oy0:
            return None, "dropped"
        x0, y0 = a.point(ox0, oy0)
        x1, y1 = a.point(ox1, oy1)
        cx0, cy0 = max(0.0, x0), max(0.0, y0)
        cx1, cy1 = min(float(self.size), x1), min(float(self.size), y1)
        if cx1 <= cx0 or cy1 <= cy0:
            return None, "dropped"
        if (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1):
            status = "clipped"
        return (cx0, cy0, cx1, cy1), status


def box_mask(boxes: Sequence[Sequence[float]], size: int | tuple[int, int]) -> np.ndarray:
    """Boolean (H, W) mask of the union of boxes (x0, y0, x1, y1): a pixel is inside when its
    centre lies in [x0, x1) x [y0, y1)."""
    h, w = (size, size) if isinstance(size, int) else size
    mask = np.zeros((h, w), dtype=bool)
    cy = np.arange(h) + 0.5
    cx = np.arange(w) + 0.5
    for x0, y0, x1, y1 in boxes:
        rows = (cy >= y0) & (cy < y1)
        cols = (cx >= x0) & (cx < x1)
        mask |= rows[:, None] & cols[None, :]
    return mask


def normalize_batch(gray_u8, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD):
    """(B, H, W) uint8 grey-scale -> (B, 3, H, W) float32 torch tensor, CLIP-normalised."""
    import torch

    x = torch.as_tensor(np.asarray(gray_u8)) if not isinstance(gray_u8, torch.Tensor) else gray_u8
    x = x.to(torch.float32).div_(255.0).unsqueeze(1).expand(-1, 3, -1, -1)
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - m) / s
