"""Reading a radiograph file: PNG, JPEG, TIFF (8-, 12-, 16-bit, float) through Pillow, DICOM through
pydicom (:mod:`matex.data.dicom`), with a guard against decompression bombs and huge images.

Every reader returns the film as an 8-bit grey (``L``) PIL image, its stored values mapped by the
geometry's :class:`~matex.data.transforms.Intensity`, plus a provenance record (format, bit depth,
how intensities were mapped, the DICOM pixel spacing) that ``matex explain`` keeps in its meta.
Errors are :class:`~matex.errors.DataError` naming the file.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError
from .transforms import WIDE_MODES, InputGeometry, to_grey8

# Pillow refuses images over 2 x Image.MAX_IMAGE_PIXELS (about 179 megapixels) as decompression bombs;
# matex keeps that limit by default (a chest film is 5-20 megapixels) and lets the user raise it.
DEFAULT_MAX_PIXELS = 178_956_970
MAX_PIXELS_ENV = "MATEX_MAX_IMAGE_PIXELS"
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
_PIL_LOCK = threading.Lock()


def pixel_limit(configured: int | None = None) -> int:
    """The largest image (width x height) matex decodes: ``configured`` (``input.max_image_pixels``
    or ``--max-image-pixels``), else the environment variable ``MATEX_MAX_IMAGE_PIXELS``, else
    178,956,970 (Pillow's own refusal threshold)."""
    if configured is not None:
        return int(configured)
    env = os.environ.get(MAX_PIXELS_ENV, "").strip().replace("_", "").replace(",", "")
    if env:
        try:
            value = int(env)
        except ValueError:
            raise DataError(f"{MAX_PIXELS_ENV}={env!r} is not a whole number of pixels") from None
        if value <= 0:
            raise DataError(f"{MAX_PIXELS_ENV}={env!r} must be a positive number of pixels")
        return value
    return DEFAULT_MAX_PIXELS


def check_pixels(width: int, height: int, limit: int, file: str | os.PathLike) -> None:
    """Refuse an image of more than ``limit`` pixels, saying how to raise the limit."""
    if int(width) * int(height) > limit:
        raise DataError(
            f"{width}x{height} = {int(width) * int(height):,} pixels, over the limit of {limit:,} "
            f"pixels (a guard against decompression bombs); if the file is trusted, raise the limit with "
            f"input.max_image_pixels in the config, --max-image-pixels on the command line, or the "
            f"environment variable {MAX_PIXELS_ENV}",
            file=str(file),
        )


def is_dicom(path: str | os.PathLike) -> bool:
    """A DICOM file by its suffix, or by the ``DICM`` marker at byte 128 (PS3.10 file format)."""
    if str(path).lower().endswith(DICOM_SUFFIXES):
        return True
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _open_pil(path: str | os.PathLike, limit: int) -> Image.Image:
    """Open lazily with Pillow's own bomb check off (matex applies ``limit`` instead), check the size
    from the header before any pixel is decoded, then decode."""
    with _PIL_LOCK:  # Pillow reads its limit from a module global at open time
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            img = Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    with img:
        check_pixels(img.width, img.height, limit, path)
        img.load()
        out = img.copy()
        out.format = img.format  # copy() drops it; the provenance names it
        return out


def read_image(
    path: str | os.PathLike, geometry: InputGeometry | None = None, label: str = "image"
) -> tuple[Image.Image, dict[str, Any]]:
    """The film at ``path`` as an 8-bit grey PIL image and its provenance record.

    Raises DataError naming the file (its message starts with ``label``) when it is missing,
    undecodable, too large, or a DICOM that cannot be read (see :func:`matex.data.dicom.read_dicom`)."""
    geometry = geometry or InputGeometry()
    path = Path(path)
    try:
        limit = pixel_limit(geometry.max_pixels)
        if not path.is_file():
            raise DataError("file not found", file=str(path))
        if is_dicom(path):
            from .dicom import read_dicom

            grey, info = read_dicom(path, geometry.intensity, limit)
            return Image.fromarray(grey, "L"), info
        try:
            img = _open_pil(path, limit)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise DataError(f"cannot be decoded ({type(e).__name__}: {e})", file=str(path)) from None
    except DataError as e:
        err = DataError(f"{label}: {e}")
        err.file = e.file
        raise err from None
    return to_grey8(img, geometry.intensity), pil_provenance(img, path, geometry)


def pil_provenance(img: Image.Image, path: str | os.PathLike | None, geometry: InputGeometry) -> dict[str, Any]:
    """What was read and how its values became grey levels (JSON-able)."""
    info: dict[str, Any] = {"format": img.format or "array", "pil_mode": img.mode, "size": [img.width, img.height]}
    if path is not None:
        info["file"] = str(path)
    if img.info.get("dpi"):
        info["dpi"] = [float(v) for v in img.info["dpi"]]
    wide = img.mode in WIDE_MODES
    if wide or geometry.intensity.rescale_8bit:
        arr = np.asarray(img if wide else img.convert("L"))
        lo, hi = geometry.intensity.window(arr)
        info["intensity"] = {"mode": geometry.intensity.mode, "window": [lo, hi]}
        if geometry.intensity.mode == "percentile":
            info["intensity"]["percentiles"] = [geometry.intensity.low, geometry.intensity.high]
    else:
        info["intensity"] = {"mode": "as stored (8-bit)"}
    return info
