"""Counterfactual ground truth of faithfulness on the synthetic films.

Every synthetic film is rendered from elements (each lesion, a chest drain where drawn, the ribs and
the clavicles), so the generator can re-render it without any one element e, everything else
identical. The model's true reliance on e for a pair (x, t) is

    ΔS_e = S(x, t) − S(x without e, t),        S = cos(f_I(x), f_T(t)),

the image-text similarity every method explains. Against that truth, per pair:

- ``lesion_share`` / ``drain_share``: fraction of the map's mass on the lesion's / drain's pixel mask;
- ``counterfactual_agreement``: Spearman ρ, over the pair's elements (at least 3), between each
  element's map mass and its ΔS_e; a faithful map ranks elements the way the model uses them;
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
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

# a drain is a few pixels wide while the maps live on a 7x7 patch grid: the shortcut test's peak
# counts as "on the drain" within half a 32-pixel patch of it (at 224 px input)
SHORTCUT_TOLERANCE_PX = 16


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


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def counterfactual_agreement(
    maps: np.ndarray, element_masks: Sequence[np.ndarray], deltas: Sequence[np.ndarray]
) -> np.ndarray:
    """Spearman ρ per pair between the map mass on each element and the element's ΔS_e.

    ``element_masks[i]``: (E_i, H, W) bool masks of pair i's elements; ``deltas[i]``: (E_i,) ΔS.
    Mass is the map's total mass on the element (a large element can hold much mass, as its removal
    can move S much). NaN with fewer than 3 elements, or when the masses or the ΔS are all equal."""
    out = np.full(len(maps), np.nan)
    for i, (m, masks, d) in enumerate(zip(maps, element_masks, deltas)):
        masks = np.asarray(masks, dtype=bool)
        if len(masks) < 3:
            continue
        m = np.asarray(m, dtype=np.float64)
        if m.sum() <= 0:
            m = np.ones_like(m)  # a zero map counts as uniform, as in the shares
        mass = (m[None] * masks).reshape(len(masks), -1).sum(1)
        out[i] = _spearman(mass, np.asarray(d, dtype=np.float64))
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
    one is the pair's own lesion, and S(x) itself."""

    names: list[str]
    masks: np.ndarray
    deltas: np.ndarray
    lesion: str
    similarity: float


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
    model, phrase: str, seed: int, case_index: int, spec, drain: bool, lesion: str, geometry, jpeg_quality: int | None
) -> PairCounterfactual:
    """Re-render case ``case_index`` whole and without each of its elements, and measure ΔS_e for
    ``phrase`` with ``model``; masks are mapped through the same geometry as the image."""
    import torch

    from ..data.synthetic import render_case

    image, _, masks = render_case(seed, case_index, spec, drain=drain, return_elements=True)
    names = sorted(n for n, m in masks.items() if m.any())
    inputs = [_to_input(image, geometry, jpeg_quality)]
    inputs += [
        _to_input(render_case(seed, case_index, spec, drain=drain, omit={n})[0], geometry, jpeg_quality) for n in names
    ]
    with torch.no_grad():
        x = model.preprocess(np.stack(inputs))
        s = model.similarity(x, model.tokenize([phrase] * len(inputs))).cpu().numpy().astype(np.float64)
    return PairCounterfactual(
        names=names,
        masks=np.stack([_mask_to_input(masks[n], geometry) for n in names]),
        deltas=s[0] - s[1:],
        lesion=lesion,
        similarity=float(s[0]),
    )


def counterfactual_metrics(
    maps: np.ndarray, truths: Sequence[PairCounterfactual], tolerance_px: int = SHORTCUT_TOLERANCE_PX
) -> Mapping[str, np.ndarray]:
    """The four per-pair metrics plus the ΔS of the lesion and the drain, for maps (B, S, S)."""
    size = maps.shape[1:]

    def mask_of(t: PairCounterfactual, name: str) -> np.ndarray:
        return t.masks[t.names.index(name)] if name in t.names else np.zeros(size, bool)

    def delta_of(t: PairCounterfactual, name: str) -> float:
        return float(t.deltas[t.names.index(name)]) if name in t.names else float("nan")

    lesion_masks = np.stack([mask_of(t, t.lesion) for t in truths])
    drain_masks = np.stack([mask_of(t, "drain") for t in truths])
    d_lesion = np.array([delta_of(t, t.lesion) for t in truths])
    d_drain = np.array([delta_of(t, "drain") for t in truths])
    return {
        "lesion_share": lesion_share(maps, lesion_masks),
        "drain_share": drain_share(maps, drain_masks),
        "counterfactual_agreement": counterfactual_agreement(
            maps, [t.masks for t in truths], [t.deltas for t in truths]
        ),
        "shortcut_test": shortcut_test(maps, drain_masks, d_drain, d_lesion, tolerance_px),
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
    from ..data.synthetic import SyntheticSpec
    from ..data.transforms import InputGeometry

    syn = cfg["data"].get("synthetic", {})
    spec = SyntheticSpec(
        width=tuple(syn.get("width", (288, 352))),
        height=tuple(syn.get("height", (320, 384))),
        no_location_fraction=float(syn.get("no_location_fraction", 0.15)),
        second_finding_fraction=float(syn.get("second_finding_fraction", 0.1)),
        conspicuity=float(syn.get("conspicuity", 1.0)),
    )
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
    ``/similarity``."""
    arrays = {}
    for pid, t in truths.items():
        arrays[f"{pid}/masks"] = np.packbits(t.masks, axis=None)
        arrays[f"{pid}/shape"] = np.array(t.masks.shape)
        arrays[f"{pid}/deltas"] = t.deltas.astype(np.float64)
        arrays[f"{pid}/names"] = np.array(t.names)
        arrays[f"{pid}/lesion"] = np.array(t.lesion)
        arrays[f"{pid}/similarity"] = np.array(t.similarity)
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
    rec = counterfactual_metrics(maps, [truths[p] for p in ids])
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
