"""Counterfactual ground truth of faithfulness on the synthetic films.

Every synthetic film is rendered from elements (each lesion, a chest drain where drawn, the ribs and
the clavicles), so the generator can re-render it without any one element e, everything else
identical. The model's true reliance on e for a pair (x, t) is

    ΔS_e = S(x, t) − S(x without e, t),        S = cos(f_I(x), f_T(t)),

the image-text similarity every method explains. Against that truth, per pair:

- ``lesion_share`` / ``drain_share``: fraction of the map's mass on the lesion's / drain's pixel mask;
- ``counterfactual_agreement``: rank agreement (Kendall-type concordance) between each element's
  map mass on its exclusive pixels and its ΔS_e, counted only over element pairs whose ΔS differ by
  more than the truth's noise (:func:`noise_threshold`); a faithful map ranks elements the way the
  model uses them;
- ``counterfactual_agreement_nonlesion``: the same among the elements other than the pair's own
  lesion (drain, bones, other findings): the part a map's localisation of the lesion cannot explain;
- ``shortcut_test``: on pairs where the model relies more on the drain than on the lesion
  (ΔS_drain > ΔS_lesion), whether the map's peak lies on the drain (a tied peak scores the fraction
  of tied pixels on it, so a constant map scores the drain's area fraction).

The drain as a shortcut follows the chest-drain finding of Oakden-Rayner et al., "Hidden
stratification causes clinically meaningful failures in machine learning for medical imaging",
ACM CHIL 2020. Removing an element to measure reliance is the occlusion/counterfactual idea of
Zeiler & Fergus (ECCV 2014) and Chang et al. (ICLR 2019), here with an exact counterfactual instead of
an in-filled one, so no out-of-distribution fill confounds ΔS.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

# a drain is a few pixels wide while the maps live on a 7x7 patch grid: the shortcut test's peak
# counts as "on the drain" within half a patch of it (16 px at 224 px input: input size / 14)
SHORTCUT_TOLERANCE_PX = 16
# Noise of the truth: each pair's film is also re-rendered with this many other draws of the quantum
# noise; S(x) - S(x') is a change that removes nothing (a null element).
NULL_DRAWS = 2
# Two elements are ranked only when their ΔS differ by more than NOISE_Z * sqrt(2) * sigma_null (a
# difference of two values that each carry the null's spread; z of a two-sided 95 % interval).
NOISE_Z = 1.96


def _mass_on(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Map mass inside each mask / total map mass, per pair. A zero map (no preference, e.g. a flat
    prior normalised to zeros) counts as uniform: it scores the mask's area fraction. NaN for an
    empty mask."""
    maps = np.asarray(maps, dtype=np.float64).reshape(len(maps), -1)
    masks = np.asarray(masks, dtype=bool).reshape(len(masks), -1)
    if maps.shape != masks.shape:
        raise ValueError(f"maps {maps.shape} and masks {masks.shape} differ in shape")
    if (maps < 0).any():
        raise ValueError("map mass needs non-negative maps")
    total = maps.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = (maps * masks).sum(1) / total
    share = np.where(total <= 0, masks.mean(1), share)
    share[~masks.any(1)] = np.nan
    return share


def lesion_share(maps: np.ndarray, lesion_masks: np.ndarray) -> np.ndarray:
    """Fraction of each map's mass on the pair's lesion mask (B,) (energy in the mask, as the
    energy-based pointing game of Wang et al., Score-CAM, CVPRW 2020, but on the drawn pixels)."""
    return _mass_on(maps, lesion_masks)


def drain_share(maps: np.ndarray, drain_masks: np.ndarray) -> np.ndarray:
    """Fraction of each map's mass on the chest drain (B,); NaN on films without a drain."""
    return _mass_on(maps, drain_masks)


def exclusive_masks(masks: np.ndarray) -> np.ndarray:
    """Each element's pixels that no other element of the film covers (E, H, W): the ribs and the
    clavicles cross the lung fields, so map mass on a shared pixel cannot be told apart."""
    masks = np.asarray(masks, dtype=bool)
    count = masks.sum(0)
    return masks & (count == 1)[None]


def rank_concordance(scores: np.ndarray, deltas: np.ndarray, threshold: float = 0.0) -> float:
    """Kendall-type concordance (Kendall, Biometrika 1938) between ``scores`` and ``deltas`` over the
    element pairs whose deltas differ by more than ``threshold``: (concordant − discordant) / pairs
    ranked, a tie in the scores counting 0. NaN when no pair is ranked (every ΔS within noise)."""
    s, d = np.asarray(scores, np.float64), np.asarray(deltas, np.float64)
    i, j = np.triu_indices(len(d), 1)
    ranked = np.abs(d[i] - d[j]) > threshold
    if not ranked.any():
        return float("nan")
    return float((np.sign(s[i] - s[j]) * np.sign(d[i] - d[j]))[ranked].mean())


