"""Studies that need the model, not just cached maps: the cascading-randomisation sanity check
(Adebayo et al. 2018; |Spearman rho| and SSIM per cascade step) and MATEX's fusion-weight
ablation and prior-strength sweep."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from .evaluate import box_masks


def _explain_rows(
    model,
    method: str,
    params: Mapping[str, Any],
    pairs: pd.DataFrame,
    images_u8: np.ndarray,
    rows: np.ndarray,
    batch_size: int,
) -> np.ndarray:
    from ..mapstore import explain_batch, training_boxes_of

    out = []
    boxes = training_boxes_of(pairs, model.geometry.size)  # read by mean_box / category_box only
    for start in range(0, len(rows), batch_size):
        idx = rows[start : start + batch_size]
        imgs = model.preprocess(np.ascontiguousarray(images_u8[idx]))
        res = explain_batch(model, method, params, pairs.iloc[idx], imgs, boxes)
        out.append(res.image.detach().float().cpu().numpy())
    return np.concatenate(out)


def n_vision_blocks(model) -> int:
    return len(model.clip.visual.transformer.resblocks)


def cascade_points(n_steps: int, points: int | None) -> list[int]:
    """The cascade steps to run among 1..``n_steps``: all (``points`` None), else ``points`` steps
    evenly spaced from 1 (heads) to ``n_steps`` (everything), both ends always included."""
    if points is None or int(points) >= n_steps:
        return list(range(1, n_steps + 1))
    if int(points) < 2:
        raise ValueError(f"evaluation.sanity.cascade_points must be >= 2 (first and last step), got {points}")
    return sorted({int(round(v)) for v in np.linspace(1, n_steps, int(points))})


def sanity_curve(
    model,
    method: str,
    params: Mapping[str, Any],
    pairs: pd.DataFrame,
    images_u8: np.ndarray,
    rows: np.ndarray,
    batch_size: int,
    seed: int,
    steps: Sequence[int] | None = None,
    keep_maps: dict[str, np.ndarray] | None = None,
    keep_pairs: int = 4,
) -> pd.DataFrame:
    """Cascading randomisation (Adebayo et al. 2018): each pair's map on the trained model against
    its map on copies randomised up to cascade step k (1 = heads and final norms, 1 + j = also the
    top j vision blocks; ``steps`` = the steps to run, default all 1..L+1, see ``cascade_points``).
    Per pair and step: signed Spearman rho (reference only), |rho| and SSIM (both lower = the map
    depends on the weights).

    ``keep_maps``: a dict to fill with the maps of the first ``keep_pairs`` pairs, trained
    (``trained/<pair_id>``) and at each step (``step<k>/<pair_id>``), float16, so the randomisation can
    be seen, not only scored."""
    from .sanity import cascade_labels, randomize_cascading, spearman_maps, ssim

    labels = cascade_labels(model)
    steps = list(range(1, len(labels) + 1)) if steps is None else sorted({int(k) for k in steps})
    reference = _explain_rows(model, method, params, pairs, images_u8, rows, batch_size)
    kept_ids = pairs["pair_id"].iloc[rows[:keep_pairs]].tolist()
    if keep_maps is not None:
        keep_maps.update({f"trained/{p}": reference[i].astype(np.float16) for i, p in enumerate(kept_ids)})
    frames = []
    for k in steps:
        randomized = randomize_cascading(model, k, seed)
        maps = _explain_rows(randomized, method, params, pairs, images_u8, rows, batch_size)
        if keep_maps is not None:
            keep_maps.update({f"step{k}/{p}": maps[i].astype(np.float16) for i, p in enumerate(kept_ids)})
        rho = spearman_maps(reference, maps)  # ranks once; |rho| is abs_spearman of the same maps
        frames.append(
            pd.DataFrame(
                {
                    "pair_id": pairs["pair_id"].iloc[rows].to_numpy(),
                    "method": method,
                    "category": pairs["category"].iloc[rows].to_numpy(),
                    "cascade_step": k,
                    "randomized": labels[k - 1],
                    "blocks_randomized": k - 1,
                    "spearman": rho,
                    "abs_spearman": np.abs(rho),
                    "ssim": ssim(reference, maps),
                }
            )
        )
        del randomized
    return pd.concat(frames, ignore_index=True)


def localisation_summary(maps: np.ndarray, masks: np.ndarray, top_fraction: float) -> dict[str, float]:
    from .localisation import energy_in_box, iou_top_fraction, pointing_game

    return {
        "pointing_game": float(np.nanmean(pointing_game(maps, masks))),
        "energy_in_box": float(np.nanmean(energy_in_box(maps, masks))),
        "iou_top5": float(np.nanmean(iou_top_fraction(maps, masks, top_fraction))),
    }


def confidence_increase(
    model,
    pairs: pd.DataFrame,
    images_u8: np.ndarray,
    rows: np.ndarray,
    maps: np.ndarray,
    broadcast: str,
    batch_size: int,
) -> float:
    from .faithfulness import image_confidence

    hits = []
    for start in range(0, len(rows), batch_size):
        idx = rows[start : start + batch_size]
        imgs = model.preprocess(np.ascontiguousarray(images_u8[idx]))
        tokens = model.tokenize(pairs["phrase"].iloc[idx].tolist())
        s, s2 = image_confidence(
            model, imgs, tokens, torch.from_numpy(maps[start : start + batch_size]), broadcast=broadcast
        )
        hits.append(np.asarray(s2) > np.asarray(s))
    return float(np.concatenate(hits).mean())


def ablation_study(
    model,
    base_params: Mapping[str, Any],
    pairs: pd.DataFrame,
    images_u8: np.ndarray,
    rows: np.ndarray,
    cfg: Mapping[str, Any],
    batch_size: int,
    weight_values: Sequence[float] = (0.0, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0),
) -> pd.DataFrame:
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
        rec = {
            "parameter": name,
            "value": float(value),
            **localisation_summary(maps, masks, frac),
            "img_conf_increase": confidence_increase(model, pairs, images_u8, rows, maps, broadcast, batch_size),
        }
        records.append(rec)
    return pd.DataFrame(records)
