"""The drawing steps of one synthetic film, in the order the renderer (:mod:`.render`) calls them: soft
tissue, mediastinum and heart (with a cardiomegaly), the findings that remove density
(pneumothorax), the lungs, the findings that add density, the bones, the exposure, the boxes.

Each step that draws from the findings stream does so in the loop order over the case's findings,
so the order of the calls fixes the stream's consumption (and the film, byte for byte).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .anatomy import Anatomy, Grid, bbox, diaphragm_row, ellipse_mask, ramp, upsample
from .findings import Finding, paint_effusion, paint_opacity, paint_pneumothorax


def lesion_name(k: int) -> str:
    """The element name of finding ``k`` of a case (``lesion0``, ``lesion1``)."""
    return f"lesion{k}"


@dataclass
class Film:
    """What the drawing steps of one film share: its working grid and anatomy, the findings drawn
    (none with ``with_findings=False``), the findings stream, and the weights recorded on the way."""

    g: Grid
    an: Anatomy
    drawn: list[Finding]
    findings_rng: np.random.Generator
    conspicuity: float
    omit: frozenset[str]
    finding_weights: dict[int, list[np.ndarray]] = field(default_factory=dict)
    elements: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def d_mid(self) -> np.ndarray:
        """Horizontal distance from the midline (normalised)."""
        return np.abs(self.g.u - self.an.cx)


def soft_tissue(film: Film, tissue_noise: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(image, weight below the diaphragm): the thorax with its shoulders, the abdomen below."""
    g, an = film.g, film.an
    s, v = an.scale, g.v
    body = ellipse_mask(g, an.cx, 0.58, 0.5 * s, 0.72, 4)
    diaphragm = diaphragm_row(g, an)
    below_diaphragm = ramp((v - diaphragm) / (2 * g.px))
    img = 0.03 + body * (an.soft_level - 0.03 + 0.08 * v + 0.06 * (tissue_noise - 0.5))
    img = img + body * below_diaphragm * np.clip(1.25 - film.d_mid / (0.4 * s), 0, 1) * 0.2
    return img, below_diaphragm


def heart_shape(film: Film) -> tuple[float, float, float, float]:
    """The heart's ellipse (centre u, centre v, half width, half height), enlarged by a drawn
    cardiomegaly; its growth is drawn from the findings stream even when the lesion is omitted."""
    hu, hv, ha, hb = film.an.heart
    k_cardio = next((k for k, f in enumerate(film.drawn) if f.category_name == "Cardiomegaly"), None)
    if k_cardio is None:
        return hu, hv, ha, hb
    size = film.drawn[k_cardio].params["size"]
    grow = {"small": 1.2, "moderate": 1.3, "large": 1.4}[size] * film.findings_rng.uniform(0.97, 1.03)
    if film.conspicuity != 1.0:
        grow = 1 + film.conspicuity * (grow - 1)
    if lesion_name(k_cardio) not in film.omit:
        hu, ha, hb = (
            hu + 0.35 * (grow - 1) * ha,
            ha * grow,
            hb * (1 + 0.4 * (grow - 1)),
        )
    return hu, hv, ha, hb


