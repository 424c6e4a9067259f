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
    lung_shape,
    ramp,
    sample_anatomy,
    smooth_noise,
    upsample,
)
from .film import (
    Film,
    bones,
    dense_findings,
    exposure,
    heart_shape,
    lesion_name,
    lungs,
    mediastinum_and_heart,
    pneumothoraces,
    record_boxes,
    soft_tissue,
)
from .findings import Finding, paint_drain, place_drain, plan_findings
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
    random streams advance identically) but not drawn. The steps draw from the streams in this
    order: anatomy textures, cardiomegaly, pneumothorax, density-adding findings, drain, noise."""
    g = Grid(-(-an.width // WORK_DOWNSAMPLE), -(-an.height // WORK_DOWNSAMPLE))
    if not with_findings:
        omit = omit | {lesion_name(k) for k in range(len(findings))}
    # with_findings=False draws nothing from the findings stream (as it always has)
    film = Film(g, an, findings if with_findings else [], findings_rng, conspicuity, omit)

    # anatomy textures first, always drawn in the same order (same stream with or without findings)
    markings_coarse = smooth_noise(anatomy_rng, g.height, g.width, 16)
    markings_fine = smooth_noise(anatomy_rng, g.height, g.width, 36)
    tissue_noise = smooth_noise(anatomy_rng, g.height, g.width, 5)

    img, below_diaphragm = soft_tissue(film, tissue_noise)
    img, heart, dense = mediastinum_and_heart(film, img, heart_shape(film), below_diaphragm)
    above_diaphragm = 1 - below_diaphragm
    # lungs: superellipses cut by the diaphragm, the heart and the mediastinum
    lung_shapes = {side: ramp((1 - lung_shape(g, lung)) / (6 * g.px)) for side, lung in an.lungs.items()}
    lung_field = np.maximum(lung_shapes["right"], lung_shapes["left"]) * above_diaphragm * (1 - dense)
    treated = drain_rng is not None  # a drain is asked for: the film shows a treated pneumothorax
    air, pleural_line = pneumothoraces(film, lung_shapes, above_diaphragm, lung_field, treated)
    img = lungs(film, img, lung_field, air, pleural_line, markings_coarse, markings_fine)
    img = dense_findings(film, img, heart * above_diaphragm, lung_field)
    img = bones(film, img, below_diaphragm)

    # devices: a chest drain (radio-opaque, over everything else)
    if drain_rng is not None:
        tube = _drain(g, an, drain_rng, film.finding_weights, _pneumothorax_side(findings))
        if tube is not None:
            film.elements["drain"] = tube
            if "drain" not in omit:
                img = img * (1 - tube) + 0.95 * tube

    img = exposure(film, img, noise_rng)
    if with_findings:
        record_boxes(film, findings)
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8), film.elements


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
