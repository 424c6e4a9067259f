"""Findings of the synthetic radiographs: what each case holds (category, side, zone, phrase) and
one painter per finding that returns its blend weight in [0, 1] on the working grid.

The 8 MS-CXR categories are sampled with MS-CXR's frequencies (Boecking et al. 2022). A painter only
draws; the renderer (``render.py``) blends its weight towards fluid density (opacities, effusion),
enlarges the heart (cardiomegaly) or removes lung markings (pneumothorax). Every painter draws from
the case's findings stream in a fixed order, so a seed always gives the same lesion.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .anatomy import (
    Anatomy,
    Grid,
    Lung,
    SyntheticSpec,
    ellipse_mask,
    lung_shape,
    ramp,
    smooth_noise,
)
from .phrases import phrase, size_words

# MS-CXR's finding counts (Boecking et al. 2022): the sampling weights of the first finding.
CATEGORY_COUNTS: dict[str, int] = {
    "Cardiomegaly": 333,
    "Pneumothorax": 245,
    "Pneumonia": 182,
    "Consolidation": 117,
    "Pleural Effusion": 96,
    "Lung Opacity": 82,
    "Atelectasis": 61,
    "Edema": 46,
}
CATEGORIES = tuple(CATEGORY_COUNTS)
_CATEGORY_P = np.array([CATEGORY_COUNTS[c] for c in CATEGORIES], dtype=float)
_CATEGORY_P /= _CATEGORY_P.sum()


@dataclass
class Finding:
    """One finding of a case: its phrase, where it is, and its box(es) (x, y, w, h) in pixels."""

    category_name: str
    label_text: str
    side: str  # patient terms: right | left | bilateral | none
    zone: str
    location_named: bool
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)
    params: dict = field(default_factory=dict, repr=False)  # drawing parameters (normalised units)


# ------------------------------------------------------------------------------------- the plan
def choose_location(rng: np.random.Generator, category: str) -> tuple[str, str]:
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
        return lr, ("lower" if rng.random() < 0.85 else "middle_lobe")
    if category in ("Pneumonia", "Lung Opacity") and rng.random() < 0.1:
        return "bilateral", "lower"
    zone = str(rng.choice(["upper", "mid", "lower"], p=[0.2, 0.25, 0.55]))
    if zone == "lower" and lr == "left" and rng.random() < 0.25:
        zone = "retrocardiac"
    if zone == "mid" and rng.random() < 1 / 3:
        zone = "middle_lobe"  # the right middle lobe or the lingula: medial, lower than the mid zone
    return lr, zone


def plan_findings(rng: np.random.Generator, spec: SyntheticSpec) -> list[Finding]:
    """Categories, locations and phrases of one case (no pixels: cheap)."""
    first = CATEGORIES[int(rng.choice(len(CATEGORIES), p=_CATEGORY_P))]
    categories = [first]
    if rng.random() < spec.second_finding_fraction:
        others = [c for c in CATEGORIES if c != first]
        p = np.array([CATEGORY_COUNTS[c] for c in others], dtype=float)
        categories.append(others[int(rng.choice(len(others), p=p / p.sum()))])
    findings = []
    sizes = size_words()
    for category in categories:
        side, zone = choose_location(rng, category)
        named = bool(rng.random() >= spec.no_location_fraction)
        size = sizes[int(rng.integers(len(sizes)))]
        text = phrase(rng, category, side, zone, named, size)
        findings.append(Finding(category, text, side, zone, named, params={"size": size}))
    return findings


# ------------------------------------------------------------------------------------- opacities
def opacity_centre(rng: np.random.Generator, an: Anatomy, side: str, zone: str) -> tuple[float, float]:
    """Centre (u, v) of an opacity in ``zone`` of the ``side`` lung, as fractions of the lung's extent."""
    lung = an.lungs[side]
    height = lung.dome_y - lung.apex_y
    frac_y = {
        "upper": 0.2,
        "mid": 0.48,
        "middle_lobe": 0.7,  # inside the parser's right_middle_lobe / lingula boxes (priors/regions.yaml)
        "lower": 0.78,
        "retrocardiac": 0.86,
        "perihilar": 0.48,
    }[zone]
    frac_x = {
        "upper": 0.5,
        "mid": 0.5,
        "middle_lobe": 0.35,
        "lower": 0.55,
        "retrocardiac": -0.05,
        "perihilar": 0.2,
    }[zone]
    frac_y += rng.uniform(-0.06, 0.06)
    frac_x += rng.uniform(-0.12, 0.12)
    u = lung.x_medial + (lung.x_lateral - lung.x_medial) * frac_x
    return float(u), float(lung.apex_y + frac_y * height)


