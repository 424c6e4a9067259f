"""Row checks of the MS-CXR loader: the bad-row policy, the row's fields (ids, phrase, stated size),
and the film the row names: the path stays inside the image root, one film per ``dicom_id`` and one
``dicom_id`` per film, and the film decodes at the size the CSV states (any format
:func:`~matex.data.images.read_image` reads)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import pandas as pd
from PIL import Image

from ..errors import DataError
from .images import read_image
from .transforms import InputGeometry

BAD_ROW_POLICIES = ("error", "skip")

PATIENT_RE = re.compile(r"(?<![0-9A-Za-z])(p\d{8})(?!\d)")
STUDY_RE = re.compile(r"(?<![0-9A-Za-z])(s\d{8})(?!\d)")


def check_image(
    file: Path, width: int, height: int, geometry: InputGeometry, on_image: Callable[[Image.Image], None] | None
) -> str | None:
    """Decode the image fully (any format :func:`~matex.data.images.read_image` reads: 8/16-bit
    PNG, JPEG, TIFF, DICOM); return the reason it is unusable, or None."""
    try:
        img, _ = read_image(file, geometry)
    except DataError as e:
        return str(e)
    if img.size != (width, height):
        return (
            f"image is {img.size[0]}x{img.size[1]} pixels but the CSV says image_width={width}, image_height={height}"
        )
    if on_image is not None:
        on_image(img)
    return None


def contained(rel: str) -> str | None:
    """Why the CSV's relative path may not be read (it leaves the image root), or None."""
    if not rel:
        return "empty path"
    parts = PurePosixPath(rel.replace("\\", "/"))
    if parts.is_absolute() or PureWindowsPath(rel).drive or PureWindowsPath(rel).root:
        return f"path {rel!r} is absolute; paths must be relative to the image root"
    if ".." in parts.parts:
        return f"path {rel!r} leaves the image root ('..'); paths must stay inside it"
    return None


class Identity:
    """One film per dicom_id and one dicom_id per file: a row that contradicts an earlier one is bad."""

    def __init__(self) -> None:
        self.path_of: dict[str, tuple[str, int]] = {}
        self.id_of: dict[str, tuple[str, int]] = {}

    def conflict(self, dicom_id: str, rel: str, line: int) -> str | None:
        known_path = self.path_of.setdefault(dicom_id, (rel, line))
        if known_path[0] != rel:
            return f"dicom_id {dicom_id} has path {known_path[0]} on CSV line {known_path[1]} and {rel} here"
        known_id = self.id_of.setdefault(rel, (dicom_id, line))
        if known_id[0] != dicom_id:
            return f"path {rel} is dicom_id {known_id[0]} on CSV line {known_id[1]} and {dicom_id} here"
        return None


class BadRows:
    """Applies the bad-row policy: raise naming file, row, line and image, or record and go on."""

    def __init__(self, csv_path: Path, policy: str):
        if policy not in BAD_ROW_POLICIES:
            raise DataError(f"on_bad_row must be one of {BAD_ROW_POLICIES}, got {policy!r}", file=str(csv_path))
        self.csv_path, self.policy, self.skipped = csv_path, policy, []

    def __call__(self, row: int, line: int, dicom_id: str, image_path: str, reason: str) -> None:
        if self.policy == "error":
            raise DataError(
                f"bad MS-CXR row {row} (CSV line {line}, image {image_path}): {reason}; "
                f"set data.on_bad_row: skip to drop such rows and record them in the report",
                file=str(self.csv_path),
                row=row,
            )
        self.skipped.append(
            {"row": int(row), "line": int(line), "dicom_id": dicom_id, "path": image_path, "reason": reason}
        )


def positive_int(value: str) -> int | None:
    """The CSV field as a positive integer (``"512"``, ``"512.0"``), or None."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return int(f) if np.isfinite(f) and f > 0 and f == int(f) else None


def float_or_nan(value: str) -> float:
    """The CSV field as a float; NaN when it is not a number (the box check reports it)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def fields_problem(r: pd.Series, line: int, dicom_id: str, rel: str, phrase: str, identity: Identity) -> str | None:
    """The first problem of a row's fields, checked in this order: empty dicom_id or phrase, a path
    outside the image root, a dicom_id/path contradicting an earlier row (``identity`` records the row
    when it agrees), no patient or study id in the path, a stated size that is not positive integers."""
    if not dicom_id:
        return "empty dicom_id"
    if not phrase:
        return "empty phrase (label_text)"
    outside = contained(rel)
    if outside is not None:
        return outside
    conflict = identity.conflict(dicom_id, rel, line)
    if conflict is not None:
        return conflict
    if PATIENT_RE.search(rel) is None or STUDY_RE.search(rel) is None:
        return "path has no patient id (p + 8 digits) or study id (s + 8 digits)"
    if positive_int(r["image_width"]) is None or positive_int(r["image_height"]) is None:
        return f"image_width/image_height are not positive integers ({r['image_width']!r}, {r['image_height']!r})"
    return None


def drop_reason(x: float, y: float, w: float, h: float, width: int, height: int, geometry: InputGeometry) -> str:
    """Why a box was dropped: a missing coordinate, no area, outside the image or the model input."""
    box = f"box x={x}, y={y}, w={w}, h={h}"
    if not all(np.isfinite([x, y, w, h])):
        return f"{box} has a missing or non-numeric coordinate"
    if not (w > 0 and h > 0):
        return f"{box} has zero or negative area"
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        return f"{box} lies entirely outside the {width}x{height} image"
    return f"{box} lies entirely outside the model input ({geometry.mode} to {geometry.size} px)"
