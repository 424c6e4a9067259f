"""ROAD, RemOve And Debias (Rong, Leemann, Borisov, Kasneci, Kasneci: "A Consistent and Efficient
Evaluation Strategy for Attribution Methods", ICML 2022): remove pixels in the map's order, fill them
by noisy linear imputation (:mod:`matex.roar.imputation`, the fill ROAR uses too) and measure the
model again, without retraining.

The imputation leaves no flat patch whose shape would tell the model where the pixels went (the
"class information leakage" through the mask that Rong et al. measure for a constant fill), so the
drop in similarity reflects what the removed pixels carried. Two orders, at every k of the ROAR grid
(``roar.retrain.fractions``):

- MoRF, most relevant first: the top ceil(k N) pixels of the map are removed;
- LeRF, least relevant first: the bottom ceil(k N) pixels are removed.

Per pair, with s = cos(f_I(x), f_T(t)) on the intact image and s_k on the imputed one,

    road_morf = mean_k (s - s_k^MoRF),   road_lerf = mean_k (s - s_k^LeRF),   road_gap = road_morf - road_lerf.

A faithful map has a large MoRF drop (its top pixels carry the match) and a small LeRF drop (its
bottom pixels do not): road_gap > 0. Rong et al. draw the MoRF and LeRF accuracy curves against k;
the mean over the k values is our per-pair summary of each curve (similarity drop, not accuracy:
CLIP pairs have no class decision). Ties in a map are broken by one seeded random order per pair,
shared by both directions (LeRF ranks the negated map), so a constant map removes the same pixels
in both orders: road_morf = road_lerf, road_gap = 0 exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import MapError
from ..roar.imputation import DEFAULT_NOISE, noisy_linear_imputation
from .faithfulness import removal_rank
from .localisation import top_k_count


def road_curves(
    model,
    images_u8: np.ndarray,
    tokens: torch.Tensor,
    maps: np.ndarray,
    fractions: Sequence[float],
    seeds: Sequence[int],
    noise: float = DEFAULT_NOISE,
) -> dict[str, np.ndarray]:
    """Similarities of each pair on its intact image (``s``, (B,)) and with the top (``morf``) or
    bottom (``lerf``) ceil(k N) pixels imputed, (B, K) for the K ``fractions``. ``images_u8``: the
    model's (B, S, S) uint8 inputs; ``maps``: (B, S, S); ``seeds``: one per pair (ties and noise)."""
    maps = np.asarray(maps, dtype=np.float64)
    images_u8 = np.asarray(images_u8)
    if maps.shape != images_u8.shape or maps.ndim != 3:
        raise MapError(f"ROAD: maps {maps.shape} and images {images_u8.shape} must be equal (B, S, S)")
    if not len(fractions):
        raise MapError("ROAD: no removal fractions (roar.retrain.fractions is empty)")
    b, n = len(maps), maps.shape[1] * maps.shape[2]
    orders = {"morf": removal_rank(maps, seeds), "lerf": removal_rank(-maps, seeds)}
    with torch.no_grad():
        s = model.similarity(model.preprocess(np.ascontiguousarray(images_u8)), tokens).double().cpu().numpy()
        out = {"s": s}
        for name, rank in orders.items():
            sims = np.empty((b, len(fractions)))
            for j, k in enumerate(fractions):
                removed = (rank < top_k_count(float(k), n)).reshape(maps.shape)
                imputed = noisy_linear_imputation(images_u8, removed, seeds=seeds, noise=noise)
                sims[:, j] = model.similarity(model.preprocess(imputed), tokens).double().cpu().numpy()
            out[name] = sims
    return out


def road_morf(curves: dict[str, np.ndarray]) -> np.ndarray:
    """Mean similarity drop over k when the map's most relevant pixels are imputed (higher = the
    top pixels carry the match). Rong et al. 2022, MoRF order."""
    return (curves["s"][:, None] - curves["morf"]).mean(axis=1)


def road_lerf(curves: dict[str, np.ndarray]) -> np.ndarray:
    """Mean similarity drop over k when the map's least relevant pixels are imputed (lower = the
    bottom pixels do not matter). Rong et al. 2022, LeRF order."""
    return (curves["s"][:, None] - curves["lerf"]).mean(axis=1)


def road_gap(curves: dict[str, np.ndarray]) -> np.ndarray:
    """road_morf - road_lerf: > 0 when the map orders pixels by what the model uses; 0 for a
    constant map; < 0 for a map that ranks the relevant pixels last."""
    return road_morf(curves) - road_lerf(curves)


FULL_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)  # ROAR's k grid (Hooker et al. 2019) when no config gives one


def road_columns(
    model, images_u8: np.ndarray, tokens: torch.Tensor, maps: np.ndarray, seeds: Sequence[int], cfg
) -> dict[str, np.ndarray]:
    """The per-pair ROAD columns (``road_morf``, ``road_lerf``, ``road_gap``) at ROAR's k values
    (``roar.retrain.fractions``) with ROAR's imputation noise (``roar.imputation_noise``).

    ``roar.road_fraction`` < 1 scores only that share of the pairs (a reduced protocol for a time
    budget; the others get NaN): a pair is in when its seed (a hash of the config seed and the pair
    id, the same for every method) falls in the lowest ``road_fraction`` of the hash range, so every
    method is scored on the same pairs."""
    roar = cfg.get("roar") or {}
    fractions = (roar.get("retrain") or {}).get("fractions") or FULL_FRACTIONS
    noise = float(roar.get("imputation_noise", DEFAULT_NOISE))
    share = float(roar.get("road_fraction", 1.0))
    keep = np.array([(int(q) % 10_000) < share * 10_000 for q in seeds], dtype=bool)
    out = {name: np.full(len(maps), np.nan) for name in ("road_morf", "road_lerf", "road_gap")}
    if not keep.any():
        return out
    sub = [q for q, k in zip(seeds, keep) if k]
    curves = road_curves(
        model,
        np.ascontiguousarray(np.asarray(images_u8)[keep]),
        tokens[torch.from_numpy(keep).to(tokens.device)] if tokens is not None else None,
        np.asarray(maps)[keep],
        [float(k) for k in fractions],
        sub,
        noise,
    )
    for name, fn in (("road_morf", road_morf), ("road_lerf", road_lerf), ("road_gap", road_gap)):
        out[name][keep] = fn(curves)
    return out