def paint_consolidation(g: Grid, rng: np.random.Generator, du, dv, s: float) -> np.ndarray:
    """A dense, sharply bounded rounded-square lobe filling."""
    a, b = rng.uniform(0.06, 0.1) * s, rng.uniform(0.05, 0.08) * s
    r = np.sqrt(np.sqrt((du / a) ** 4 + (dv / b) ** 4))
    shape = ramp((1 - r) * min(a, b) / (2 * g.px))
    return rng.uniform(0.75, 0.9) * shape * (0.85 + 0.15 * smooth_noise(rng, g.height, g.width, 12))


def paint_pneumonia(g: Grid, rng: np.random.Generator, du, dv, s: float) -> np.ndarray:
    """A patchy, ill-defined blob (airspace disease)."""
    a, b = rng.uniform(0.06, 0.09) * s, rng.uniform(0.05, 0.08) * s
    blob = np.exp(-0.5 * ((du / a) ** 2 + (dv / b) ** 2) * 2.2)
    patch = smooth_noise(rng, g.height, g.width, 18)
    return rng.uniform(0.7, 0.85) * np.clip(blob * (0.35 + 1.1 * patch), 0, 1)


def paint_lung_opacity(g: Grid, rng: np.random.Generator, du, dv, s: float) -> np.ndarray:
    """A faint, smooth haze."""
    a, b = rng.uniform(0.07, 0.11) * s, rng.uniform(0.06, 0.1) * s
    return rng.uniform(0.4, 0.55) * np.exp(-0.5 * ((du / a) ** 2 + (dv / b) ** 2) * 1.6)


def paint_atelectasis(g: Grid, rng: np.random.Generator, du, dv, s: float) -> np.ndarray:
    """A thin plate (linear atelectasis), slightly tilted, thinning at its ends."""
    length, thick = rng.uniform(0.1, 0.15) * s, rng.uniform(0.012, 0.022) * s
    angle = math.radians(rng.uniform(-18, 18))
    along = du * math.cos(angle) + dv * math.sin(angle)
    across = -du * math.sin(angle) + dv * math.cos(angle)
    taper = np.clip(1 - np.abs(along) / length, 0, 1)
    return (
        rng.uniform(0.7, 0.85)
        * ramp((thick * (0.4 + 0.6 * np.sqrt(taper)) - np.abs(across)) / (1.2 * g.px))
        * (taper > 0)
    )


def paint_edema(g: Grid, rng: np.random.Generator, du, dv, s: float) -> np.ndarray:
    """A mottled perihilar haze (one side of the bat-wing pattern)."""
    a, b = rng.uniform(0.09, 0.12) * s, rng.uniform(0.12, 0.16) * s
    haze = np.exp(-0.5 * ((du / a) ** 2 + (dv / b) ** 2) * 1.8)
    return rng.uniform(0.45, 0.6) * haze * (0.6 + 0.4 * smooth_noise(rng, g.height, g.width, 24))


OPACITY_PAINTERS: dict[str, Callable[..., np.ndarray]] = {
    "Consolidation": paint_consolidation,
    "Pneumonia": paint_pneumonia,
    "Lung Opacity": paint_lung_opacity,
    "Atelectasis": paint_atelectasis,
    "Edema": paint_edema,
}


def paint_opacity(
    g: Grid,
    an: Anatomy,
    rng: np.random.Generator,
    f: Finding,
    side: str,
    lung_field: np.ndarray,
) -> np.ndarray:
    """Blend weight in [0, 1] of one opacity-type finding on one side, limited to the lung field."""
    cu, cv = opacity_centre(rng, an, side, f.zone)
    # the retrocardiac region lies behind the heart: not masked by the (heart-free) lung field
    support = lung_field if f.zone != "retrocardiac" else np.maximum(lung_field, ellipse_mask(g, *an.heart))
    weight = OPACITY_PAINTERS[f.category_name](g, rng, g.u - cu, g.v - cv, an.scale)
    return (weight * support).astype(np.float32)