def mediastinum_and_heart(
    film: Film,
    img: np.ndarray,
    heart_shape: tuple[float, float, float, float],
    below_diaphragm: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, heart, dense): the mediastinum and heart (patient's left = image right) drawn, both
    resting on the diaphragm; ``dense`` is their joint weight, which cuts the lungs."""
    g, an = film.g, film.an
    s, v, d_mid = an.scale, g.v, film.d_mid
    heart = ellipse_mask(g, *heart_shape, 2)
    top = an.lungs["right"].apex_y - 0.08
    med_half = an.mediastinum_half * (1 + 0.25 * np.clip((v - top) / 0.45, 0, 1))
    mediastinum = ramp((med_half - d_mid) / (2 * g.px)) * (v > top)
    aortic_knob = ellipse_mask(g, an.cx + 0.055 * s, an.lungs["left"].apex_y + 0.16 * s, 0.04 * s, 0.032 * s)
    mediastinum = np.maximum(mediastinum, aortic_knob)
    above_diaphragm = 1 - below_diaphragm
    # below the diaphragm the heart merges into the abdomen's density (no visible lower border)
    dense = np.maximum(mediastinum, heart * above_diaphragm)
    img = img * (1 - dense) + dense * (an.heart_level - 0.05 * (1 - heart))
    return img, heart, dense


def pneumothoraces(
    film: Film,
    lung_shapes: dict[str, np.ndarray],
    above_diaphragm: np.ndarray,
    lung_field: np.ndarray,
    treated: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """(air, pleural line): the findings that remove density, each recorded in the film's finding
    weights. ``treated``: a drain is asked for, so the film shows a treated pneumothorax."""
    conspicuity = film.conspicuity
    air = np.zeros_like(lung_field)
    pleural_line = np.zeros_like(lung_field)
    for k, f in enumerate(film.drawn):
        if f.category_name != "Pneumothorax":
            continue
        own_lung = lung_shapes[f.side] * above_diaphragm
        rim, line = paint_pneumothorax(film.g, film.an, film.findings_rng, f.side, f.zone, own_lung, treated=treated)
        if conspicuity != 1.0:
            rim, line = (
                np.clip(conspicuity * rim, 0, 1),
                np.clip(conspicuity * line, 0, 1),
            )
        if lesion_name(k) not in film.omit:
            air = np.maximum(air, rim)
            pleural_line = np.maximum(pleural_line, line)
        film.finding_weights[k] = [np.maximum(rim, 0.5 * line) * (lung_field > 0.05)]
    return air, pleural_line


def lungs(
    film: Film,
    img: np.ndarray,
    lung_field: np.ndarray,
    air: np.ndarray,
    pleural_line: np.ndarray,
    markings_coarse: np.ndarray,
    markings_fine: np.ndarray,
) -> np.ndarray:
    """The image with its lung fields drawn: density rising downwards and towards the mediastinum,
    vascular markings, and the air and pleural line of a pneumothorax."""
    an = film.an
    s, v, d_mid = an.scale, film.g.v, film.d_mid
    lung_level = (
        an.lung_level
        + 0.06 * np.clip((v - an.lungs["right"].apex_y) / 0.6, 0, 1)
        + 0.06 * np.exp(-(((d_mid - 0.06) / 0.1) ** 2))
    )
    # vascular markings: strongest at the hila, fading towards the periphery
    hv = an.heart[1]
    hila = np.exp(-(((d_mid - 0.1 * s) / 0.16) ** 2 + ((v - hv + 0.12) / 0.22) ** 2))
    markings = (0.04 + 0.12 * hila) * markings_coarse**2 + 0.035 * markings_fine
    lung_img = lung_level * (1 - 0.6 * air) + markings * (1 - air) + 0.2 * pleural_line * (1 - air)
    return img * (1 - lung_field) + lung_img * lung_field


def dense_findings(film: Film, img: np.ndarray, cardiac_weight: np.ndarray, lung_field: np.ndarray) -> np.ndarray:
    """The image with the findings that add density blended towards fluid (effusions, opacities),
    each recorded in the film's finding weights; a cardiomegaly (drawn with the heart) is recorded
    with ``cardiac_weight``."""
    g, an, conspicuity = film.g, film.an, film.conspicuity
    fluid_level = min(0.95, an.heart_level + 0.02)
    for k, f in enumerate(film.drawn):
        cat = f.category_name
        if cat == "Pneumothorax":
            continue
        if cat == "Cardiomegaly":
            film.finding_weights[k] = [cardiac_weight]
            continue
        sides = ["right", "left"] if f.side == "bilateral" else [f.side]
        weights = []
        for side in sides:
            if cat == "Pleural Effusion":
                w = paint_effusion(g, an, film.findings_rng, side, f.params["size"], lung_field)
            else:
                w = paint_opacity(g, an, film.findings_rng, f, side, lung_field)
            if conspicuity != 1.0:
                w = np.clip(conspicuity * w, 0, 1).astype(np.float32)
            weights.append(w)
            if lesion_name(k) not in film.omit:
                img = img * (1 - w) + fluid_level * w
        film.finding_weights[k] = weights
    return img


def bones(film: Film, img: np.ndarray, below_diaphragm: np.ndarray) -> np.ndarray:
    """The image with its bones: ribs (posterior, curved bands; fainter anterior ones), clavicles,
    spine; the ribs' and clavicles' weights are recorded in the film's elements."""
    g, an = film.g, film.an
    s, v, d_mid = an.scale, g.v, film.d_mid
    d = d_mid / (0.42 * s)  # 0 at the spine, 1 at the chest wall
    rib_v = v - an.rib_y0 - an.rib_curve * d**2 - 0.03 * d
    phase = rib_v / an.rib_spacing
    ribs = (0.5 + 0.5 * np.cos(2 * np.pi * phase)) ** 6 * ((phase > -0.3) & (phase < 9.5))
    ant_phase = (v - an.rib_y0 - 0.05 + 0.08 * d**2) / (an.rib_spacing * 1.15)
    ant_ribs = (0.5 + 0.5 * np.cos(2 * np.pi * ant_phase)) ** 8 * ((ant_phase > 0.5) & (ant_phase < 6))
    cage = ramp((1.02 - d) / (3 * g.px / (0.42 * s))) * (d > 0.08)
    rib_shadow = cage * (0.08 * ribs + 0.03 * ant_ribs) * (1 - 0.6 * below_diaphragm)
    film.elements["ribs"] = rib_shadow / 0.11
    if "ribs" not in film.omit:
        img = img + rib_shadow
    clav_d = np.clip((d_mid - 0.05 * s) / (0.3 * s), 0, 1)
    clav_v = an.clavicle_y - 0.06 * clav_d + 0.015 * np.sin(np.pi * clav_d)
    clavicles = np.exp(-(((v - clav_v) / (0.014 * s)) ** 2)) * ((d_mid > 0.04 * s) & (d_mid < 0.37 * s))
    film.elements["clavicles"] = clavicles
    if "clavicles" not in film.omit:
        img = img + 0.14 * clavicles
    spine = ramp((0.03 * s - d_mid) / (2 * g.px))
    return img + spine * (0.03 + 0.02 * np.cos(2 * np.pi * v / (0.045 * s)))


def exposure(film: Film, img: np.ndarray, noise_rng: np.random.Generator) -> np.ndarray:
    """The exposed film at full resolution: vignetting, gain and gamma on the working grid, then
    the upsampling, then quantum noise from the noise stream."""
    g, an = film.g, film.an
    r2 = ((g.u - 0.5) ** 2 + (g.v - 0.5) ** 2) / 0.5
    img = np.clip(img * an.gain * (1 - 0.18 * r2), 0, 1) ** an.gamma
    img = upsample(img, an.width, an.height)
    return img + noise_rng.normal(0.0, an.noise_sigma, size=img.shape).astype(np.float32)


def record_boxes(film: Film, findings: list[Finding]) -> None:
    """Set each drawn finding's boxes (measured on its upsampled weights, in original pixels) and
    record its weight as the element ``lesion<k>``."""
    for k, weights in film.finding_weights.items():
        full = [upsample(w, film.an.width, film.an.height) for w in weights]
        findings[k].boxes = [b for b in (bbox(w) for w in full) if b is not None]
        film.elements[lesion_name(k)] = np.maximum.reduce(weights)
