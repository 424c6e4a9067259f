"""The public Python API: explain image-phrase pairs, look at the result, list the methods.

>>> import matex
>>> model = matex.load_model("demo")                 # a small random CLIP: runs anywhere, in seconds
>>> out = matex.explain(model, "docs/img/example_chest.jpg", "small left pleural effusion")
>>> out.image.shape                                   # one map per pair, at the model's input size
torch.Size([1, 224, 224])
>>> out.overlay(0).size                               # the radiograph with the map on top (PIL image)
(448, 448)
>>> "matex" in matex.methods()
True
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .attribution.registry import ExplainOutput, available_methods, checked_texts, get_method
from .errors import DataError

__all__ = ["Explanation", "explain", "methods", "overlay_image"]


@dataclass
class Explanation(ExplainOutput):
    """What :func:`explain` returns: the maps of :class:`ExplainOutput` plus what is needed to draw them.

    image: (B, H, W) float32 maps in [0, 1]; components: MATEX's terms, (B, H, W) each; text: per-token
    scores or None; meta: method and parameters used; inputs: (B, H, W) uint8 grey model inputs (the
    radiographs after crop/letterbox); texts: the phrases."""

    inputs: np.ndarray | None = None
    texts: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.image.shape[0])

    def overlay(
        self,
        i: int = 0,
        box: Sequence[float] | None = None,
        *,
        component: str | None = None,
        alpha: float = 0.45,
        scale: int = 2,
    ):
        """Pair ``i`` as a PIL RGB image: the radiograph with its map as a colour overlay.

        box: (x0, y0, x1, y1) in model-input pixels, drawn as a green rectangle. component: draw one
        of ``self.components`` instead of the fused map. scale: upsampling factor of the picture.

        >>> import matex
        >>> out = matex.explain(matex.load_model("demo"), np.zeros((224, 224), np.uint8), "cardiomegaly")
        >>> out.overlay(0, box=(40, 60, 120, 180)).mode
        'RGB'
        """
        if not 0 <= i < len(self):
            raise IndexError(f"pair {i} out of range: this explanation has {len(self)} pair(s)")
        if component is not None and component not in self.components:
            raise KeyError(f"no component {component!r}; available: {sorted(self.components)}")
        maps = self.components[component] if component is not None else self.image
        grey = self.inputs[i] if self.inputs is not None else np.zeros(tuple(maps.shape[1:]), np.uint8)
        return overlay_image(grey, maps[i].numpy(), box=box, alpha=alpha, scale=scale)

    def components_row(self, i: int = 0, box: Sequence[float] | None = None, scale: int = 1):
        """Pair ``i``'s radiograph, fused map and every component side by side (PIL image, one
        input's width times ``scale`` per panel): each term named in words, each map min-max
        normalised per panel under one colour bar, the phrase above, R/L marks (the patient's sides).
        MATEX's row prints two columns wide (7.2 in) at 250 dpi x ``scale``."""
        from .figures.maps import components_figure, figure_to_pil

        grey = self.inputs[i] if self.inputs is not None else np.zeros(tuple(self.image.shape[1:]), np.uint8)
        parts = {name: v[i].numpy() for name, v in self.components.items()}
        phrase = self.texts[i] if i < len(self.texts) else ""
        panel_in = 0.896
        fig = components_figure(
            grey, self.image[i].numpy(), parts, phrase, self.meta.get("method", "map"), box, panel_in=panel_in
        )
        width_px = (2 + len(parts)) * grey.shape[1] * scale
        return figure_to_pil(fig, width_px, dpi=grey.shape[1] * scale / panel_in)

    def save(self, path: str | os.PathLike, i: int | None = None, box: Sequence[float] | None = None) -> Path:
        """Write the overlay of pair ``i`` (all pairs side by side when None) to ``path`` (PNG/JPG),
        or the raw maps as a (B, H, W) float32 array when ``path`` ends in ``.npy``. Returns the path."""
        from PIL import Image

        from .io import atomic_path

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".npy":
            with atomic_path(path, suffix=".npy") as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, self.image.numpy() if i is None else self.image[i : i + 1].numpy())
            return path
        idx = range(len(self)) if i is None else [i]
        tiles = [self.overlay(j, box) for j in idx]
        row = Image.new("RGB", (sum(t.width for t in tiles), max(t.height for t in tiles)), "white")
        x = 0
        for t in tiles:
            row.paste(t, (x, 0))
            x += t.width
        with atomic_path(path, suffix=path.suffix) as tmp:
            row.save(tmp, format=Image.registered_extensions().get(path.suffix.lower(), "PNG"))
        return path


