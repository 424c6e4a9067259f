"""Studies that need the model, not just cached maps: the cascading-randomisation sanity check
(Adebayo et al. 2018) and MATEX's fusion-weight ablation and prior-strength sweep."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from .evaluate import box_masks


def _explain_rows(model, method: str, params: Mapping[str, Any], pairs: pd.DataFrame, images_u8: np.ndarray,
                  rows: np.ndarray, batch_size: int) -> np.ndarray:
    from ..attribution import explain
    from ..attribution.cache import training_boxes_of

    out = []
    boxes = training_boxes_of(pairs, model.geometry.size)          # read by mean_box / category_box only
    for start in range(0, len(rows), batch_size):
        idx = rows[start:start + batch_size]
        imgs = model.preprocess(np.ascontiguousarray(images_u8[idx]))
        res = explain(model, imgs, pairs["phrase"].iloc[idx].tolist(), method=method, training_boxes=boxes,
                      categories=pairs["category"].iloc[idx].astype(str).tolist(), **dict(params))
        out.append(res.image.detach().float().cpu().numpy())
    return np.concatenate(out)


def n_vision_blocks(model) -> int:
    return len(model.clip.visual.transformer.resblocks)


def sanity_curve(model, method: str, params: Mapping[str, Any], pairs: pd.DataFrame, images_u8: np.ndarray,
                 rows: np.ndarray, batch_size: int, seed: int) -> pd.DataFrame:
    """Spearman correlation between each pair's map on the trained model and on copies whose top
    k blocks are re-initialised, k = 1..L (cascading, from the top block down)."""
    from .sanity import randomize_cascading, spearman_maps

    reference = _explain_rows(model, method, params, pairs, images_u8, rows, batch_size)
    frames = []
    for k in range(1, n_vision_blocks(model) + 1):
        randomized = randomize_cascading(model, k, seed)
        maps = _explain_rows(randomized, method, params, pairs, images_u8, rows, batch_size)
        frames.append(pd.DataFrame({"pair_id": pairs["pair_id"].iloc[rows].to_numpy(), "method": method,
                                    "category": pairs["category"].iloc[rows].to_numpy(),
                                    "blocks_randomized": k, "spearman": spearman_maps(reference, maps)}))
        del randomized
    return pd.concat(frames, ignore_index=True)


def localisation_summary(maps: np.ndarray, masks: np.ndarray, top_fraction: float) -> dict[str, float]:
    from .localisation import energy_in_box, iou_top_fraction, pointing_game

    return {"pointing_game": float(np.nanmean(pointing_game(maps, masks))),
            "energy_in_box": float(np.nanmean(energy_in_box(maps, masks))),
            "iou_top5": float(np.nanmean(iou_top_fraction(maps, masks, top_fraction)))}


def confidence_increase(model, pairs: pd.DataFrame, images_u8: np.ndarray, rows: np.ndarray, maps: np.ndarray,
                        broadcast: str, batch_size: int) -> float:
    from .faithfulness import image_confidence

    hits = []
    for start in range(0, len(rows), batch_size):
        idx = rows[start:start + batch_size]
        imgs = model.preprocess(np.ascontiguousarray(images_u8[idx]))
        tokens = model.tokenize(pairs["phrase"].iloc[idx].tolist())
        s, s2 = image_confidence(model, imgs, tokens, torch.from_numpy(maps[start:start + batch_size]),
                                 broadcast=broadcast)
        hits.append(np.asarray(s2) > np.asarray(s))
    return float(np.concatenate(hits).mean())


def ablation_study(model, base_params: Mapping[str, Any], pairs: pd.DataFrame, images_u8: np.ndarray,
                   rows: np.ndarray, cfg: Mapping[str, Any], batch_size: int,
                   weight_values: Sequence[float] = (0.0, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0)) -> pd.DataFrame:
    """Vary one fusion weight (alpha, beta, gamma, delta) at a time, then the prior strength
    lambda_s over ``figures.lambda_sweep``; localisation and confidence increase for each setting."""
    masks = box_masks(pairs.iloc[rows], model.geometry.size)
    frac = cfg["evaluation"]["localisation"]["top_fraction"]
    broadcast = cfg["evaluation"]["confidence"]["map_broadcast"]
    settings = [(w, v) for w in ("alpha", "beta", "gamma", "delta") for v in weight_values]
    settings += [("prior_strength", v) for v in cfg["figures"]["lambda_sweep"]]
    records = []
    for name, value in settings:
        params = {**base_params, name: value}
        maps = _explain_rows(model, "matex", params, pairs, images_u8, rows, batch_size)
        rec = {"parameter": name, "value": float(value), **localisation_summary(maps, masks, frac),
               "img_conf_increase": confidence_increase(model, pairs, images_u8, rows, maps, broadcast, batch_size)}
        records.append(rec)
    return pd.DataFrame(records)
