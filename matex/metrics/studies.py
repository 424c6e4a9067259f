"""Studies that need the model, not just cached maps: the cascading-randomisation sanity check
(Adebayo et al. 2018; |Spearman rho| and SSIM per cascade step, over every tensor of both towers) and MATEX's fusion-weight
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
    from ..maps.store import explain_batch, training_boxes_of

    out = []
    boxes = training_boxes_of(pairs, model.geometry.size)  # read by mean_box / category_box only
    for start in range(0, len(rows), batch_size):
        idx = rows[start : start + batch_size]
        imgs = model.preprocess(np.ascontiguousarray(images_u8[idx]))
        res = explain_batch(model, method, params, pairs.iloc[idx], imgs, boxes)
        out.append(res.image.detach().float().cpu().numpy())
    return np.concatenate(out)


def cascade_points(n_image: int, n_text: int, points: int | None) -> list[int]:
    """The cascade steps to run (image steps 1..``n_image``, text steps ``n_image``+1..``n_image``+``n_text``,
    then "full"): all when ``points`` is None; else ``points`` steps: always "full" (last, the step
    the table reads), from 3 points also the end of the text cascade (the whole text tower), and
    the rest evenly spaced over the image cascade with both ends kept (one point: its end, the
    whole image tower). Demo (4): image top, whole image tower, whole text tower, full."""
    full = n_image + n_text + 1
    if points is None or int(points) >= full:
        return list(range(1, full + 1))
    if int(points) < 2:
        raise ValueError(f"evaluation.sanity.cascade_points must be >= 2 (an image step and 'full'), got {points}")
    n_img_points = int(points) - 1 - (int(points) >= 3)
    if n_img_points == 1:
        image = [n_image]
    else:
        image = {int(round(v)) for v in np.linspace(1, n_image, min(n_img_points, n_image))}
    text = [n_image + n_text] if int(points) >= 3 and n_text else []
    return sorted({*image, *text, full})


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
    its map on copies randomised up to cascade step k (``matex.metrics.cascade``: the image tower's
    groups top down, then the text tower's, then both towers = "full"; ``steps`` = the steps to run,
    default all, see ``cascade_points``). Per pair and step: signed Spearman rho (reference only),
    |rho| and SSIM (both lower = the map depends on the weights); ``patient_id`` is carried when
    the pairs have it, for patient-bootstrap intervals.

    ``keep_maps``: a dict to fill with the maps of the first ``keep_pairs`` pairs, trained
    (``trained/<pair_id>``) and at each step (``step<k>/<pair_id>``), float16, so the randomisation can
    be seen, not only scored."""
    from .sanity import cascade_plan, randomize_cascading, reinitialised_state, spearman_maps, ssim

    plan = cascade_plan(model)
    all_steps = plan.steps
    steps = list(range(1, len(all_steps) + 1)) if steps is None else sorted({int(k) for k in steps})
    fresh = reinitialised_state(model.clip, seed)  # drawn once: the cascade is nested
    reference = _explain_rows(model, method, params, pairs, images_u8, rows, batch_size)
    kept_ids = pairs["pair_id"].iloc[rows[:keep_pairs]].tolist()
    if keep_maps is not None:
        keep_maps.update({f"trained/{p}": reference[i].astype(np.float16) for i, p in enumerate(kept_ids)})
    frames = []
    for k in steps:
        randomized = randomize_cascading(model, k, seed, fresh=fresh)
        maps = _explain_rows(randomized, method, params, pairs, images_u8, rows, batch_size)
        if keep_maps is not None:
            keep_maps.update({f"step{k}/{p}": maps[i].astype(np.float16) for i, p in enumerate(kept_ids)})
        rho = spearman_maps(reference, maps)  # ranks once; |rho| is abs_spearman of the same maps
        step = all_steps[k - 1]
        frame = pd.DataFrame(
            {
                "pair_id": pairs["pair_id"].iloc[rows].to_numpy(),
                "method": method,
                "category": pairs["category"].iloc[rows].to_numpy(),
                "cascade_step": k,
                "tower": step.tower,
                "randomized": step.label,
                "n_tensors_randomized": len(step.names),
                "spearman": rho,
                "abs_spearman": np.abs(rho),
                "ssim": ssim(reference, maps),
            }
        )
        if "patient_id" in pairs.columns:
            frame.insert(1, "patient_id", pairs["patient_id"].iloc[rows].astype(str).to_numpy())
        frames.append(frame)
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
