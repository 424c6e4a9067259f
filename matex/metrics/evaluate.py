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
    from .equal_mass import equal_mass_confidence
    from .faithfulness import (
        causal_curves,
        confidence_scores,
        curve_auc,
        image_confidence,
        pair_seed,
        text_confidence,
    )
    from .localisation import tie_groups

    arrays, _ = read_npz(npz_path)
    ids = [k for k in arrays if not k.startswith("text/")]
    check_cached_maps(arrays, ids, npz_path, (model.geometry.size,) * 2)
    row_of = pd.Series(np.arange(len(pairs)), index=pairs["pair_id"])
    unknown = [p for p in ids if p not in row_of.index]
    if unknown:
        raise MapError(
            f"{npz_path} holds maps of pairs that are not in the pairs table: {unknown[:5]} "
            "(made from another dataset? rerun the attribution)"
        )
    rows = row_of.loc[ids].to_numpy()
    ev = cfg.get("evaluation", {})
    conf = ev.get("confidence", {})
    causal = deletion_options(ev.get("deletion", {}), images_u8)
    seed = int(cfg.get("seed", 0))
    size = model.geometry.size
    out = []
    for start in tqdm(range(0, len(ids), batch_size), desc=f"evaluate {method}", disable=not progress):
        bid = ids[start : start + batch_size]
        brow = rows[start : start + batch_size]
        sub = pairs.iloc[brow]
        maps = np.stack([arrays[p].astype(np.float32) for p in bid])
        seeds = [pair_seed(seed, p) for p in bid]
        rec = {"pair_id": bid, "method": method, "category": sub["category"].to_numpy()}
        flat = maps.reshape(len(maps), -1)
        order = np.argsort(flat, axis=1)  # one sort serves every tie rule
        groups, exact = tie_groups(flat, order=order), tie_groups(flat, rtol=0.0, order=order)
        rec.update(localisation_columns(maps, sub, size, ev.get("localisation", {}), seeds, groups))
        images = model.preprocess(np.ascontiguousarray(images_u8[brow]))
        tokens = model.tokenize(sub["phrase"].tolist())
        s, s_img = image_confidence(
            model, images, tokens, torch.from_numpy(maps), broadcast=conf.get("map_broadcast", "full")
        )
        sc = confidence_scores(np.asarray(s), np.asarray(s_img), variant=conf.get("drop_variant", "absolute"))
        rec.update(
            similarity=np.asarray(s),
            img_similarity_masked=np.asarray(s_img),
            img_conf_drop=sc["drop"],
            img_conf_increase=sc["increase"],
        )
        rec.update(
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
                groups=exact,
            )
        )
        curves = causal_curves(model, images, tokens, maps, seeds, s_image=np.asarray(s), **causal)
        rec.update(deletion_auc=curve_auc(curves["deletion"]), insertion_auc=curve_auc(curves["insertion"]))
        from .road import road_columns  # ROAD (Rong et al. 2022): MoRF/LeRF with noisy linear imputation

        rec.update(road_columns(model, images_u8[brow], tokens, maps, seeds, cfg))
        text_maps = [arrays.get(f"text/{p}") for p in bid]
        if all(t is not None for t in text_maps):
            s_t, s_txt = text_confidence(model, images, tokens, text_maps)
            st = confidence_scores(np.asarray(s_t), np.asarray(s_txt), variant=conf.get("drop_variant", "absolute"))
            rec.update(txt_conf_drop=st["drop"], txt_conf_increase=st["increase"])
        else:
            rec.update(txt_conf_drop=np.nan, txt_conf_increase=np.nan)
        out.append(pd.DataFrame(rec))
    return pd.concat(out, ignore_index=True)


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
