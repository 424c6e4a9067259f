"""A synthetic MS-CXR stand-in: frontal chest radiographs with findings, boxes and phrases.

Why: the paper's data (MS-CXR on MIMIC-CXR-JPG) needs credentials. This generator writes the same
on-disk contract (docs/pipeline.md): grey-scale JPGs under the MIMIC-CXR-JPG layout
``files/pXX/pXXXXXXXX/sXXXXXXXX/<dicom_id>.jpg`` and ``MS_CXR_Local_Alignment_v1.0.0.csv`` with
MS-CXR's exact columns, one row per box. Because every lesion is drawn by us, its box is ground
truth: a model trained on these images has to *see* the lesion to localise it.

Anatomy (normalised coordinates, u = x / width, v = y / height, per-image jitter): dark lungs,
bright mediastinum and heart (shifted to the patient's left = image RIGHT), diaphragm domes,
curved ribs, clavicles, spine, soft tissue, vignetting and noise.

Radiological convention: the patient's RIGHT is the image's LEFT. A "right" finding lies in the
left half of the image.

Findings (the 8 MS-CXR categories, sampled with MS-CXR's frequencies): each has a signature drawn in
an anatomical zone, its box(es) computed from the drawn intensity change (so a box encloses exactly
what was drawn), and an MS-CXR-style phrase naming the finding and (mostly) its location.

Zones recorded in ``synthetic_truth.parquet``: upper, mid, lower, retrocardiac, perihilar, apical,
lateral, cardiac. Sides are in PATIENT terms: right, left, bilateral, none.

Randomness: every image ``i`` draws from ``np.random.SeedSequence([seed, i])`` split into three
independent streams (anatomy, findings, noise), so rendering a case with and without its findings
gives the same anatomy and noise (``render_case(..., with_findings=False)``), and the output is
byte-identical for a given seed.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ConfigError
from ..io import atomic_path, write_parquet

CSV_NAME = "MS_CXR_Local_Alignment_v1.0.0.csv"
TRUTH_NAME = "synthetic_truth.parquet"
CSV_COLUMNS = ("dicom_id", "category_name", "label_text", "path", "x", "y", "w", "h",
               "image_width", "image_height")
TRUTH_COLUMNS = ("dicom_id", "finding_index", "label_text", "category_name", "side", "zone",
                 "location_named", "n_boxes")

# MS-CXR's finding counts (Boecking et al. 2022): the sampling weights of the first finding.
CATEGORY_COUNTS: dict[str, int] = {
    "Cardiomegaly": 333, "Pneumothorax": 245, "Pneumonia": 182, "Consolidation": 117,
    "Pleural Effusion": 96, "Lung Opacity": 82, "Atelectasis": 61, "Edema": 46,
}
CATEGORIES = tuple(CATEGORY_COUNTS)
_CATEGORY_P = np.array([CATEGORY_COUNTS[c] for c in CATEGORIES], dtype=float)
_CATEGORY_P /= _CATEGORY_P.sum()

# a box encloses the pixels where the finding's drawn weight exceeds this fraction of its peak
BOX_THRESHOLD = 0.2


@dataclass(frozen=True)
class SyntheticSpec:
    """Generator settings that shape each case (the config's ``data.synthetic`` keys)."""
    width: tuple[int, int] = (288, 352)
    height: tuple[int, int] = (320, 384)
    no_location_fraction: float = 0.15
    second_finding_fraction: float = 0.1

    def validate(self) -> None:
        for key, (lo, hi) in (("width", self.width), ("height", self.height)):
            if not (32 <= lo <= hi):
                raise ConfigError(f"data.synthetic.{key} must be [lo, hi] with 32 <= lo <= hi, got {[lo, hi]}")
        for key in ("no_location_fraction", "second_finding_fraction"):
            value = getattr(self, key)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"data.synthetic.{key} must lie in [0, 1], got {value}")


@dataclass
class Finding:
    """One finding of a case: its phrase, where it is, and its box(es) (x, y, w, h) in pixels."""
    category_name: str
    label_text: str
    side: str                      # patient terms: right | left | bilateral | none
    zone: str
    location_named: bool
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)
    params: dict = field(default_factory=dict, repr=False)   # drawing parameters (normalised units)


@dataclass(frozen=True)
class Lung:
    """One lung field: a superellipse (rounded apex, squarer base) cut by its diaphragm dome."""
    side: str                      # patient side
    xc: float
    yc: float
    a: float                       # half width
    b: float                       # half height
    x_medial: float
    x_lateral: float
    apex_y: float
    dome_y: float                  # top of the hemidiaphragm dome
    base_y: float                  # costophrenic angle level (bottom of the superellipse)
    dome_h: float


