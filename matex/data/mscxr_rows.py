"""Row checks of the MS-CXR loader that concern the film a row names: the path stays inside the image
root, one film per ``dicom_id`` and one ``dicom_id`` per film, and the film decodes at the size the CSV
states (any format :func:`~matex.data.images.read_image` reads)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path, PurePosixPath, PureWindowsPath

from PIL import Image

from ..errors import DataError
from .images import read_image
from .transforms import InputGeometry


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