# ------------------------------------------------------------------------------------- effusion, pneumothorax
def paint_effusion(
    g: Grid,
    an: Anatomy,
    rng: np.random.Generator,
    side: str,
    size: str,
    lung_field: np.ndarray,
) -> np.ndarray:
    """Fluid filling the costophrenic angle / base up to a meniscus that rises laterally."""
    lung = an.lungs[side]
    height = lung.dome_y - lung.apex_y
    level = lung.dome_y - {"small": 0.0, "moderate": 0.12, "large": 0.25}[size] * height - rng.uniform(0, 0.04) * height
    lateral_pos = np.clip((g.u - lung.x_medial) / (lung.x_lateral - lung.x_medial), 0, 1)
    meniscus = level + 0.06 - 0.12 * lateral_pos**2  # higher (smaller v) laterally
    fluid = ramp((g.v - meniscus) / (3 * g.px))
    side_mask = (g.u < an.cx) if side == "right" else (g.u >= an.cx)
    return (rng.uniform(0.8, 0.9) * fluid * lung_field * side_mask).astype(np.float32)


# A drained (treated) apical pneumothorax has mostly re-expanded (a residual pneumothorax): its lung
# edge is pulled away from the apex by this fraction of an untreated one's (its mask: ~40 % of the area). This is why a chest drain is a shortcut in practice
# (Oakden-Rayner et al. 2020): on treated films the tube is conspicuous and the air rim is thin.
TREATED_PNEUMOTHORAX_SHRINK = 0.25


