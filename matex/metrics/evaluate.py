"""Per-pair evaluation of one method's cached maps (docs/evaluation.md): localisation against the
aligned boxes, image/text confidence drop and increase, and deletion/insertion AUC. Never
recomputes a map."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..data.transforms import box_mask
from ..errors import MapError
from ..io import read_npz

log = logging.getLogger(__name__)


def box_masks(pairs: pd.DataFrame, size: int) -> np.ndarray:
    """(B, S, S) bool union of each pair's aligned boxes."""
    return np.stack([box_mask([tuple(b) for b in boxes], size) for boxes in pairs["boxes"]])


def per_box_masks(pairs: pd.DataFrame, size: int) -> list[np.ndarray]:
    """Per pair, (n_boxes, S, S) bool: one mask per aligned box (``box_recall``)."""
    return [
        np.stack([box_mask([tuple(b)], size) for b in boxes]) if len(boxes) else np.zeros((0, size, size), bool)
        for boxes in pairs["boxes"]
    ]


def localisation_columns(
    maps: np.ndarray,
    sub: pd.DataFrame,
    size: int,
    section: Mapping[str, Any],
    seeds: list[int],
    groups: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Every localisation metric of one batch (docs/evaluation.md), from ``evaluation.localisation``;
    ``groups``: the maps' ``tie_groups`` (computed here when not given)."""
    from .localisation import (
        MIOU_THRESHOLDS,
        auroc,
        box_recall,
        cnr,
        energy_in_box,
        iou_top_fraction,
        miou,
        pointing_game,
        tie_groups,
    )

    masks = box_masks(sub, size)
    groups = tie_groups(maps.reshape(len(maps), -1)) if groups is None else groups
    frac = section.get("top_fraction", 0.05)
    tol = float(section.get("pointing_tolerance", 15))
    radius = float(section.get("peak_radius", 0.1)) * size
    cols = {"pointing_game": pointing_game(maps, masks, groups=groups)}
    if tol > 0:
        cols[f"pointing_game_tol{tol:g}"] = pointing_game(maps, masks, tolerance=tol, groups=groups)
    cols.update(
        {
            "energy_in_box": energy_in_box(maps, masks),
            f"iou_top{round(frac * 100)}": iou_top_fraction(maps, masks, frac, groups=groups),
            "auroc": auroc(maps, masks, groups=groups),
            "cnr": cnr(maps, masks),
            "miou": miou(maps, masks, section.get("miou_thresholds") or MIOU_THRESHOLDS),
            "box_recall": box_recall(maps, per_box_masks(sub, size), radius, seeds, groups=groups),
        }
    )
    return cols


def check_cached_maps(arrays: Mapping[str, np.ndarray], ids, npz_path, shape: tuple[int, int]) -> None:
    """Every cached map has the model's input shape and finite values; else name the file and pair."""
    for p in ids:
        m = arrays[p]
        if m.shape != shape:
            raise MapError(f"{npz_path}: map of pair {p} has shape {m.shape}, expected {shape}")
        if not np.isfinite(m).all():
            n = int((~np.isfinite(m)).sum())
            raise MapError(
                f"{npz_path}: map of pair {p} has {n} NaN/Inf values; delete the file and rerun the attribution"
            )


@torch.no_grad()  # scores maps, never differentiates: no autograd graph for the forward passes
def evaluate_maps(
    model,
    method: str,
    pairs: pd.DataFrame,
    images_u8: np.ndarray,
    npz_path,
    cfg: Mapping[str, Any],
    batch_size: int = 32,
    progress: bool = True,
) -> pd.DataFrame:
    """One row per explained pair with every per-pair metric of ``method``."""
    arrays, _ = read_npz(npz_path)
    ids, rows = _cached_pairs(arrays, pairs, npz_path, model.geometry.size)
    ev = cfg.get("evaluation", {})
    causal = deletion_options(ev.get("deletion", {}), images_u8)
    seed = int(cfg.get("seed", 0))
    out = []
    for start in tqdm(range(0, len(ids), batch_size), desc=f"evaluate {method}", disable=not progress):
        bid = ids[start : start + batch_size]
        brow = rows[start : start + batch_size]
        out.append(_evaluate_batch(model, method, pairs.iloc[brow], bid, arrays, images_u8[brow], seed, causal, cfg))
    return pd.concat(out, ignore_index=True)


def _cached_pairs(
    arrays: Mapping[str, np.ndarray], pairs: pd.DataFrame, npz_path, size: int
) -> tuple[list[str], np.ndarray]:
    """The ids of the cached image maps (checked: model input shape, finite, pairs of this table) and
    their rows in ``pairs``."""
    ids = [k for k in arrays if not k.startswith("text/")]
    check_cached_maps(arrays, ids, npz_path, (size, size))
    row_of = pd.Series(np.arange(len(pairs)), index=pairs["pair_id"])
    unknown = [p for p in ids if p not in row_of.index]
    if unknown:
        raise MapError(
            f"{npz_path} holds maps of pairs that are not in the pairs table: {unknown[:5]} "
            "(made from another dataset? rerun the attribution)"
        )
    return ids, row_of.loc[ids].to_numpy()


def _evaluate_batch(
    model,
    method: str,
    sub: pd.DataFrame,
    bid: list[str],
    arrays: Mapping[str, np.ndarray],
    images_u8: np.ndarray,
    seed: int,
    causal: Mapping[str, Any],
    cfg: Mapping[str, Any],
) -> pd.DataFrame:
    """The metric rows of one batch of pairs (``sub``, ids ``bid``, films ``images_u8``): localisation,
    image confidence (plain and equal-mass), deletion/insertion AUC, ROAD and text confidence."""
    from .faithfulness import causal_curves, curve_auc, pair_seed
    from .localisation import tie_groups
    from .road import road_columns  # ROAD (Rong et al. 2022): MoRF/LeRF with noisy linear imputation

    ev = cfg.get("evaluation", {})
    conf = ev.get("confidence", {})
    maps = np.stack([arrays[p].astype(np.float32) for p in bid])
    seeds = [pair_seed(seed, p) for p in bid]
    rec = {"pair_id": bid, "method": method, "category": sub["category"].to_numpy()}
    flat = maps.reshape(len(maps), -1)
    order = np.argsort(flat, axis=1)  # one sort serves every tie rule
    groups, exact = tie_groups(flat, order=order), tie_groups(flat, rtol=0.0, order=order)
    rec.update(localisation_columns(maps, sub, model.geometry.size, ev.get("localisation", {}), seeds, groups))
    images = model.preprocess(np.ascontiguousarray(images_u8))
    tokens = model.tokenize(sub["phrase"].tolist())
    s, columns = _image_confidence_columns(model, images, tokens, maps, seeds, exact, conf)
    rec.update(columns)
    curves = causal_curves(model, images, tokens, maps, seeds, s_image=s, **causal)
    rec.update(deletion_auc=curve_auc(curves["deletion"]), insertion_auc=curve_auc(curves["insertion"]))
    rec.update(road_columns(model, images_u8, tokens, maps, seeds, cfg))
    rec.update(_text_confidence_columns(model, images, tokens, [arrays.get(f"text/{p}") for p in bid], conf))
    return pd.DataFrame(rec)


def _image_confidence_columns(
    model,
    images: torch.Tensor,
    tokens: torch.Tensor,
    maps: np.ndarray,
    seeds: list[int],
    exact_groups: np.ndarray,
    conf: Mapping[str, Any],
) -> tuple[np.ndarray, dict[str, Any]]:
    """The full-image similarity ``s`` and the image confidence columns: similarity, masked similarity,
    drop and increase, then the equal-mass (rank-normalised, top-k %) drops and increases."""
    from .equal_mass import equal_mass_confidence
    from .faithfulness import confidence_scores, image_confidence

    s, s_img = image_confidence(
        model, images, tokens, torch.from_numpy(maps), broadcast=conf.get("map_broadcast", "full")
    )
    sc = confidence_scores(np.asarray(s), np.asarray(s_img), variant=conf.get("drop_variant", "absolute"))
    columns = {
        "similarity": np.asarray(s),
        "img_similarity_masked": np.asarray(s_img),
        "img_conf_drop": sc["drop"],
        "img_conf_increase": sc["increase"],
    }
    columns.update(
        equal_mass_confidence(
            model,
            images,
            tokens,
            maps,
            np.asarray(s),
            seeds,
            fractions=conf.get("top_fractions", (0.05, 0.10, 0.25, 0.50)),
            rank=bool(conf.get("rank_normalised", True)),
            broadcast=conf.get("map_broadcast", "full"),
            variant=conf.get("drop_variant", "absolute"),
            groups=exact_groups,
        )
    )
    return np.asarray(s), columns


def _text_confidence_columns(
    model, images: torch.Tensor, tokens: torch.Tensor, text_maps: list[np.ndarray | None], conf: Mapping[str, Any]
) -> dict[str, Any]:
    """Text confidence drop and increase when every pair of the batch has a token map, else NaN."""
    from .faithfulness import confidence_scores, text_confidence

    if not all(t is not None for t in text_maps):
        return {"txt_conf_drop": np.nan, "txt_conf_increase": np.nan}
    s_t, s_txt = text_confidence(model, images, tokens, text_maps)
    st = confidence_scores(np.asarray(s_t), np.asarray(s_txt), variant=conf.get("drop_variant", "absolute"))
    return {"txt_conf_drop": st["drop"], "txt_conf_increase": st["increase"]}


def deletion_options(section: Mapping[str, Any], images_u8: np.ndarray) -> dict[str, Any]:
    """``causal_curves`` keywords from ``evaluation.deletion``; the grey fill defaults to the
    dataset's mean intensity (all images of the images array)."""
    fill = section.get("fill", "blur")
    grey = section.get("grey_level")
    if fill == "grey" and grey is None:
        grey = float(np.mean(images_u8, dtype=np.float64)) / 255.0
    return {
        "steps": int(section.get("steps", 16)),
        "fill": fill,
        "blur_sigma": float(section.get("blur_sigma", 5.0)),
        "grey_level": grey,
    }
