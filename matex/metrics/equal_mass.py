"""Equal-mass confidence drop and increase (docs/evaluation.md): M2IB's protocol on maps that carry
only the attribution's pixel order, so a strictly increasing transform of a map cannot change them.

M2IB's confidence drop / increase multiply the image by the map itself, so they follow the map's
contrast and mean value as much as its order: raising a map to the power 0.25 (same order) moves a
method's drop severalfold. Two order-only versions are computed beside it, from the same similarity
s on the untouched pair and the same grey fill (``faithfulness.masked_input``):

- ``rank``: the map replaced by its normalised average ranks, (rank - 1) / (N - 1) in [0, 1]
  (tied values share their average rank, so a constant map becomes 0.5 everywhere);
- ``top{p}``: a binary map keeping exactly ceil(p % of the pixels) highest ones (ties broken by a
  random order seeded per pair, ``faithfulness.removal_rank``), every other pixel removed.

All variants of a batch of pairs are scored in one batched pass through the image tower.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.stats import rankdata

from ..errors import MapError
from .faithfulness import Broadcast, DropVariant, _scorer, confidence_scores, grey_fill, masked_input, removal_rank
from .localisation import top_k_count


def rank_normalise(maps) -> np.ndarray:
    """(B, H, W) float32: each map's average ranks (ties share theirs), scaled to [0, 1] by
    (rank - 1) / (N - 1). Depends only on the order of the values, so any strictly increasing
    transform of a map leaves it unchanged."""
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 3 or not np.isfinite(maps).all():
        raise MapError(f"rank_normalise: maps must be finite (B, H, W), got shape {maps.shape}")
    b, h, w = maps.shape
    ranks = rankdata(maps.reshape(b, -1), method="average", axis=1)
    return ((ranks - 1.0) / max(h * w - 1, 1)).reshape(b, h, w).astype(np.float32)


def top_fraction_keep(maps, fractions: Sequence[float], seeds: Sequence[int]) -> np.ndarray:
    """(K, B, H, W) float32 binary keep-maps: 1 on exactly ceil(f * H * W) highest pixels of each
    map for each fraction f, ties broken by ``removal_rank``'s seeded random order."""
    maps = np.asarray(maps)
    b, h, w = maps.shape
    rank = removal_rank(maps, seeds).reshape(b, h, w)
    return np.stack([(rank < top_k_count(float(f), h * w)).astype(np.float32) for f in fractions])


def fraction_label(fraction: float) -> str:
    """Column suffix of a kept fraction: 0.05 -> 'top5', 0.125 -> 'top12.5'."""
    pct = round(float(fraction) * 100, 6)
    return f"top{int(pct)}" if pct == int(pct) else f"top{pct:g}"


def equal_mass_similarity(
    model,
    images: torch.Tensor,
    tokens: torch.Tensor,
    maps,
    seeds: Sequence[int],
    fractions: Sequence[float] = (0.05, 0.10, 0.25, 0.50),
    rank: bool = True,
    broadcast: Broadcast = "full",
    batch_size: int = 64,
) -> dict[str, np.ndarray]:
    """s' (B,) of every equal-mass variant, keyed ``rank`` / ``top{p}``: the similarity of the
    images masked by the rank-normalised map and by each top-k keep-map (grey fill, as M2IB's
    protocol). One image-tower pass per variant and pair, batched over variants and pairs."""
    if len({fraction_label(f) for f in fractions}) != len(fractions):
        raise MapError(f"evaluation.confidence.top_fractions {list(fractions)} repeat a fraction")
    keeps = [rank_normalise(maps)] if rank else []
    keeps += list(top_fraction_keep(maps, fractions, seeds)) if len(fractions) else []
    names = (["rank"] if rank else []) + [fraction_label(f) for f in fractions]
    if not keeps:
        return {}
    images = images.to(model.device)
    keep = torch.from_numpy(np.stack(keeps)).to(model.device)  # (V, B, H, W)
    fill = grey_fill(model)
    score = _scorer(model, tokens.to(model.device))
    jobs = [(v, i) for v in range(len(keeps)) for i in range(images.shape[0])]
    s_masked = np.empty((len(keeps), images.shape[0]))
    for start in range(0, len(jobs), batch_size):
        v, i = (torch.tensor(c, device=model.device) for c in zip(*jobs[start : start + batch_size]))
        x = masked_input(images[i], keep[v, i], broadcast, fill)
        s_masked[v.cpu().numpy(), i.cpu().numpy()] = score(x, i).double().cpu().numpy()
    return dict(zip(names, s_masked))


def equal_mass_confidence(
    model,
    images: torch.Tensor,
    tokens: torch.Tensor,
    maps,
    s: np.ndarray,
    seeds: Sequence[int],
    fractions: Sequence[float] = (0.05, 0.10, 0.25, 0.50),
    rank: bool = True,
    broadcast: Broadcast = "full",
    variant: DropVariant = "absolute",
    batch_size: int = 64,
) -> dict[str, np.ndarray]:
    """Per-pair ``img_conf_drop_rank`` / ``img_conf_increase_rank`` (when ``rank``) and
    ``img_conf_drop_top{p}`` / ``img_conf_increase_top{p}`` for every kept fraction, (B,) each,
    from ``s`` (the similarity of the untouched pairs, already computed by ``image_confidence``)
    and :func:`equal_mass_similarity`."""
    out = {}
    masked = equal_mass_similarity(model, images, tokens, maps, seeds, fractions, rank, broadcast, batch_size)
    for name, s_prime in masked.items():
        sc = confidence_scores(np.asarray(s), s_prime, variant=variant)
        out[f"img_conf_drop_{name}"] = sc["drop"]
        out[f"img_conf_increase_{name}"] = sc["increase"]
    return out