@dataclass(frozen=True)
class Anatomy:
    width: int
    height: int
    cx: float
    scale: float
    lungs: dict                    # patient side -> Lung
    heart: tuple[float, float, float, float]   # centre u, centre v, half width, half height
    mediastinum_half: float
    rib_y0: float
    rib_spacing: float
    rib_curve: float
    clavicle_y: float
    soft_level: float
    lung_level: float
    heart_level: float
    gamma: float
    gain: float
    noise_sigma: float


# ------------------------------------------------------------------------------------- helpers
def _ramp(z):
    """Soft step from 0 to 1 over z in [-0.5, 0.5] (a cheap sigmoid)."""
    return np.clip(z + 0.5, 0.0, 1.0)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Noise in [0, 1] with about ``cells`` features across: a coarse random grid, bilinear upsampled
    (separable gathers, no BLAS: BLAS threads would fight over the shared cores)."""
    gh = max(2, int(round(cells * height / width)) + 1)
    gw = max(2, cells + 1)
    grid = rng.random((gh, gw)).astype(np.float32)

    def coords(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
        pos = (np.arange(n_out, dtype=np.float32) + 0.5) / n_out * (n_in - 1)
        lo = np.minimum(pos.astype(np.int64), n_in - 2)
        return lo, (pos - lo).astype(np.float32)

    ry, fy = coords(height, gh)
    rx, fx = coords(width, gw)
    rows = grid[ry] * (1 - fy[:, None]) + grid[ry + 1] * fy[:, None]
    return rows[:, rx] * (1 - fx) + rows[:, rx + 1] * fx


def _bbox(weight: np.ndarray, mask: np.ndarray | None = None) -> tuple[int, int, int, int] | None:
    """(x, y, w, h) enclosing the pixels where ``weight`` exceeds BOX_THRESHOLD of its peak."""
    if mask is not None:
        weight = weight * mask
    peak = float(weight.max())
    if peak <= 1e-6:
        return None
    on = weight > BOX_THRESHOLD * peak
    cols = np.flatnonzero(on.any(axis=0))
    rows = np.flatnonzero(on.any(axis=1))
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


class _Grid:
    """Normalised pixel-centre coordinates as broadcastable row/column vectors."""

    def __init__(self, width: int, height: int):
        self.width, self.height = width, height
        self.u = ((np.arange(width, dtype=np.float32) + 0.5) / width)[None, :]
        self.v = ((np.arange(height, dtype=np.float32) + 0.5) / height)[:, None]
        self.px = 1.0 / min(width, height)      # one pixel in normalised units (edge softness)


# ------------------------------------------------------------------------------------- anatomy
def _sample_anatomy(rng: np.random.Generator, spec: SyntheticSpec) -> Anatomy:
    width = int(rng.integers(spec.width[0], spec.width[1] + 1))
    height = int(rng.integers(spec.height[0], spec.height[1] + 1))
    cx = 0.5 + rng.normal(0, 0.015)
    s = rng.uniform(0.9, 1.03)
    apex = 0.13 + rng.normal(0, 0.012)
    base = apex + 0.66 * s + rng.normal(0, 0.01)
    lungs = {}
    for side, sign in (("right", -1.0), ("left", 1.0)):     # patient right = image left
        x_med = cx + sign * (0.045 + rng.uniform(0, 0.01)) * s
        x_lat = cx + sign * (0.40 + rng.uniform(-0.015, 0.015)) * s
        dome_h = (0.11 if side == "right" else 0.09) * s + rng.uniform(-0.01, 0.01)
        lungs[side] = Lung(side=side, xc=(x_med + x_lat) / 2, yc=(apex + base) / 2,
                           a=abs(x_lat - x_med) / 2, b=(base - apex) / 2, x_medial=x_med,
                           x_lateral=x_lat, apex_y=apex, dome_y=base - dome_h, base_y=base,
                           dome_h=dome_h)
    # normal cardiothoracic ratio about 0.45; the heart rests on the left hemidiaphragm
    heart = (cx + 0.06 * s + rng.normal(0, 0.008), lungs["left"].dome_y - 0.01 * s,
             0.185 * s * rng.uniform(0.94, 1.06), 0.19 * s * rng.uniform(0.94, 1.06))
    return Anatomy(
        width=width, height=height, cx=cx, scale=s, lungs=lungs, heart=heart,
        mediastinum_half=0.075 * s, rib_y0=apex - 0.03, rib_spacing=0.068 * s * rng.uniform(0.95, 1.05),
        rib_curve=rng.uniform(0.10, 0.16), clavicle_y=apex + 0.035 + rng.normal(0, 0.01),
        soft_level=rng.uniform(0.42, 0.5), lung_level=rng.uniform(0.12, 0.18),
        heart_level=rng.uniform(0.7, 0.78), gamma=rng.uniform(0.85, 1.15), gain=rng.uniform(0.92, 1.05),
        noise_sigma=rng.uniform(0.01, 0.025))


def _diaphragm(g: _Grid, an: Anatomy) -> np.ndarray:
    """Image row (normalised) of the diaphragm surface at each column: two domes."""
    out = np.empty_like(g.u)
    for side, lung in an.lungs.items():
        bump = np.clip(1.0 - ((g.u - (lung.xc + 0.2 * (lung.x_medial - lung.xc))) / (1.15 * lung.a)) ** 2, 0, 1)
        curve = lung.base_y - lung.dome_h * np.sqrt(bump)
        left_of_mid = g.u < an.cx
        sel = left_of_mid if side == "right" else ~left_of_mid
        out[sel] = curve[sel]
    return out


def _lung_shape(g: _Grid, lung: Lung) -> np.ndarray:
    """Soft superellipse value f (<1 inside): exponent 2 above the centre, 4 below."""
    dx2 = ((g.u - lung.xc) / lung.a) ** 2
    dy2 = ((g.v - lung.yc) / lung.b) ** 2
    upper = dx2 + dy2
    lower = np.sqrt(dx2 * dx2 + dy2 * dy2)
    return np.where(g.v < lung.yc, upper, lower)


def _ellipse_mask(g: _Grid, cu: float, cv: float, a: float, b: float, soft_px: float = 1.5) -> np.ndarray:
    r = np.sqrt(((g.u - cu) / a) ** 2 + ((g.v - cv) / b) ** 2)
    return _ramp((1.0 - r) * min(a, b) / (soft_px * g.px))


# ------------------------------------------------------------------------------------- findings plan
_SIZE_WORDS = ("small", "moderate", "large")


def _cap(rng: np.random.Generator, text: str) -> str:
    return text[0].upper() + text[1:] if rng.random() < 0.5 else text


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _location_words(side: str, zone: str) -> tuple[list[str], list[str]]:
    """(adjectival forms, prepositional forms) naming a location, e.g. 'right basilar' / 'at the right base'."""
    s = side
    if side == "bilateral":
        if zone == "perihilar":
            return ["bilateral perihilar"], ["in both perihilar regions", "in the perihilar regions bilaterally"]
        return (["bibasilar", "bilateral basilar", "bilateral lower lobe"],
                ["at both lung bases", "in both lower lobes", "at the lung bases bilaterally"])
    if zone == "upper":
        return ([f"{s} upper lobe", f"{s} apical", f"{s} upper lung", f"{s} upper zone"],
                [f"in the {s} upper lobe", f"in the {s} upper lung", f"at the {s} apex", f"in the {s} upper zone"])
    if zone == "mid":
        adj = [f"{s} mid lung", f"{s} midlung"] + (["right middle lobe"] if s == "right" else ["lingular"])
        pp = [f"in the {s} mid lung", f"in the {s} mid zone"] + (
            ["in the right middle lobe"] if s == "right" else ["in the lingula"])
        return adj, pp
    if zone == "retrocardiac":
        return (["retrocardiac", "left retrocardiac"],
                ["in the retrocardiac region", "in the left retrocardiac region", "in the left lower lobe"])
    if zone == "perihilar":
        return [f"{s} perihilar"], [f"in the {s} perihilar region"]
    # lower
    return ([f"{s} lower lobe", f"{s} basilar", f"{s} basal", f"{s} lower lung"],
            [f"in the {s} lower lobe", f"at the {s} base", f"at the {s} lung base", f"in the {s} lower lung"])


def _phrase(rng: np.random.Generator, category: str, side: str, zone: str, named: bool, size: str) -> str:
    """An MS-CXR-style phrase: the finding, and its location when ``named``."""
    if category == "Cardiomegaly":
        degree = {"small": "mild", "moderate": "moderate", "large": "marked"}[size]   # drawn heart growth
        text = _pick(rng, ["enlarged cardiac silhouette", "enlargement of the cardiac silhouette",
                           "cardiac silhouette is enlarged", "heart size is enlarged", "the heart is enlarged",
                           f"{degree} enlargement of the cardiac silhouette"]) if named else \
            _pick(rng, ["cardiomegaly", "cardiomegaly", f"{degree} cardiomegaly"])
    elif category == "Pleural Effusion":
        if not named:
            text = _pick(rng, ["pleural effusion", f"{size} pleural effusion", "effusion"])
        elif side == "bilateral":
            text = _pick(rng, ["bilateral pleural effusions", f"{size} bilateral pleural effusions",
                               "bilateral effusions", "pleural effusions at both lung bases"])
        else:
            text = _pick(rng, [f"{size} {side} pleural effusion", f"{side} pleural effusion",
                               f"{size} {side} effusion", f"blunting of the {side} costophrenic angle",
                               f"{side} pleural effusion at the {side} base"])
    elif category == "Pneumothorax":
        if not named:
            text = _pick(rng, ["pneumothorax", f"{size} pneumothorax"])
        elif zone == "apical":
            text = _pick(rng, [f"{side} apical pneumothorax", f"{size} {side} apical pneumothorax",
                               f"pneumothorax at the {side} apex", f"{side} apical pneumothorax"])
        else:
            text = _pick(rng, [f"{size} {side} pneumothorax", f"{side} pneumothorax",
                               f"{side} lateral pneumothorax", f"{size} {side} lateral pneumothorax"])
    elif category == "Edema":
        text = _pick(rng, ["bilateral perihilar edema", "perihilar edema", "mild perihilar edema",
                           "bilateral perihilar haziness consistent with edema",
                           "interstitial edema in the perihilar regions"]) if named else \
            _pick(rng, ["pulmonary edema", "mild pulmonary edema", "moderate pulmonary edema",
                        "interstitial edema", "edema"])
    else:
        noun = {"Consolidation": ["consolidation", "airspace consolidation", "focal consolidation"],
                "Pneumonia": ["pneumonia", "opacity concerning for pneumonia", "opacity consistent with pneumonia",
                              "patchy opacity, likely pneumonia"],
                "Lung Opacity": ["opacity", "hazy opacity", "patchy opacity", "airspace opacity",
                                 "increased opacity"],
                "Atelectasis": ["atelectasis", "linear atelectasis", "plate-like atelectasis",
                                "subsegmental atelectasis"]}[category]
        finding = _pick(rng, noun)
        if not named:
            text = finding
        else:
            adj, pp = _location_words(side, zone)
            if rng.random() < 0.5:
                parts = finding.split(" ")
                # keep a leading modifier first: "patchy right basilar opacity"
                if len(parts) > 1 and parts[0] in ("hazy", "patchy", "focal", "linear",
                                                  "plate-like", "subsegmental", "increased"):
                    text = f"{parts[0]} {_pick(rng, adj)} {' '.join(parts[1:])}"
                else:
                    text = f"{_pick(rng, adj)} {finding}"
            else:
                head, _, tail = finding.partition(",")
                if head.startswith("opacity "):      # "opacity at the right base concerning for pneumonia"
                    text = f"opacity {_pick(rng, pp)} {head[len('opacity '):]}"
                else:
                    text = f"{head} {_pick(rng, pp)}" + (f",{tail}" if tail else "")
                if category == "Pneumonia" and head == "pneumonia" and rng.random() < 0.3:
                    text = f"{_pick(rng, adj)} opacity concerning for pneumonia"
    return _cap(rng, text)


def _choose_location(rng: np.random.Generator, category: str) -> tuple[str, str]:
    """(patient side, zone) for a finding of ``category``, with MS-CXR-like preferences."""
    lr = "right" if rng.random() < 0.5 else "left"
    if category == "Cardiomegaly":
        return "none", "cardiac"
    if category == "Edema":
        return "bilateral", "perihilar"
    if category == "Pneumothorax":
        return lr, ("apical" if rng.random() < 0.7 else "lateral")
    if category == "Pleural Effusion":
        return ("bilateral" if rng.random() < 0.25 else lr), "lower"
    if category == "Atelectasis":
        if rng.random() < 0.25:
            return "bilateral", "lower"
        return lr, ("lower" if rng.random() < 0.85 else "mid")
    if category in ("Pneumonia", "Lung Opacity") and rng.random() < 0.1:
        return "bilateral", "lower"
    zone = str(rng.choice(["upper", "mid", "lower"], p=[0.2, 0.25, 0.55]))
    if zone == "lower" and lr == "left" and rng.random() < 0.25:
        zone = "retrocardiac"
    return lr, zone


def _plan_findings(rng: np.random.Generator, spec: SyntheticSpec) -> list[Finding]:
    """Categories, locations and phrases of one case (no pixels: cheap)."""
    first = CATEGORIES[int(rng.choice(len(CATEGORIES), p=_CATEGORY_P))]
    categories = [first]
    if rng.random() < spec.second_finding_fraction:
        others = [c for c in CATEGORIES if c != first]
        p = np.array([CATEGORY_COUNTS[c] for c in others], dtype=float)
        categories.append(others[int(rng.choice(len(others), p=p / p.sum()))])
    findings = []
    for category in categories:
        side, zone = _choose_location(rng, category)
        named = bool(rng.random() >= spec.no_location_fraction)
        size = _pick(rng, _SIZE_WORDS)
        text = _phrase(rng, category, side, zone, named, size)
        findings.append(Finding(category, text, side, zone, named, params={"size": size}))
    return findings


# ------------------------------------------------------------------------------------- rendering
def _opacity_centre(rng: np.random.Generator, an: Anatomy, side: str, zone: str) -> tuple[float, float]:
    lung = an.lungs[side]
    height = lung.dome_y - lung.apex_y
    frac_y = {"upper": 0.2, "mid": 0.48, "lower": 0.78, "retrocardiac": 0.86, "perihilar": 0.48}[zone]
    frac_x = {"upper": 0.5, "mid": 0.5, "lower": 0.55, "retrocardiac": -0.05, "perihilar": 0.2}[zone]
    frac_y += rng.uniform(-0.06, 0.06)
    frac_x += rng.uniform(-0.12, 0.12)
    u = lung.x_medial + (lung.x_lateral - lung.x_medial) * frac_x
    return float(u), float(lung.apex_y + frac_y * height)


def _draw_opacity(g: _Grid, an: Anatomy, rng: np.random.Generator, f: Finding, side: str,
                  lung_field: np.ndarray) -> np.ndarray:
    """Blend weight in [0, 1] of one opacity-type finding on one side."""
    s = an.scale
    zone = "perihilar" if f.zone == "perihilar" else f.zone
    cu, cv = _opacity_centre(rng, an, side, zone)
    # the retrocardiac region lies behind the heart: not masked by the (heart-free) lung field
    support = lung_field if zone != "retrocardiac" else np.maximum(lung_field, _ellipse_mask(g, *an.heart))
    du, dv = g.u - cu, g.v - cv
    if f.category_name == "Consolidation":
        a, b = rng.uniform(0.06, 0.1) * s, rng.uniform(0.05, 0.08) * s
        r = np.sqrt(np.sqrt((du / a) ** 4 + (dv / b) ** 4))
        shape = _ramp((1 - r) * min(a, b) / (2 * g.px))
        weight = rng.uniform(0.75, 0.9) * shape * (0.85 + 0.15 * _smooth_noise(rng, g.height, g.width, 12))
    elif f.category_name == "Pneumonia":
        a, b = rng.uniform(0.06, 0.09) * s, rng.uniform(0.05, 0.08) * s
        blob = np.exp(-0.5 * ((du / a) ** 2 + (dv / b) ** 2) * 2.2)
        patch = _smooth_noise(rng, g.height, g.width, 18)
        weight = rng.uniform(0.7, 0.85) * np.clip(blob * (0.35 + 1.1 * patch), 0, 1)
    elif f.category_name == "Lung Opacity":
        a, b = rng.uniform(0.07, 0.11) * s, rng.uniform(0.06, 0.1) * s
        weight = rng.uniform(0.4, 0.55) * np.exp(-0.5 * ((du / a) ** 2 + (dv / b) ** 2) * 1.6)
    elif f.category_name == "Atelectasis":
        length, thick = rng.uniform(0.1, 0.15) * s, rng.uniform(0.012, 0.022) * s
        angle = math.radians(rng.uniform(-18, 18))
        along = du * math.cos(angle) + dv * math.sin(angle)
        across = -du * math.sin(angle) + dv * math.cos(angle)
        taper = np.clip(1 - np.abs(along) / length, 0, 1)          # a plate thinning at its ends
        weight = rng.uniform(0.7, 0.85) * _ramp((thick * (0.4 + 0.6 * np.sqrt(taper)) - np.abs(across)) / (1.2 * g.px)) \
            * (taper > 0)
    elif f.category_name == "Edema":
        a, b = rng.uniform(0.09, 0.12) * s, rng.uniform(0.12, 0.16) * s
        haze = np.exp(-0.5 * ((du / a) ** 2 + (dv / b) ** 2) * 1.8)
        weight = rng.uniform(0.45, 0.6) * haze * (0.6 + 0.4 * _smooth_noise(rng, g.height, g.width, 24))
    else:  # pragma: no cover - guarded by the caller
        raise ValueError(f.category_name)
    return (weight * support).astype(np.float32)


def _draw_effusion(g: _Grid, an: Anatomy, rng: np.random.Generator, side: str, size: str,
                   lung_field: np.ndarray) -> np.ndarray:
    """Fluid filling the costophrenic angle / base up to a meniscus that rises laterally."""
    lung = an.lungs[side]
    height = lung.dome_y - lung.apex_y
    level = lung.dome_y - {"small": 0.0, "moderate": 0.12, "large": 0.25}[size] * height \
        - rng.uniform(0, 0.04) * height
    lateral_pos = np.clip((g.u - lung.x_medial) / (lung.x_lateral - lung.x_medial), 0, 1)
    meniscus = level + 0.06 - 0.12 * lateral_pos ** 2       # higher (smaller v) laterally
    fluid = _ramp((g.v - meniscus) / (3 * g.px))
    side_mask = (g.u < an.cx) if side == "right" else (g.u >= an.cx)
    return (rng.uniform(0.8, 0.9) * fluid * lung_field * side_mask).astype(np.float32)


def _pneumothorax_region(g: _Grid, an: Anatomy, rng: np.random.Generator, side: str, zone: str,
                         lung_shape_soft: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(air rim weight, pleural line weight): the lung edge pulled away from the apex/lateral wall."""
    lung = an.lungs[side]
    shrink = rng.uniform(0.07, 0.12) if zone == "apical" else rng.uniform(0.14, 0.22)
    toward_medial = (lung.x_medial - lung.xc)
    collapsed = Lung(side=side, xc=lung.xc + shrink * toward_medial * (0.6 if zone == "apical" else 1.2),
                     yc=lung.yc + shrink * lung.b * (1.0 if zone == "apical" else 0.35),
                     a=lung.a * (1 - shrink * (0.4 if zone == "apical" else 1.0)), b=lung.b * (1 - shrink),
                     x_medial=lung.x_medial, x_lateral=lung.x_lateral, apex_y=lung.apex_y, dome_y=lung.dome_y,
                     base_y=lung.base_y, dome_h=lung.dome_h)
    f_c = _lung_shape(g, collapsed)
    inside_collapsed = _ramp((1 - f_c) / (4 * g.px))
    rim = lung_shape_soft * (1 - inside_collapsed)
    line = np.exp(-(((f_c - 1) / (4 * g.px)) ** 2)) * lung_shape_soft
    limit = (g.v < lung.apex_y + 0.4 * (lung.dome_y - lung.apex_y)) if zone == "apical" else (g.v < lung.dome_y)
    return (rim * limit).astype(np.float32), (line * limit).astype(np.float32)


