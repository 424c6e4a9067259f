"""The data behind the parser, read once from ``regions.yaml``: region boxes, the default regions of
findings that are usually reported without anatomy, and the weights of a phrase's regions."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from matex.errors import DataError

REGIONS_FILE = "regions.yaml"

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Region:
    """A named anatomical region; ``box`` = (x0, x1, y0, y1) normalised image coordinates
    (x to the image right, y down)."""

    name: str
    box: Box


@dataclass(frozen=True)
class Weights:
    """Relative weights of a phrase's regions (documented in ``regions.yaml``)."""

    specific: float
    diffuse: float
    hedged: float
    deemphasised: float


@functools.lru_cache(maxsize=1)
def _table() -> tuple[dict[str, Any], str]:
    source = resources.files("matex.priors").joinpath(REGIONS_FILE)
    try:
        table = yaml.safe_load(source.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"cannot read the region table: {exc}", file=str(source)) from exc
    if not isinstance(table, dict) or not isinstance(table.get("regions"), dict):
        raise DataError("region table needs a top-level 'regions' mapping", file=str(source))
    return table, str(source)


@functools.lru_cache(maxsize=1)
def load_regions() -> dict[str, Region]:
    """Every region of ``regions.yaml`` by name; validates the boxes (x0 < x1, y0 < y1, in [0, 1])."""
    table, where = _table()
    regions: dict[str, Region] = {}
    for name, entry in table["regions"].items():
        box = entry.get("box") if isinstance(entry, dict) else None
        try:
            x0, x1, y0, y1 = (float(v) for v in box)
        except (TypeError, ValueError) as exc:
            raise DataError(
                f"region {name!r}: box must be 4 numbers [x0, x1, y0, y1], got {box!r}", file=where
            ) from exc
        if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
            raise DataError(
                f"region {name!r}: box {box!r} must satisfy 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1", file=where
            )
        regions[name] = Region(str(name), (x0, x1, y0, y1))
    return regions


@functools.lru_cache(maxsize=1)
def load_finding_defaults() -> dict[str, dict[str, float]]:
    """finding -> {region name pattern ("{side}_lower_zone" or "heart"): weight}."""
    table, where = _table()
    regions = load_regions()
    out: dict[str, dict[str, float]] = {}
    for finding, entry in (table.get("finding_defaults") or {}).items():
        if not isinstance(entry, dict) or not entry:
            raise DataError(f"finding default {finding!r} must map region names to weights", file=where)
        for name, weight in entry.items():
            names = [name.format(side=s) for s in ("right", "left")] if "{side}" in name else [name]
            if any(n not in regions for n in names) or not 0.0 < float(weight) <= 1.0:
                raise DataError(
                    f"finding default {finding!r}: unknown region {name!r} or weight {weight!r} outside (0, 1]",
                    file=where,
                )
        out[str(finding)] = {str(k): float(v) for k, v in entry.items()}
    return out


@functools.lru_cache(maxsize=1)
def load_weights() -> Weights:
    table, where = _table()
    entry = table.get("weights") or {}
    try:
        weights = Weights(**{k: float(entry[k]) for k in Weights.__dataclass_fields__})
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(
            f"region table 'weights' needs specific, diffuse, hedged, deemphasised: {exc}", file=where
        ) from exc
    if not all(0.0 < v <= 1.0 for v in vars(weights).values()):
        raise DataError(f"region weights must lie in (0, 1], got {weights}", file=where)
    return weights