def element_mass(m: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """The map's total mass on each element's exclusive pixels (E,); a zero map counts as uniform."""
    m = np.asarray(m, dtype=np.float64)
    if m.sum() <= 0:
        m = np.ones_like(m)
    excl = exclusive_masks(masks)
    return (m[None] * excl).reshape(len(excl), -1).sum(1)


def counterfactual_agreement(
    maps: np.ndarray,
    element_masks: Sequence[np.ndarray],
    deltas: Sequence[np.ndarray],
    threshold: float = 0.0,
    keep: Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """Per pair: :func:`rank_concordance` between the map's mass on each element's exclusive pixels
    and the element's ΔS_e, over element pairs whose ΔS differ by more than ``threshold``.

    ``element_masks[i]``: (E_i, H, W) bool masks of pair i's elements; ``deltas[i]``: (E_i,) ΔS.
    ``keep[i]``: (E_i,) bool, the elements to rank (all by default; exclusivity is always taken
    against every element). Mass is the map's total mass (a large element can hold much mass, as
    its removal can move S much: the ``area_order`` baseline shows how far area alone goes)."""
    out = np.full(len(maps), np.nan)
    for i, (m, masks, d) in enumerate(zip(maps, element_masks, deltas)):
        sel = np.ones(len(d), bool) if keep is None else np.asarray(keep[i], bool)
        if sel.sum() < 2:
            continue
        out[i] = rank_concordance(element_mass(m, masks)[sel], np.asarray(d, np.float64)[sel], threshold)
    return out


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    from scipy.ndimage import binary_dilation

    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return binary_dilation(mask, structure=(yy**2 + xx**2) <= radius**2)


def shortcut_test(
    maps: np.ndarray,
    drain_masks: np.ndarray,
    delta_drain: np.ndarray,
    delta_lesion: np.ndarray,
    tolerance_px: int = SHORTCUT_TOLERANCE_PX,
) -> np.ndarray:
    """Per pair: the share of the map's tied maximum within ``tolerance_px`` of the drain, on pairs
    where the model relies more on the drain than on the lesion (ΔS_drain > ΔS_lesion); NaN on the
    other pairs. Its mean is the share of such pairs where the method's peak lies on the drain."""
    out = np.full(len(maps), np.nan)
    for i, (m, mask, dd, dl) in enumerate(zip(maps, drain_masks, delta_drain, delta_lesion)):
        mask = np.asarray(mask, dtype=bool)
        if not mask.any() or not np.isfinite(dd) or not np.isfinite(dl) or not dd > dl:
            continue
        m = np.asarray(m, dtype=np.float64)
        at_max = m == m.max()
        out[i] = float((at_max & _dilate(mask, tolerance_px)).sum() / at_max.sum())
    return out


# ------------------------------------------------------------------------------------- the truth
@dataclass
class PairCounterfactual:
    """One pair's elements at the model input: masks (E, S, S) bool, ΔS_e (E,), their names, which
    one is the pair's own lesion, S(x) itself, and the null ΔS: S(x) − S(x') for re-renderings x'
    that only redraw the quantum noise (the truth's noise)."""

    names: list[str]
    masks: np.ndarray
    deltas: np.ndarray
    lesion: str
    similarity: float
    null_deltas: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def delta(self, name: str) -> float:
        """ΔS of element ``name``; NaN when the film has no such element."""
        return float(self.deltas[self.names.index(name)]) if name in self.names else float("nan")

    def mask(self, name: str) -> np.ndarray:
        """Mask of element ``name``; all False when the film has no such element."""
        return self.masks[self.names.index(name)] if name in self.names else np.zeros(self.masks.shape[1:], bool)


def noise_threshold(truths: Sequence[PairCounterfactual], z: float = NOISE_Z) -> float:
    """The least ΔS difference that ranks two elements: z · √2 · σ_null, with σ_null the root mean
    square of every pair's null ΔS (re-renderings that only redraw the quantum noise), pooled over the
    run's pairs. 0 when no null was measured."""
    null = np.concatenate([np.asarray(t.null_deltas, np.float64).ravel() for t in truths] or [np.zeros(0)])
    null = null[np.isfinite(null)]
    return float(z * np.sqrt(2.0) * np.sqrt(np.mean(null**2))) if null.size else 0.0


def _to_input(image_u8: np.ndarray, geometry, jpeg_quality: int | None) -> np.ndarray:
    """A rendered film as the model sees it: JPEG round trip (as the dataset files), then the geometry."""
    from PIL import Image

    img = Image.fromarray(image_u8)
    if jpeg_quality:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(jpeg_quality))
        img = Image.open(io.BytesIO(buf.getvalue()))
    return geometry.image_to_input(img)


def _mask_to_input(mask: np.ndarray, geometry) -> np.ndarray:
    from PIL import Image

    return geometry.image_to_input(Image.fromarray(mask.astype(np.uint8) * 255)) > 127


def pair_counterfactual(
    model,
    phrase: str,
    seed: int,
    case_index: int,
    spec,
    drain: bool,
    lesion: str,
    geometry,
    jpeg_quality: int | None,
    null_draws: int = NULL_DRAWS,
) -> PairCounterfactual:
    """Re-render case ``case_index`` whole, without each of its elements, and with ``null_draws``
    other draws of its quantum noise, and measure ΔS for ``phrase`` with ``model``; masks are mapped
    through the same geometry as the image."""
    import torch

    from ..data.synthetic import render_case

    image, _, masks = render_case(seed, case_index, spec, drain=drain, return_elements=True)
    names = sorted(n for n, m in masks.items() if m.any())
    films = [image] + [render_case(seed, case_index, spec, drain=drain, omit={n})[0] for n in names]
    films += [render_case(seed, case_index, spec, drain=drain, noise_draw=k)[0] for k in range(1, null_draws + 1)]
    with torch.no_grad():
        x = model.preprocess(np.stack([_to_input(f, geometry, jpeg_quality) for f in films]))
        s = model.similarity(x, model.tokenize([phrase] * len(films))).cpu().numpy().astype(np.float64)
    return PairCounterfactual(
        names=names,
        masks=np.stack([_mask_to_input(masks[n], geometry) for n in names]),
        deltas=s[0] - s[1 : 1 + len(names)],
        lesion=lesion,
        similarity=float(s[0]),
        null_deltas=s[0] - s[1 + len(names) :],
    )


def counterfactual_metrics(
    maps: np.ndarray,
    truths: Sequence[PairCounterfactual],
    tolerance_px: int | None = None,
    threshold: float | None = None,
) -> Mapping[str, np.ndarray]:
    """The per-pair metrics plus the ΔS of the lesion and the drain, for maps (B, S, S).
    ``tolerance_px``: the shortcut test's, default half a patch (S / 14); ``threshold``: the least ΔS
    difference that ranks two elements, default :func:`noise_threshold` of ``truths``."""
    size = maps.shape[1:]
    tolerance = round(size[0] / 14) if tolerance_px is None else tolerance_px
    threshold = noise_threshold(truths) if threshold is None else threshold
    lesion_masks = np.stack([t.mask(t.lesion) for t in truths]) if truths else np.zeros((0, *size), bool)
    drain_masks = np.stack([t.mask("drain") for t in truths]) if truths else np.zeros((0, *size), bool)
    d_lesion = np.array([t.delta(t.lesion) for t in truths])
    d_drain = np.array([t.delta("drain") for t in truths])
    element_masks, deltas = [t.masks for t in truths], [t.deltas for t in truths]
    return {
        "lesion_share": lesion_share(maps, lesion_masks),
        "drain_share": drain_share(maps, drain_masks),
        "counterfactual_agreement": counterfactual_agreement(maps, element_masks, deltas, threshold),
        "counterfactual_agreement_nonlesion": counterfactual_agreement(
            maps, element_masks, deltas, threshold, keep=[np.array([n != t.lesion for n in t.names]) for t in truths]
        ),
        "shortcut_test": shortcut_test(maps, drain_masks, d_drain, d_lesion, tolerance),
        "delta_s_lesion": d_lesion,
        "delta_s_drain": d_drain,
    }


def compute_truths(
    model, pairs: pd.DataFrame, pair_ids, truth: pd.DataFrame, elements: pd.DataFrame, cfg: Mapping
) -> dict[str, PairCounterfactual]:
    """ΔS_e of every element for each pair in ``pair_ids`` (synthetic data only), keyed by pair id.

    ``truth``/``elements``: the generator's ``synthetic_truth.parquet`` / ``synthetic_elements.parquet``.
    The pair's lesion is the finding whose phrase is the pair's phrase. Model-dependent but
    method-independent: computed once per run (rule ``counterfactual_truth``)."""
    from ..data.synthetic.writer import synthetic_spec
    from ..data.transforms import InputGeometry

    syn = cfg["data"].get("synthetic", {})
    spec = synthetic_spec(syn)
    geometry = InputGeometry(int(cfg["input"]["size"]), cfg["input"].get("mode", "center_crop"))
    by_pair = pairs.set_index("pair_id")
    per_image = elements.drop_duplicates("dicom_id").set_index("dicom_id")
    finding_of = {
        (d, " ".join(str(t).split())): int(k)
        for d, t, k in zip(truth["dicom_id"], truth["label_text"], truth["finding_index"])
    }
    out = {}
    for pid in pair_ids:
        row = by_pair.loc[pid]
        image = per_image.loc[row["dicom_id"]]
        k = finding_of.get((row["dicom_id"], " ".join(str(row["phrase"]).split())), 0)
        out[pid] = pair_counterfactual(
            model,
            str(row["phrase"]),
            int(cfg["seed"]),
            int(image["case_index"]),
            spec,
            bool(image["drain"]),
            f"lesion{k}",
            geometry,
            syn.get("jpeg_quality", 92),
        )
    return out


def truths_to_arrays(truths: Mapping[str, PairCounterfactual]) -> dict[str, np.ndarray]:
    """Flat NPZ entries: ``{pair}/masks`` (packed bits), ``{pair}/shape``, ``/deltas``, ``/names``, ``/lesion``,
    ``/similarity``, ``/null_deltas``."""
    arrays = {}
    for pid, t in truths.items():
        arrays[f"{pid}/masks"] = np.packbits(t.masks, axis=None)
        arrays[f"{pid}/shape"] = np.array(t.masks.shape)
        arrays[f"{pid}/deltas"] = t.deltas.astype(np.float64)
        arrays[f"{pid}/names"] = np.array(t.names)
        arrays[f"{pid}/lesion"] = np.array(t.lesion)
        arrays[f"{pid}/similarity"] = np.array(t.similarity)
        arrays[f"{pid}/null_deltas"] = np.asarray(t.null_deltas, dtype=np.float64)
    return arrays


def truths_from_arrays(arrays: Mapping[str, np.ndarray]) -> dict[str, PairCounterfactual]:
    """Inverse of :func:`truths_to_arrays`."""
    out = {}
    for key in arrays:
        if not key.endswith("/shape"):
            continue
        pid = key[: -len("/shape")]
        shape = tuple(int(v) for v in arrays[key])
        masks = np.unpackbits(arrays[f"{pid}/masks"], count=int(np.prod(shape))).astype(bool).reshape(shape)
        out[pid] = PairCounterfactual(
            names=[str(n) for n in arrays[f"{pid}/names"]],
            masks=masks,
            deltas=np.asarray(arrays[f"{pid}/deltas"], dtype=np.float64),
            lesion=str(arrays[f"{pid}/lesion"]),
            similarity=float(arrays[f"{pid}/similarity"]),
            null_deltas=np.asarray(arrays.get(f"{pid}/null_deltas", np.zeros(0)), dtype=np.float64),
        )
    return out


def evaluate_counterfactual(
    method: str, pairs: pd.DataFrame, maps_npz, truths: Mapping[str, PairCounterfactual], elements: pd.DataFrame
) -> pd.DataFrame:
    """One row per explained pair of ``method`` with the counterfactual metrics and the pair's ΔS."""
    import pandas as pd

    from ..errors import MapError
    from ..io import read_npz

    arrays, _ = read_npz(maps_npz)
    ids = [k for k in arrays if not k.startswith("text/")]
    missing = [p for p in ids if p not in truths]
    if missing:
        raise MapError(f"{maps_npz}: no counterfactual truth for pairs {missing[:5]} (rerun counterfactual_truth)")
    by_pair = pairs.set_index("pair_id")
    drain_of = elements.drop_duplicates("dicom_id").set_index("dicom_id")["drain"]
    maps = np.stack([arrays[p].astype(np.float32) for p in ids]) if ids else np.zeros((0, 1, 1), np.float32)
    # one noise threshold for the whole run (every method is ranked against the same truth)
    rec = counterfactual_metrics(maps, [truths[p] for p in ids], threshold=noise_threshold(list(truths.values())))
    return pd.DataFrame(
        {
            "pair_id": ids,
            "method": method,
            "category": [by_pair.loc[p, "category"] for p in ids],
            "has_drain": [bool(drain_of.loc[by_pair.loc[p, "dicom_id"]]) for p in ids],
            "n_elements": [len(truths[p].names) for p in ids],
            **rec,
        }
    )