def _upsample(a: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize of a float map to the original size (PIL's C resampler: fast)."""
    from PIL import Image

    return np.asarray(Image.fromarray(np.ascontiguousarray(a, dtype=np.float32)).resize(
        (width, height), Image.Resampling.BILINEAR))


# Anatomy and findings are drawn on a grid this many times coarser than the image, then upsampled
# (bilinear) before the pixel noise is added: radiographs are smooth, and this makes the generator
# about four times faster. Boxes are measured on the upsampled finding weights, in original pixels.
WORK_DOWNSAMPLE = 2


def _render(an: Anatomy, findings: list[Finding], anatomy_rng: np.random.Generator,
            findings_rng: np.random.Generator, noise_rng: np.random.Generator,
            with_findings: bool) -> np.ndarray:
    g = _Grid(-(-an.width // WORK_DOWNSAMPLE), -(-an.height // WORK_DOWNSAMPLE))
    s = an.scale
    u, v = g.u, g.v
    cats = {f.category_name for f in findings} if with_findings else set()
    finding_weights: dict[int, list[np.ndarray]] = {}

    # ---- anatomy textures first, always drawn in the same order (same stream with or without findings)
    markings_coarse = _smooth_noise(anatomy_rng, g.height, g.width, 16)
    markings_fine = _smooth_noise(anatomy_rng, g.height, g.width, 36)
    tissue_noise = _smooth_noise(anatomy_rng, g.height, g.width, 5)

    # ---- soft tissue: thorax with shoulders; abdomen below the diaphragm
    d_mid = np.abs(u - an.cx)
    body = _ellipse_mask(g, an.cx, 0.58, 0.5 * s, 0.72, 4)
    diaphragm = _diaphragm(g, an)
    below_diaphragm = _ramp((v - diaphragm) / (2 * g.px))
    img = 0.03 + body * (an.soft_level - 0.03 + 0.08 * v + 0.06 * (tissue_noise - 0.5))
    img = img + body * below_diaphragm * np.clip(1.25 - d_mid / (0.4 * s), 0, 1) * 0.2

    # ---- mediastinum and heart (patient's left = image right), both resting on the diaphragm
    hu, hv, ha, hb = an.heart
    cardiomegaly = next((f for f in findings if f.category_name == "Cardiomegaly"), None) \
        if "Cardiomegaly" in cats else None
    if cardiomegaly is not None:
        grow = {"small": 1.2, "moderate": 1.3, "large": 1.4}[cardiomegaly.params["size"]] \
            * findings_rng.uniform(0.97, 1.03)
        hu, ha, hb = hu + 0.35 * (grow - 1) * ha, ha * grow, hb * (1 + 0.4 * (grow - 1))
    heart = _ellipse_mask(g, hu, hv, ha, hb, 2)
    top = an.lungs["right"].apex_y - 0.08
    med_half = an.mediastinum_half * (1 + 0.25 * np.clip((v - top) / 0.45, 0, 1))
    mediastinum = _ramp((med_half - d_mid) / (2 * g.px)) * (v > top)
    aortic_knob = _ellipse_mask(g, an.cx + 0.055 * s, an.lungs["left"].apex_y + 0.16 * s, 0.04 * s, 0.032 * s)
    mediastinum = np.maximum(mediastinum, aortic_knob)
    above_diaphragm = 1 - below_diaphragm
    # below the diaphragm the heart merges into the abdomen's density (no visible lower border)
    dense = np.maximum(mediastinum, heart * above_diaphragm)
    img = img * (1 - dense) + dense * (an.heart_level - 0.05 * (1 - heart))

    # ---- lungs: superellipses cut by the diaphragm, the heart and the mediastinum
    lung_shapes = {side: _ramp((1 - _lung_shape(g, lung)) / (6 * g.px)) for side, lung in an.lungs.items()}
    lung_field = np.maximum(lung_shapes["right"], lung_shapes["left"]) * above_diaphragm * (1 - dense)
    lung_level = an.lung_level + 0.06 * np.clip((v - an.lungs["right"].apex_y) / 0.6, 0, 1) \
        + 0.06 * np.exp(-(((d_mid - 0.06) / 0.1) ** 2))
    # vascular markings: strongest at the hila, fading towards the periphery
    hila = np.exp(-(((d_mid - 0.1 * s) / 0.16) ** 2 + ((v - hv + 0.12) / 0.22) ** 2))
    markings = (0.04 + 0.12 * hila) * markings_coarse ** 2 + 0.035 * markings_fine

    air = np.zeros_like(img)
    pleural_line = np.zeros_like(img)
    for k, f in enumerate(findings if with_findings else []):
        if f.category_name == "Pneumothorax":
            own_lung = lung_shapes[f.side] * above_diaphragm
            rim, line = _pneumothorax_region(g, an, findings_rng, f.side, f.zone, own_lung)
            air = np.maximum(air, rim)
            pleural_line = np.maximum(pleural_line, line)
            finding_weights[k] = [np.maximum(rim, 0.5 * line) * (lung_field > 0.05)]
    lung_img = lung_level * (1 - 0.6 * air) + markings * (1 - air) + 0.2 * pleural_line * (1 - air)
    img = img * (1 - lung_field) + lung_img * lung_field

    # ---- findings that add density (blend towards fluid)
    fluid_level = min(0.95, an.heart_level + 0.02)
    for k, f in enumerate(findings if with_findings else []):
        cat = f.category_name
        if cat == "Pneumothorax":
            continue
        if cat == "Cardiomegaly":
            finding_weights[k] = [heart * above_diaphragm]
            continue
        sides = ["right", "left"] if f.side == "bilateral" else [f.side]
        weights = []
        for side in sides:
            if cat == "Pleural Effusion":
                w = _draw_effusion(g, an, findings_rng, side, f.params["size"], lung_field)
            else:
                w = _draw_opacity(g, an, findings_rng, f, side, lung_field)
            weights.append(w)
            img = img * (1 - w) + fluid_level * w
        finding_weights[k] = weights

    # ---- bones: ribs (posterior, curved bands; fainter anterior ones), clavicles, spine
    d = d_mid / (0.42 * s)                                   # 0 at the spine, 1 at the chest wall
    rib_v = v - an.rib_y0 - an.rib_curve * d ** 2 - 0.03 * d
    phase = rib_v / an.rib_spacing
    ribs = (0.5 + 0.5 * np.cos(2 * np.pi * phase)) ** 6 * ((phase > -0.3) & (phase < 9.5))
    ant_phase = (v - an.rib_y0 - 0.05 + 0.08 * d ** 2) / (an.rib_spacing * 1.15)
    ant_ribs = (0.5 + 0.5 * np.cos(2 * np.pi * ant_phase)) ** 8 * ((ant_phase > 0.5) & (ant_phase < 6))
    cage = _ramp((1.02 - d) / (3 * g.px / (0.42 * s))) * (d > 0.08)
    img = img + cage * (0.08 * ribs + 0.03 * ant_ribs) * (1 - 0.6 * below_diaphragm)
    clav_d = np.clip((d_mid - 0.05 * s) / (0.3 * s), 0, 1)
    clav_v = an.clavicle_y - 0.06 * clav_d + 0.015 * np.sin(np.pi * clav_d)
    clavicles = np.exp(-(((v - clav_v) / (0.014 * s)) ** 2)) * ((d_mid > 0.04 * s) & (d_mid < 0.37 * s))
    img = img + 0.14 * clavicles
    spine = _ramp((0.03 * s - d_mid) / (2 * g.px))
    img = img + spine * (0.03 + 0.02 * np.cos(2 * np.pi * v / (0.045 * s)))

    # ---- exposure: vignetting, gain, gamma; upsample; quantum noise at full resolution
    r2 = ((u - 0.5) ** 2 + (v - 0.5) ** 2) / 0.5
    img = np.clip(img * an.gain * (1 - 0.18 * r2), 0, 1) ** an.gamma
    img = _upsample(img, an.width, an.height)
    img = img + noise_rng.normal(0.0, an.noise_sigma, size=img.shape).astype(np.float32)

    for k, weights in finding_weights.items():
        boxes = (_bbox(_upsample(w, an.width, an.height)) for w in weights)
        findings[k].boxes = [b for b in boxes if b is not None]
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def render_case(seed: int, index: int, spec: SyntheticSpec | None = None,
                with_findings: bool = True) -> tuple[np.ndarray, list[Finding]]:
    """Render case ``index`` of the dataset with ``seed``: (uint8 H x W image, its findings).

    With ``with_findings=False`` the same anatomy and noise are drawn without any lesion (the
    findings list is still returned, boxes left empty): the difference of the two renderings is
    exactly what the findings drew.
    """
    spec = spec or SyntheticSpec()
    anatomy_ss, findings_ss, noise_ss = np.random.SeedSequence([seed, index]).spawn(3)
    anatomy_rng = np.random.default_rng(anatomy_ss)
    findings_rng = np.random.default_rng(findings_ss)
    anatomy = _sample_anatomy(anatomy_rng, spec)
    findings = _plan_findings(findings_rng, spec)
    image = _render(anatomy, findings, anatomy_rng, findings_rng, np.random.default_rng(noise_ss),
                    with_findings)
    return image, findings


def sample_findings(seed: int, index: int, spec: SyntheticSpec | None = None) -> list[Finding]:
    """The findings (categories, locations, phrases; no boxes) that ``render_case`` draws, cheaply."""
    spec = spec or SyntheticSpec()
    _, findings_ss, _ = np.random.SeedSequence([seed, index]).spawn(3)
    return _plan_findings(np.random.default_rng(findings_ss), spec)


# ------------------------------------------------------------------------------------- dataset
def _layout(seed: int, n_images: int) -> list[tuple[str, str, str]]:
    """(patient folder, study folder, dicom_id) per image: 1-3 images per patient, MIMIC-like ids."""
    rng = np.random.default_rng([seed, 2**31 - 1])
    per_patient = []
    while sum(per_patient) < n_images:
        per_patient.append(int(rng.choice([1, 2, 3], p=[0.6, 0.28, 0.12])))
    per_patient[-1] -= sum(per_patient) - n_images
    step = max(2, 9_990_000 // len(per_patient))
    patient_ids = 10_000_000 + np.cumsum(rng.integers(1, step, size=len(per_patient)))
    used_studies: set[int] = set()
    out = []
    for pid, count in zip(patient_ids, per_patient):
        for _ in range(count):
            study = int(rng.integers(50_000_000, 60_000_000))
            while study in used_studies:
                study = int(rng.integers(50_000_000, 60_000_000))
            used_studies.add(study)
            words = rng.integers(0, 2**32, size=5, dtype=np.uint64)
            dicom_id = "-".join(f"{int(w):08x}" for w in words)
            out.append((f"p{int(pid)}", f"s{study}", dicom_id))
    return out


def generate_synthetic(out_dir: str | Path, n_images: int = 3000, seed: int = 0,
                       width: tuple[int, int] = (288, 352), height: tuple[int, int] = (320, 384),
                       no_location_fraction: float = 0.15, second_finding_fraction: float = 0.1,
                       jpeg_quality: int = 92, progress: bool = True) -> Path:
    """Write ``n_images`` synthetic radiographs under ``out_dir/files/...`` plus the MS-CXR-format CSV
    and ``synthetic_truth.parquet``; return the CSV's path. Same seed -> byte-identical outputs."""
    import pandas as pd
    from PIL import Image

    if n_images < 1:
        raise ConfigError(f"data.synthetic.n_images must be >= 1, got {n_images}")
    if not 1 <= jpeg_quality <= 100:
        raise ConfigError(f"data.synthetic.jpeg_quality must lie in [1, 100], got {jpeg_quality}")
    spec = SyntheticSpec(width=tuple(int(x) for x in width), height=tuple(int(x) for x in height),
                         no_location_fraction=float(no_location_fraction),
                         second_finding_fraction=float(second_finding_fraction))
    spec.validate()
    out_dir = Path(out_dir)
    rows, truth = [], []
    indices = range(n_images)
    if progress:
        from tqdm import tqdm
        indices = tqdm(indices, desc="synthetic radiographs", unit="img")
    layout = _layout(seed, n_images)
    for i in indices:
        patient, study, dicom_id = layout[i]
        rel = f"files/{patient[:3]}/{patient}/{study}/{dicom_id}.jpg"
        image, findings = render_case(seed, i, spec)
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", quality=int(jpeg_quality))
        path.write_bytes(buf.getvalue())
        h, w = image.shape
        for k, f in enumerate(findings):
            for (bx, by, bw, bh) in f.boxes:
                rows.append((dicom_id, f.category_name, f.label_text, rel, bx, by, bw, bh, w, h))
            truth.append((dicom_id, k, f.label_text, f.category_name, f.side, f.zone, f.location_named,
                          len(f.boxes)))
    csv_path = out_dir / CSV_NAME
    with atomic_path(csv_path) as tmp:
        pd.DataFrame(rows, columns=list(CSV_COLUMNS)).to_csv(tmp, index=False)
    write_parquet(out_dir / TRUTH_NAME, pd.DataFrame(truth, columns=list(TRUTH_COLUMNS)),
                  meta={"generator": "matex.data.synthetic", "seed": seed, "n_images": n_images,
                        "width": list(spec.width), "height": list(spec.height),
                        "no_location_fraction": spec.no_location_fraction,
                        "second_finding_fraction": spec.second_finding_fraction,
                        "jpeg_quality": jpeg_quality})
    return csv_path
