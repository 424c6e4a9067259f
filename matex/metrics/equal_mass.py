"""Equal-mass confidence drop and increase (docs/evaluation.md): M2IB's protocol on maps that carry
only the attribution's pixel order, so a strictly increasing transform of a map cannot change them.

M2IB's confidence drop / increase multiply the image by the map itself, so they follow the map's
contrast and mean value as much as its order: raising a map to the power 0.25 (same order) moves a
method's drop severalfold. Two order-only versions are computed beside it, from the same similarity
s on the untouched pair and the same grey fill (``faithfulness.masked_input``):

- ``rank``: the map replaced by its normalised average ranks, (rank - 1) / (N - 1) in [0, 1]
  (tied values share their average rank, so a constant map becomes 0.5 everywhere);
- ``top{p}``: a binary map keeping exactly ceil(p % of the pixels) highest ones (ties at the
  threshold broken by a random order seeded per pair), every other pixel removed.

Only exactly equal values tie here (``localisation.tie_groups`` with rtol 0), which a strictly
increasing transform preserves, so the invariance is exact; the sort is shared with the
localisation metrics' tie groups.

All variants of a batch of pairs are scored in one batched pass through the image tower.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import MapError
from .faithfulness import Broadcast, DropVariant, _scorer, confidence_scores, grey_fill, masked_input
from .localisation import group_average_ranks, tie_groups, top_k_count


def rank_normalise(maps, groups: np.ndarray | None = None) -> np.ndarray:
    """(B, H, W) float32: each map's average ranks, scaled to [0, 1] by (rank - 1) / (N - 1).

    Exactly equal values share their average rank, so a constant map becomes 0.5 everywhere.
    Depends only on the order of the values: a strictly increasing transform of a map leaves it
    unchanged. ``groups``: the maps' exact tie groups (``tie_groups(flat, rtol=0)``) when the
    caller has them."""
    maps = np.asarray(maps)
    if maps.ndim != 3 or not np.isfinite(maps).all():
        raise MapError(f"rank_normalise: maps must be finite (B, H, W), got shape {maps.shape}")
    b, h, w = maps.shape
    groups = tie_groups(maps.reshape(b, -1), rtol=0.0) if groups is None else groups
    ranks = group_average_ranks(groups)
    return ((ranks - 1.0) / max(h * w - 1, 1)).reshape(b, h, w).astype(np.float32)


def top_fraction_keep(
    maps, fractions: Sequence[float], seeds: Sequence[int], groups: np.ndarray | None = None
) -> np.ndarray:
    """(K, B, H, W) float32 binary keep-maps: 1 on exactly ceil(f * H * W) highest pixels of each
    map for each fraction f. Pixels exactly tied at the threshold are chosen by a random key
    seeded per pair (``seeds``), the same key for every fraction, so the kept sets are nested."""
    maps = np.asarray(maps)
    if maps.ndim != 3 or len(seeds) != len(maps):
        raise MapError(f"top_fraction_keep: maps {maps.shape} need one seed per map, got {len(seeds)}")
    b, h, w = maps.shape
    groups = tie_groups(maps.reshape(b, -1), rtol=0.0) if groups is None else groups
    keep = np.zeros((len(fractions), b, h * w), dtype=np.float32)
    for i, (g, seed) in enumerate(zip(groups, seeds)):
        key = np.random.default_rng(int(seed)).random(h * w)
        for j, f in enumerate(fractions):
            k = top_k_count(float(f), h * w)
            kth = np.partition(g, h * w - k)[h * w - k]
            above = g > kth
            tied = np.flatnonzero(g == kth)
            r = k - int(above.sum())
            chosen = tied if r >= len(tied) else tied[np.argpartition(key[tied], r - 1)[:r]]
            keep[j, i, above] = 1.0
            keep[j, i, chosen] = 1.0
    return keep.reshape(len(fractions), b, h, w)


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
    groups: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """s' (B,) of every equal-mass variant (``groups``: exact tie groups, see :func:`rank_normalise`), keyed ``rank`` / ``top{p}``: the similarity of the
    images masked by the rank-normalised map and by each top-k keep-map (grey fill, as M2IB's
    protocol). One image-tower pass per variant and pair, batched over variants and pairs."""
    if len({fraction_label(f) for f in fractions}) != len(fractions):
        raise MapError(f"evaluation.confidence.top_fractions {list(fractions)} repeat a fraction")
    maps = np.asarray(maps)
    groups = tie_groups(maps.reshape(len(maps), -1), rtol=0.0) if groups is None else groups
    keeps = [rank_normalise(maps, groups)] if rank else []
    keeps += list(top_fraction_keep(maps, fractions, seeds, groups)) if len(fractions) else []
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
    groups: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Per-pair ``img_conf_drop_rank`` / ``img_conf_increase_rank`` (when ``rank``) and
    ``img_conf_drop_top{p}`` / ``img_conf_increase_top{p}`` for every kept fraction, (B,) each,
    from ``s`` (the similarity of the untouched pairs, already computed by ``image_confidence``)
    and :func:`equal_mass_similarity`."""
    out = {}
    masked = equal_mass_similarity(model, images, tokens, maps, seeds, fractions, rank, broadcast, batch_size, groups)
    for name, s_prime in masked.items():
        sc = confidence_scores(np.asarray(s), s_prime, variant=variant)
        out[f"img_conf_drop_{name}"] = sc["drop"]
        out[f"img_conf_increase_{name}"] = sc["increase"]
    return out
