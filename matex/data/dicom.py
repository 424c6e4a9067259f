"""DICOM radiographs through pydicom: stored values -> modality values -> display values -> grey levels.

Steps (DICOM PS3.3 C.11): the Modality LUT or Rescale Slope/Intercept turns stored values into
modality values; the VOI LUT, else the first Window Centre/Width (LINEAR, LINEAR_EXACT or SIGMOID, as
``VOILUTFunction`` says), chooses the displayed range and maps it onto 0..255; without either, the
configured :class:`~matex.data.transforms.Intensity` (min-max or percentile) does. MONOCHROME1 films
(bright = low values) are inverted so that bone is always bright. The pixel spacing (mm, row then
column; ``PixelSpacing``, else ``ImagerPixelSpacing``) is kept in the provenance record.

Refused with an error naming the file: multi-frame objects, colour images, and pixel data in a
transfer syntax that no installed pydicom handler decodes (the message names the syntax).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import DataError
from .transforms import Intensity


def _window(values: np.ndarray, centre: float, width: float, function: str) -> np.ndarray:
    """Window centre/width onto [0, 255] (PS3.3 C.11.2.1.2 with y_min = 0, y_max = 255)."""
    c, w = float(centre), float(width)
    if function == "SIGMOID":
        return 255.0 / (1.0 + np.exp(-4.0 * (values - c) / w))
    if function == "LINEAR_EXACT":
        return np.clip((values - c) / w + 0.5, 0.0, 1.0) * 255.0
    if w < 1:
        raise ValueError(f"window width {w} < 1 with the LINEAR function")
    if w == 1:  # the standard's limiting case: a threshold at the centre
        return np.where(values >= c - 0.5, 255.0, 0.0)
    return np.clip((values - (c - 0.5)) / (w - 1) + 0.5, 0.0, 1.0) * 255.0


def _first(value: Any) -> float:
    """The first of a multi-valued element (Window Centre/Width may hold several)."""
    try:
        return float(value[0])
    except TypeError:
        return float(value)


def _display_levels(modality: np.ndarray, ds: Any, intensity: Intensity) -> tuple[np.ndarray, dict[str, Any]]:
    """Modality values -> float grey levels in [0, 255] and how they were chosen."""
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence):
        out, bits = _voi_lut(modality, ds.VOILUTSequence[0])
        return out * (255.0 / (2**bits - 1)), {"mode": "DICOM VOI LUT", "lut_bits": bits}
    if "WindowCenter" in ds and "WindowWidth" in ds:
        centre, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
        levels = _window(modality, centre, width, function)
        return levels, {"mode": "DICOM window", "centre": centre, "width": width, "function": function}
    lo, hi = intensity.window(modality)
    info = {"mode": intensity.mode, "window": [lo, hi]}
    if intensity.mode == "percentile":
        info["percentiles"] = [intensity.low, intensity.high]
    return intensity.to_uint8(modality).astype(np.float64), info


def _voi_lut(values: np.ndarray, item: Any) -> tuple[np.ndarray, int]:
    """The first VOI LUT (PS3.3 C.11.2.1.1): entries, first mapped value, bits per entry; values
    below the first mapped value take the first entry, above the last the last entry."""
    n, first, bits = (int(v) for v in item.LUTDescriptor)
    n = n or 65536
    data = item.LUTData
    table = np.frombuffer(data, dtype="<u2") if isinstance(data, bytes) else np.asarray(data, dtype=np.float64)
    table = np.asarray(table[:n], dtype=np.float64)
    index = np.clip(np.rint(values).astype(np.int64) - first, 0, len(table) - 1)
    return table[index], bits


def _pixel_spacing(ds: Any) -> list[float] | None:
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        if key in ds and ds.get(key) is not None:
            try:
                return [float(v) for v in ds.get(key)]
            except (TypeError, ValueError):
                return None
    return None


def _decode(ds: Any, file: str) -> np.ndarray:
    """The stored pixel values, or a DataError naming the transfer syntax nothing here decodes."""
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        return np.asarray(ds.pixel_array)
    except Exception as e:  # pydicom raises NotImplementedError/RuntimeError/ValueError by handler
        syntax = f"{ts.name} ({ts})" if ts is not None else "an unknown transfer syntax"
        compressed = ts is not None and getattr(ts, "is_compressed", False)
        hint = (
            "no installed pixel data handler decodes it; install one that does (e.g. pylibjpeg with its "
            "openjpeg/libjpeg plugins, or python-gdcm), or convert the file to uncompressed Explicit VR "
            "Little Endian"
            if compressed
            else f"the pixel data cannot be decoded ({type(e).__name__}: {e})"
        )
        raise DataError(f"DICOM pixel data in transfer syntax {syntax}: {hint}", file=file) from None


def read_dicom(path: str | os.PathLike, intensity: Intensity, limit: int) -> tuple[np.ndarray, dict[str, Any]]:
    """A single-frame greyscale DICOM film as a uint8 (H, W) array and its provenance record."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut

    from .images import check_pixels

    file = str(path)
    try:
        ds = pydicom.dcmread(file)
    except (InvalidDicomError, OSError, ValueError, EOFError) as e:
        raise DataError(f"not a readable DICOM file ({type(e).__name__}: {e})", file=file) from None
    if "PixelData" not in ds:
        raise DataError("DICOM file has no pixel data (not an image object)", file=file)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DataError(
            f"multi-frame DICOM ({frames} frames) is not supported: a radiograph is one frame; "
            "export the frame to explain as its own file",
            file=file,
        )
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2") or int(ds.get("SamplesPerPixel", 1)) != 1:
        raise DataError(
            f"DICOM photometric interpretation {photometric} is not a greyscale radiograph "
            "(MONOCHROME1 or MONOCHROME2 expected)",
            file=file,
        )
    check_pixels(int(ds.get("Columns", 0)), int(ds.get("Rows", 0)), limit, file)
    stored = _decode(ds, file)
    if stored.ndim != 2:
        raise DataError(f"DICOM pixel data has shape {stored.shape}; one greyscale frame expected", file=file)
    modality = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
    levels, how = _display_levels(modality, ds, intensity)
    if photometric == "MONOCHROME1":
        levels = 255.0 - levels
    grey = np.rint(np.clip(levels, 0.0, 255.0)).astype(np.uint8)
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    info = {
        "file": file,
        "format": "DICOM",
        "size": [int(grey.shape[1]), int(grey.shape[0])],
        "bits_stored": int(ds.get("BitsStored", 0) or 0),
        "photometric": photometric,
        "inverted": photometric == "MONOCHROME1",
        "rescale": [float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)],
        "intensity": how,
        "pixel_spacing_mm": _pixel_spacing(ds),
        "transfer_syntax": str(ts) if ts is not None else None,
    }
    return grey, info