def overlay_image(
    grey: np.ndarray,
    heat: np.ndarray | None,
    box: Sequence[float] | None = None,
    alpha: float = 0.45,
    scale: int = 2,
    cmap: str = "jet",
):
    """A PIL RGB picture of a grey uint8 image with ``heat`` ((H, W) in [0, 1]) blended on top.

    The map is shown through ``cmap`` with weight ``alpha``; ``box`` (x0, y0, x1, y1) in pixels of
    ``grey`` is drawn in green. ``heat=None`` draws the radiograph alone."""
    from matplotlib import colormaps
    from PIL import Image, ImageDraw

    g = np.asarray(grey, dtype=np.float32) / 255.0
    rgb = np.repeat(g[..., None], 3, axis=2)
    if heat is not None:
        h = np.clip(np.nan_to_num(np.asarray(heat, dtype=np.float32)), 0.0, 1.0)
        colour = colormaps[cmap](h)[..., :3].astype(np.float32)
        rgb = (1.0 - alpha) * rgb + alpha * colour
    img = Image.fromarray((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8), "RGB")
    if scale != 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.BILINEAR)
    if box is not None:
        x0, y0, x1, y1 = (float(v) * scale for v in box)
        ImageDraw.Draw(img).rectangle((x0, y0, x1 - 1, y1 - 1), outline=(0, 220, 0), width=max(1, scale))
    return img


def _as_image_list(images: Any, size: int, geometry: Any = None) -> Any:
    """Normalise the many accepted image forms to what ``MatexModel.preprocess`` takes: a tensor,
    a (B, S, S) uint8 array, or a list of PIL images / paths."""
    from PIL import Image

    if isinstance(images, (str, os.PathLike, Image.Image)):
        return [_as_pil(images, 0, geometry)]
    if isinstance(images, torch.Tensor):
        return images
    if isinstance(images, np.ndarray):
        if images.ndim == 3 and images.dtype == np.uint8 and images.shape[1:] == (size, size):
            return images  # a batch of model inputs
        if images.ndim == 2 or (images.ndim == 3 and images.shape[-1] in (3, 4)):
            return [_array_to_pil(images, 0)]  # one image, any size
        return images  # preprocess names what is wrong
    if not isinstance(images, (list, tuple)):
        try:
            images = list(images)
        except TypeError:
            raise DataError(
                f"images is a {type(images).__name__}; expected a file path, a PIL image, a numpy "
                "array, a tensor, or a list of these"
            ) from None
    return [_as_pil(im, k, geometry) for k, im in enumerate(images)]


def _as_pil(im: Any, index: int, geometry: Any = None):
    """One image as a PIL image: opened from a path (errors name the file), converted from an array."""
    from .models.base import _open_image

    if isinstance(im, np.ndarray):
        return _array_to_pil(im, index)
    return _open_image(im, index, geometry)


def _array_to_pil(a: np.ndarray, index: int):
    """An (H, W) or (H, W, 3|4) array as a PIL image.

    uint8 arrays are used as stored; float arrays within [0, 1] are read as intensities (0 black, 1
    white); any other grey array (uint16, int16, 12-bit values, floats beyond [0, 1]) becomes a
    32-bit float image that the model's ``input.intensity`` mapping windows onto 0..255."""
    from PIL import Image

    a = np.asarray(a)
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (3, 4))):
        raise DataError(f"image {index}: array of shape {a.shape}; expected (H, W) or (H, W, 3)")
    if a.dtype == np.uint8:
        return Image.fromarray(a[..., :3] if a.ndim == 3 else a)
    if a.dtype == bool or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise DataError(f"image {index}: array of dtype {a.dtype}; expected integer or float intensities")
    was_float = np.issubdtype(a.dtype, np.floating)
    a = (a[..., :3] if a.ndim == 3 else a).astype(np.float64)
    if not np.isfinite(a).all():
        raise DataError(f"image {index}: array contains NaN or Inf values")
    if was_float and a.size and a.min() >= 0.0 and a.max() <= 1.0:
        return Image.fromarray(np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8))
    if a.ndim == 3:  # colour: to grey with the ITU-R 601 weights of PIL's convert("L")
        a = a[..., 0] * 0.299 + a[..., 1] * 0.587 + a[..., 2] * 0.114
    return Image.fromarray(a.astype(np.float32), "F")


