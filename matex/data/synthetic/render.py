"""Rendering a synthetic case: anatomy, then findings, bones and exposure, in a fixed order.

Randomness: every image ``i`` draws from ``np.random.SeedSequence([seed, i])`` split into three
independent streams (anatomy, findings, noise), so rendering a case with and without its findings
gives the same anatomy and noise (``render_case(..., with_findings=False)``), and the output is
byte-identical for a given seed.
"""

from __future__ import annotations

import numpy as np

from .anatomy import (
    BOX_THRESHOLD,
    Anatomy,
    Grid,
    SyntheticSpec,
    bbox,
    diaphragm_row,
    ellipse_mask,
    lung_shape,
    ramp,
    sample_anatomy,
    smooth_noise,
    upsample,
)
from .findings import (
    Finding,
    paint_drain,
    paint_effusion,
    paint_opacity,
    paint_pneumothorax,
    place_drain,
    plan_findings,
)
from .phrases import report_language

# Anatomy and findings are drawn on a grid this many times coarser than the image, then upsampled
# (bilinear) before the pixel noise is added: radiographs are smooth, and this makes the generator
# about four times faster. Boxes are measured on the upsampled finding weights, in original pixels.
WORK_DOWNSAMPLE = 2


def _render(
    an: Anatomy,
    findings: list[Finding],
    anatomy_rng: np.random.Generator,
    findings_rng: np.random.Generator,
    noise_rng: np.random.Generator,
    with_findings: bool,
    conspicuity: float = 1.0,
    drain_rng: np.random.Generator | None = None,
    omit: frozenset[str] = frozenset(),
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(uint8 image, element weights on the working grid). Omitted elements are computed (the
    random streams advance identically) but not drawn."""
    g = Grid(-(-an.width // WORK_DOWNSAMPLE), -(-an.height // WORK_DOWNSAMPLE))
    s = an.scale
    u, v = g.u, g.v
    if not with_findings:
        omit = omit | {lesion_name(k) for k in range(len(findings))}
    # with_findings=False draws nothing from the findings stream (as it always has)
    cats = {f.category_name for f in findings} if with_findings else set()
    finding_weights: dict[int, list[np.ndarray]] = {}
    elements: dict[str, np.ndarray] = {}

    # ---- anatomy textures first, always drawn in the same order (same stream with or without findings)
    markings_coarse = smooth_noise(anatomy_rng, g.height, g.width, 16)
    markings_fine = smooth_noise(anatomy_rng, g.height, g.width, 36)
    tissue_noise = smooth_noise(anatomy_rng, g.height, g.width, 5)

    # ---- soft tissue: thorax with shoulders; abdomen below the diaphragm
    d_mid = np.abs(u - an.cx)
    body = ellipse_mask(g, an.cx, 0.58, 0.5 * s, 0.72, 4)
    diaphragm = diaphragm_row(g, an)
    below_diaphragm = ramp((v - diaphragm) / (2 * g.px))
    img = 0.03 + body * (an.soft_level - 0.03 + 0.08 * v + 0.06 * (tissue_noise - 0.5))
    img = img + body * below_diaphragm * np.clip(1.25 - d_mid / (0.4 * s), 0, 1) * 0.2

    # ---- mediastinum and heart (patient's left = image right), both resting on the diaphragm
    hu, hv, ha, hb = an.heart
    cardiomegaly = (
        next((f for f in findings if f.category_name == "Cardiomegaly"), None) if "Cardiomegaly" in cats else None
    )
    if cardiomegaly is not None:
        grow = {"small": 1.2, "moderate": 1.3, "large": 1.4}[cardiomegaly.params["size"]] * findings_rng.uniform(
            0.97, 1.03
        )
        if conspicuity != 1.0:
            grow = 1 + conspicuity * (grow - 1)
        k_cardio = findings.index(cardiomegaly)
        if lesion_name(k_cardio) not in omit:
            hu, ha, hb = (
                hu + 0.35 * (grow - 1) * ha,
                ha * grow,
                hb * (1 + 0.4 * (grow - 1)),
            )
    heart = ellipse_mask(g, hu, hv, ha, hb, 2)
    top = an.lungs["right"].apex_y - 0.08
    med_half = an.mediastinum_half * (1 + 0.25 * np.clip((v - top) / 0.45, 0, 1))
    mediastinum = ramp((med_half - d_mid) / (2 * g.px)) * (v > top)
    aortic_knob = ellipse_mask(g, an.cx + 0.055 * s, an.lungs["left"].apex_y + 0.16 * s, 0.04 * s, 0.032 * s)
    mediastinum = np.maximum(mediastinum, aortic_knob)
    above_diaphragm = 1 - below_diaphragm
    # below the diaphragm the heart merges into the abdomen's density (no visible lower border)
    dense = np.maximum(mediastinum, heart * above_diaphragm)
    img = img * (1 - dense) + dense * (an.heart_level - 0.05 * (1 - heart))

    # ---- lungs: superellipses cut by the diaphragm, the heart and the mediastinum
    lung_shapes = {side: ramp((1 - lung_shape(g, lung)) / (6 * g.px)) for side, lung in an.lungs.items()}
    lung_field = np.maximum(lung_shapes["right"], lung_shapes["left"]) * above_diaphragm * (1 - dense)
    lung_level = (
        an.lung_level
        + 0.06 * np.clip((v - an.lungs["right"].apex_y) / 0.6, 0, 1)
        + 0.06 * np.exp(-(((d_mid - 0.06) / 0.1) ** 2))
    )
    # vascular markings: strongest at the hila, fading towards the periphery
    hila = np.exp(-(((d_mid - 0.1 * s) / 0.16) ** 2 + ((v - hv + 0.12) / 0.22) ** 2))
    markings = (0.04 + 0.12 * hila) * markings_coarse**2 + 0.035 * markings_fine

    air = np.zeros_like(img)
    pleural_line = np.zeros_like(img)
    for k, f in enumerate(findings if with_findings else []):
        if f.category_name == "Pneumothorax":
            own_lung = lung_shapes[f.side] * above_diaphragm
            treated = drain_rng is not None  # a drain is asked for: the film shows a treated pneumothorax
            rim, line = paint_pneumothorax(g, an, findings_rng, f.side, f.zone, own_lung, treated=treated)
            if conspicuity != 1.0:
                rim, line = (
                    np.clip(conspicuity * rim, 0, 1),
                    np.clip(conspicuity * line, 0, 1),
                )
            if lesion_name(k) not in omit:
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
                w = paint_effusion(g, an, findings_rng, side, f.params["size"], lung_field)
            else:
                w = paint_opacity(g, an, findings_rng, f, side, lung_field)
            if conspicuity != 1.0:
                w = np.clip(conspicuity * w, 0, 1).astype(np.float32)
            weights.append(w)
            if lesion_name(k) not in omit:
                img = img * (1 - w) + fluid_level * w
        finding_weights[k] = weights

    # ---- bones: ribs (posterior, curved bands; fainter anterior ones), clavicles, spine
    d = d_mid / (0.42 * s)  # 0 at the spine, 1 at the chest wall
    rib_v = v - an.rib_y0 - an.rib_curve * d**2 - 0.03 * d
    phase = rib_v / an.rib_spacing
    ribs = (0.5 + 0.5 * np.cos(2 * np.pi * phase)) ** 6 * ((phase > -0.3) & (phase < 9.5))
    ant_phase = (v - an.rib_y0 - 0.05 + 0.08 * d**2) / (an.rib_spacing * 1.15)
    ant_ribs = (0.5 + 0.5 * np.cos(2 * np.pi * ant_phase)) ** 8 * ((ant_phase > 0.5) & (ant_phase < 6))
    cage = ramp((1.02 - d) / (3 * g.px / (0.42 * s))) * (d > 0.08)
    rib_shadow = cage * (0.08 * ribs + 0.03 * ant_ribs) * (1 - 0.6 * below_diaphragm)
    elements["ribs"] = rib_shadow / 0.11
    if "ribs" not in omit:
        img = img + rib_shadow
    clav_d = np.clip((d_mid - 0.05 * s) / (0.3 * s), 0, 1)
    clav_v = an.clavicle_y - 0.06 * clav_d + 0.015 * np.sin(np.pi * clav_d)
    clavicles = np.exp(-(((v - clav_v) / (0.014 * s)) ** 2)) * ((d_mid > 0.04 * s) & (d_mid < 0.37 * s))
    elements["clavicles"] = clavicles
    if "clavicles" not in omit:
        img = img + 0.14 * clavicles
    spine = ramp((0.03 * s - d_mid) / (2 * g.px))
    img = img + spine * (0.03 + 0.02 * np.cos(2 * np.pi * v / (0.045 * s)))

    # ---- devices: a chest drain (radio-opaque, over everything else)
    if drain_rng is not None:
        tube = _drain(g, an, drain_rng, finding_weights, _pneumothorax_side(findings))
        if tube is not None:
            elements["drain"] = tube
            if "drain" not in omit:
                img = img * (1 - tube) + 0.95 * tube

    # ---- exposure: vignetting, gain, gamma; upsample; quantum noise at full resolution
    r2 = ((u - 0.5) ** 2 + (v - 0.5) ** 2) / 0.5
    img = np.clip(img * an.gain * (1 - 0.18 * r2), 0, 1) ** an.gamma
    img = upsample(img, an.width, an.height)
    img = img + noise_rng.normal(0.0, an.noise_sigma, size=img.shape).astype(np.float32)

    for k, weights in finding_weights.items():
        full = [upsample(w, an.width, an.height) for w in weights]
        if not with_findings:
            continue
        findings[k].boxes = [b for b in (bbox(w) for w in full) if b is not None]
        elements[lesion_name(k)] = np.maximum.reduce(weights)
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8), elements


def _pneumothorax_side(findings: list[Finding]) -> str | None:
    """The side of the case's pneumothorax (``right``/``left``), None without a lateralised one."""
    for f in findings:
        if f.category_name == "Pneumothorax" and f.side in ("right", "left"):
            return f.side
    return None


def _drain(
    g: Grid,
    an: Anatomy,
    rng: np.random.Generator,
    finding_weights: dict[int, list[np.ndarray]],
    pneumothorax_side: str | None = None,
) -> np.ndarray | None:
    """The drain's blend weight on the working grid, on a course that keeps one model patch between
    its pixels and every lesion's (drawn or omitted alike, so a film re-rendered without an element
    keeps its drain); None when no course clears (the film then has no drain).

    On a film with a pneumothorax the drain goes into that lung, where a clinician places it, on a
    course below or beside the air rim (an apical pneumothorax is drained from a low lateral entry);
    a film whose pneumothorax leaves no such course gets none. The shortcut is then what it is in
    practice: a tube on the side of the finding. On other films the side away from the lesions is
    tried first.

    The lesions' extent is taken on the working grid, conservatively: weight above 0.9 x
    BOX_THRESHOLD of the peak (the masks' rule, :func:`element_masks`, at full size), and distances
    shortened by two working pixels, which covers the bilinear upsampling to the film's pixels."""
    from scipy.ndimage import distance_transform_edt

    preferred = "right" if rng.random() < 0.5 else "left"
    lesions = np.zeros((g.height, g.width), bool)
    for weights in finding_weights.values():
        w = np.maximum.reduce(weights)
        peak = float(w.max())
        if peak > 1e-6:
            lesions |= w > 0.9 * BOX_THRESHOLD * peak
    distance = None
    if lesions.any():
        scale = an.width / g.width  # original pixels per working pixel (the grid is 1/WORK_DOWNSAMPLE)
        distance = (distance_transform_edt(~lesions) - 2.0) * scale
    if pneumothorax_side is not None:
        sides = [pneumothorax_side]
    else:
        half = g.width // 2  # patient right = image left
        load = {"right": lesions[:, :half].sum(), "left": lesions[:, half:].sum()}
        other = "left" if preferred == "right" else "right"
        sides = sorted([preferred, other], key=lambda sd: load[sd])  # stable: the drawn side wins a tie
    placed = place_drain(an, rng, sides, distance)
    return None if placed is None else paint_drain(g, rng, placed[1])


def lesion_name(k: int) -> str:
    """The element name of finding ``k`` of a case (``lesion0``, ``lesion1``)."""
    return f"lesion{k}"


def element_masks(elements: dict[str, np.ndarray], width: int, height: int) -> dict[str, np.ndarray]:
    """Boolean pixel masks (original size) of the drawn elements: where an element's weight exceeds
    BOX_THRESHOLD of its peak (the rule that makes the lesion boxes)."""
    out = {}
    for name, w in elements.items():
        full = upsample(w, width, height)
        peak = float(full.max())
        out[name] = full > BOX_THRESHOLD * peak if peak > 1e-6 else np.zeros(full.shape, bool)
    return out


def render_case(
    seed: int,
    index: int,
    spec: SyntheticSpec | None = None,
    with_findings: bool = True,
    *,
    drain: bool = False,
    omit: frozenset[str] | set[str] = frozenset(),
    return_elements: bool = False,
    noise_draw: int = 0,
):
    """Render case ``index`` of the dataset with ``seed``: (uint8 H x W image, its findings).

    With ``with_findings=False`` the same anatomy and noise are drawn without any lesion (the
    findings list is still returned, boxes left empty): the difference of the two renderings is
    exactly what the findings drew (with ``drain``, the drain's course is then chosen as for a film
    without lesions, so it may differ). ``drain``: draw a chest drain, at least one model patch away
    from every lesion (none when no course keeps that clearance). ``omit``: element names (``lesion0``, ``drain``, ``ribs``, ``clavicles``) to leave
    out, everything else identical: the counterfactual x without e. ``return_elements``: also return
    the elements' boolean pixel masks (original size), ``(image, findings, masks)``. ``noise_draw``
    > 0: the same film with another draw of the quantum noise (the null change the counterfactual
    truth measures its noise with).
    """
    spec = spec or SyntheticSpec()
    anatomy_ss, findings_ss, noise_ss, drain_ss, language_ss = np.random.SeedSequence([seed, index]).spawn(5)
    anatomy_rng = np.random.default_rng(anatomy_ss)
    findings_rng = np.random.default_rng(findings_ss)
    anatomy = sample_anatomy(anatomy_rng, spec)
    findings = _with_report_language(plan_findings(findings_rng, spec), language_ss)
    image, elements = _render(
        anatomy,
        findings,
        anatomy_rng,
        findings_rng,
        np.random.default_rng(
            noise_ss if not noise_draw else np.random.SeedSequence([seed, index, 0x401E, noise_draw])
        ),
        with_findings,
        conspicuity=spec.conspicuity,
        drain_rng=np.random.default_rng(drain_ss) if drain else None,
        omit=frozenset(omit),
    )
    if return_elements:
        return image, findings, element_masks(elements, anatomy.width, anatomy.height)
    return image, findings


def sample_findings(seed: int, index: int, spec: SyntheticSpec | None = None) -> list[Finding]:
    """The findings (categories, locations, phrases; no boxes) that ``render_case`` draws, cheaply."""
    spec = spec or SyntheticSpec()
    _, findings_ss, _, _, language_ss = np.random.SeedSequence([seed, index]).spawn(5)
    return _with_report_language(plan_findings(np.random.default_rng(findings_ss), spec), language_ss)


def _with_report_language(findings: list[Finding], language_ss: np.random.SeedSequence) -> list[Finding]:
    """The findings with report language (hedges, negated and associated clauses) added to their
    phrases from the case's fifth random stream: the drawing streams, hence the film, are untouched."""
    rng = np.random.default_rng(language_ss)
    categories = [f.category_name for f in findings]
    for f in findings:
        f.label_text = report_language(rng, f.label_text, f.category_name, categories)
    return findings