def paint_pneumothorax(
    g: Grid,
    an: Anatomy,
    rng: np.random.Generator,
    side: str,
    zone: str,
    lung_shape_soft: np.ndarray,
    treated: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(air rim weight, pleural line weight): the lung edge pulled away from the apex/lateral wall.
    ``treated``: the film has a chest drain; an apical pneumothorax is then mostly re-expanded
    (TREATED_PNEUMOTHORAX_SHRINK; the same random draws, so only the size changes)."""
    lung = an.lungs[side]
    shrink = rng.uniform(0.07, 0.12) if zone == "apical" else rng.uniform(0.14, 0.22)
    if treated and zone == "apical":
        shrink *= TREATED_PNEUMOTHORAX_SHRINK
    toward_medial = lung.x_medial - lung.xc
    collapsed = Lung(
        side=side,
        xc=lung.xc + shrink * toward_medial * (0.6 if zone == "apical" else 1.2),
        yc=lung.yc + shrink * lung.b * (1.0 if zone == "apical" else 0.35),
        a=lung.a * (1 - shrink * (0.4 if zone == "apical" else 1.0)),
        b=lung.b * (1 - shrink),
        x_medial=lung.x_medial,
        x_lateral=lung.x_lateral,
        apex_y=lung.apex_y,
        dome_y=lung.dome_y,
        base_y=lung.base_y,
        dome_h=lung.dome_h,
    )
    f_c = lung_shape(g, collapsed)
    inside_collapsed = ramp((1 - f_c) / (4 * g.px))
    rim = lung_shape_soft * (1 - inside_collapsed)
    line = np.exp(-(((f_c - 1) / (4 * g.px)) ** 2)) * lung_shape_soft
    limit = (g.v < lung.apex_y + 0.4 * (lung.dome_y - lung.apex_y)) if zone == "apical" else (g.v < lung.dome_y)
    return (rim * limit).astype(np.float32), (line * limit).astype(np.float32)


# ------------------------------------------------------------------------------------- devices
# The chest drain keeps this much clearance from every lesion: one patch of the model's 7 x 7 grid
# (32 px at 224 px input), as a fraction of the film's LONGER side: under letterbox a patch spans
# longer side / 7 original pixels, under centre crop shorter side / 7, so the longer side is the
# conservative one. DRAIN_MARGIN_PX adds the masks' resampling at the model input.
DRAIN_CLEARANCE = 1 / 7
DRAIN_MARGIN_PX = 2.0
DRAIN_MAX_HALF_WIDTH = 0.012  # the widest tube paint_drain draws (normalised units)
DRAIN_ROUTES = (
    "apical",
    "apical",
    "basal",
    "basal",
    "lateral",
    "lateral",
    "low",
    "low",
)  # candidates per side, in order


def drain_clearance_px(width: int, height: int) -> float:
    """Least distance in original pixels between a drain pixel and a lesion pixel on a film."""
    return DRAIN_CLEARANCE * max(width, height) + DRAIN_MARGIN_PX


def drain_path(an: Anatomy, rng: np.random.Generator, side: str, n: int = 160, route: str = "apical") -> np.ndarray:
    """(n, 2) points (u, v) along a chest drain: from the image edge, through the lateral chest wall,
    then curving up inside the lung. ``route="apical"``: entry at mid-to-lower lung height, tip
    towards the apex (the usual course of a drain placed for a pneumothorax); ``"basal"``: a lower
    entry and a tip in the lower half of the lung (used when the apical course would come near a
    lesion); ``"lateral"``: a short course that stays near the lateral chest wall (away from
    medial and perihilar lesions); ``"low"``: a short course just above the costophrenic angle (below
    an apical lesion). The last point is the tip."""
    lung = an.lungs[side]
    height = lung.dome_y - lung.apex_y
    outward = 1.0 if lung.x_lateral > lung.x_medial else -1.0
    entry_frac, tip_frac, tip_shift = {
        "apical": ((0.55, 0.72), (0.08, 0.16), (-0.05, 0.1)),
        "basal": ((0.74, 0.9), (0.42, 0.6), (0.15, 0.4)),
        "lateral": ((0.6, 0.85), (0.3, 0.5), (0.55, 0.75)),
        "low": ((0.86, 0.97), (0.78, 0.9), (0.5, 0.8)),
    }[route]
    entry = np.array([lung.x_lateral + outward * 0.01, lung.apex_y + rng.uniform(*entry_frac) * height])
    tip = np.array(
        [lung.xc + outward * rng.uniform(*tip_shift) * lung.a, lung.apex_y + rng.uniform(*tip_frac) * height]
    )
    control = np.array([lung.x_lateral - outward * rng.uniform(0.05, 0.12) * lung.a, entry[1] - 0.05])
    edge = np.array([0.5 + outward * 0.5, entry[1] + rng.uniform(0.02, 0.08)])
    t = np.linspace(0, 1, n // 4)[:, None]
    outside = edge + t * (entry - edge)
    t = np.linspace(0, 1, n - n // 4)[:, None]
    inside = (1 - t) ** 2 * entry + 2 * (1 - t) * t * control + t**2 * tip
    return np.concatenate([outside, inside]).astype(np.float32)


def _path_clear(path: np.ndarray, lesion_distance: np.ndarray, clearance_px: float, film: tuple[int, int]) -> bool:
    """Whether every pixel a tube along ``path`` can mark lies ``clearance_px`` from a lesion.
    ``lesion_distance``: distance to the nearest lesion pixel in ORIGINAL pixels, sampled on any grid
    over the film (``film``: its width, height); it must exceed the clearance plus the widest tube's
    mask radius (its weight above BOX_THRESHOLD of its peak: sqrt(ln 5) half widths) at every point."""
    h, w = lesion_distance.shape
    radius = math.sqrt(math.log(5.0)) * DRAIN_MAX_HALF_WIDTH * max(film) + 1.5
    cols = np.clip((path[:, 0] * w).astype(np.int64), 0, w - 1)
    rows = np.clip((path[:, 1] * h).astype(np.int64), 0, h - 1)
    return bool((lesion_distance[rows, cols] > clearance_px + radius).all())


def place_drain(
    an: Anatomy, rng: np.random.Generator, sides: list[str], lesion_distance: np.ndarray | None
) -> tuple[str, np.ndarray] | None:
    """(side, path) of a drain course that keeps :func:`drain_clearance_px` from every lesion, or None
    when no candidate does. Candidates: on each side in turn (the side away from the lesions first),
    the DRAIN_ROUTES courses in order; all drawn from ``rng``, so a seed always gives the same drain.
    ``lesion_distance``: distance (original pixels) to the nearest lesion pixel on a grid over the
    film, None for a film without lesions."""
    clearance = drain_clearance_px(an.width, an.height)
    for side in sides:
        for route in DRAIN_ROUTES:
            path = drain_path(an, rng, side, route=route)
            if lesion_distance is None or _path_clear(path, lesion_distance, clearance, (an.width, an.height)):
                return side, path
    return None


def paint_drain(g: Grid, rng: np.random.Generator, path: np.ndarray) -> np.ndarray:
    """Blend weight of a chest drain: a radio-opaque tube (large bore, 8-10 mm) along ``path``
    (:func:`drain_path`), interrupted by three side holes near its tip."""
    half_width = rng.uniform(0.009, DRAIN_MAX_HALF_WIDTH)  # a large-bore drain: about 1/40 of the film width
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(path, axis=0), axis=1))])
    inner = arc >= arc[len(path) // 4]
    holes = np.zeros(len(path), bool)
    for frac in (0.6, 0.72, 0.84):  # side holes along the intrapleural part
        centre = arc[inner][0] + frac * (arc[-1] - arc[inner][0])
        holes |= np.abs(arc - centre) < 0.008
    points = path[~holes]
    d2 = np.full((g.height, g.width), np.inf, dtype=np.float32)
    for pu, pv in points:
        np.minimum(d2, (g.u - pu) ** 2 + (g.v - pv) ** 2, out=d2)
    tube = np.exp(-d2 / half_width**2) * 0.8
    return tube.astype(np.float32)