def _as_texts(texts: Any) -> list[str]:
    """One phrase or a list of phrases -> a list of non-empty strings (errors name the empty ones)."""
    return checked_texts([texts] if isinstance(texts, str) else texts)


def explain(model, images, texts: str | Sequence[str], method: str = "matex", **params: Any) -> Explanation:
    """Explain each (image, phrase) pair with ``method``; returns an :class:`Explanation`.

    images: one image or a list of them, each a file path (``str`` or path-like: JPEG, PNG, TIFF of
    8 to 16 bits or float, DICOM), a PIL image or a numpy array ((H, W) grey or (H, W, 3); uint8 as
    stored, float in [0, 1] as intensities, other integers and floats windowed by the model's
    ``geometry.intensity``), any size: they are cropped or letterboxed to the model's input like the
    pipeline does. ``meta["inputs"]`` of the result records each image's format, size and intensity
    window (and a DICOM's pixel spacing); files over the pixel limit are refused
    (docs/getting-started.md, "Image formats and intensities"). Also accepted: a (B, S, S) uint8 array
    of model inputs, or a normalised (B, 3, S, S) tensor. texts: one phrase, or a list with one
    phrase per image. params: the method's parameters (``matex.methods()`` lists the methods;
    ``matex.attribution.get_method(name).defaults`` their parameters). Bad input raises
    :class:`matex.errors.DataError` naming the image or phrase.

    The maps come from :func:`matex.attribution.explain` (the engine the pipeline calls, which takes
    already-decoded images); this function only normalises the input forms and keeps the model
    inputs so that the result can draw itself.

    Thread safety: calls on one model from several threads take turns (a per-model lock held for the
    whole call), so they give the same maps as serial calls; the model is left exactly as found, also
    when a call raises. For parallel throughput, load one model per thread.

    >>> import matex
    >>> model = matex.load_model("demo")
    >>> out = matex.explain(model, ["docs/img/example_chest.jpg"] * 2, ["left lower lobe consolidation",
    ...                     "cardiomegaly"], method="gradcam")
    >>> tuple(out.image.shape), float(out.image.min()) >= 0.0, float(out.image.max()) <= 1.0
    ((2, 224, 224), True, True)
    """
    from .attribution.registry import explain as engine_explain

    texts = _as_texts(texts)
    batch = _as_image_list(images, model.geometry.size, model.geometry)
    out = engine_explain(model, batch, texts, method, **params)
    meta = dict(out.meta)
    if isinstance(batch, list):  # what each image was and how its intensities were mapped
        meta["inputs"] = [_provenance(im, model.geometry) for im in batch]
    return Explanation(
        image=out.image,
        text=out.text,
        components=out.components,
        meta=meta,
        inputs=_model_inputs(model, batch),
        texts=texts,
    )


def _provenance(im: Any, geometry: Any) -> dict[str, Any]:
    """A read file's record (format, bit depth, intensity window, DICOM pixel spacing), or the same
    for an in-memory image."""
    from .data.images import pil_provenance

    return dict(im.info.get("matex") or pil_provenance(im, None, geometry))


def _model_inputs(model, batch: Any) -> np.ndarray:
    """The grey (B, S, S) uint8 images the model saw, for drawing (not for computing maps)."""
    if isinstance(batch, np.ndarray):
        return batch
    if isinstance(batch, torch.Tensor):
        mean = torch.tensor(model.mean[0], dtype=torch.float32)
        std = torch.tensor(model.std[0], dtype=torch.float32)
        grey = (batch[:, 0].detach().to("cpu", torch.float32) * std + mean).clamp(0, 1).mul(255).round()
        return grey.to(torch.uint8).numpy()
    return np.stack([model.geometry.image_to_input(im) for im in batch])


def methods() -> dict[str, str]:
    """The registered attribution methods, name -> paper reference (empty for controls without one).

    >>> import matex
    >>> {"matex", "gradcam", "chefer", "random"} <= set(matex.methods())
    True
    """
    return {name: get_method(name).reference for name in available_methods()}
