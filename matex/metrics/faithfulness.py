"""Faithfulness (docs/evaluation.md): confidence drop and increase (M2IB's protocol) and deletion /
insertion AUC (Petsiuk et al., RISE, BMVC 2018).

Image side: s = cos(f_I(x), f_T(t)) on the normalised image x, s' on x blended towards a grey fill
by the map (values in [0, 1]; 1 keeps a pixel, 0 replaces it by the fill). M2IB multiplies the
normalised image by the map, which sends a removed pixel to the normalisation mean, a colour
(CLIP: a yellowish grey); here it becomes the grey level mean(mean_c), so masking never adds a
colour cast to a grey radiograph. Text side: s' on the text with its low-scoring tokens replaced by id 0.
Per pair: drop = max(0, s - s') and increase = 1[s' > s]; the x100 and the averaging over pairs
happen in aggregation (``matex.metrics.aggregate``). Deletion / insertion: see ``causal_curves``.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from ..errors import MapError

Broadcast = Literal["full", "first_row"]
DropVariant = Literal["absolute", "relative"]

# The id a removed token gets (open_clip's padding id): the text confidence metric and text ROAR+
# replace tokens by it rather than deleting them.
REMOVED_TOKEN_ID = 0

# How each drop variant should be labelled in a table.
DROP_LABELS = {
    "absolute": "confidence drop, max(0, s - s') (M2IB / pytorch-grad-cam)",
    "relative": "average drop, max(0, s - s') / s (Grad-CAM++)",
}


def masked_input(images: torch.Tensor, maps, broadcast: Broadcast = "full", fill=0.0) -> torch.Tensor:
    """The normalised images (B, 3, H, W) blended towards ``fill`` by the maps (B, H, W):
    x' = x * map + fill * (1 - map), i.e. x * map when fill = 0 (M2IB's code).

    ``fill`` is a normalised value (a float, or a tensor broadcastable to the images, e.g.
    ``grey_fill(model)`` of shape (1, 3, 1, 1)).
    ``full`` (correct): pixel (i, j) of every channel is scaled by map[i, j].
    ``first_row`` reproduces M2IB's public evaluation code, which multiplies the image by the map's
    first row broadcast over the image: every row i of every channel is scaled by map[0, :], so
    pixel (i, j) gets map[0, j] whatever i is. The result depends only on the map's top row, and
    equals ``full`` exactly when all rows of the map are identical.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise MapError(
            f"masked_input: images must be a (B, C, H, W) tensor, got {getattr(images, 'shape', type(images))}"
        )
    weights = torch.as_tensor(np.asarray(maps) if not isinstance(maps, torch.Tensor) else maps)
    weights = weights.to(device=images.device, dtype=images.dtype)
    b, _, h, w = images.shape
    if weights.shape != (b, h, w):
        raise MapError(
            f"masked_input: maps {tuple(weights.shape)} do not match images {tuple(images.shape)}; "
            f"expected ({b}, {h}, {w})"
        )
    if not torch.isfinite(weights).all():
        raise MapError("masked_input: maps are not finite")
    fill = torch.as_tensor(fill, dtype=images.dtype, device=images.device)
    if broadcast == "full":
        keep = weights[:, None, :, :]
    elif broadcast == "first_row":
        keep = weights[:, None, 0:1, :]  # (B, 1, 1, W): row 0 scales every row
    else:
        raise MapError(f"evaluation.confidence.map_broadcast must be 'full' or 'first_row', got {broadcast!r}")
    return images * keep + fill * (1 - keep)  # exact at keep = 1 (x) and at fill = 0 (x * keep)


def confidence_scores(s, s_prime, variant: DropVariant = "absolute") -> dict[str, np.ndarray]:
    """Per-pair ``drop`` and ``increase`` (both float arrays, shape (B,)).

    absolute (default, M2IB): drop = max(0, s - s').
    relative (Grad-CAM++ "average drop"): drop = max(0, s - s') / s; NaN where s <= 0, since a
    cosine similarity can be negative and the ratio then has no meaning.
    increase = 1[s' > s] in both variants.
    """
    s = np.asarray(s, dtype=np.float64)
    s_prime = np.asarray(s_prime, dtype=np.float64)
    if s.shape != s_prime.shape:
        raise MapError(f"confidence_scores: s {s.shape} and s' {s_prime.shape} differ in shape")
    drop = np.maximum(0.0, s - s_prime)
    if variant == "relative":
        with np.errstate(invalid="ignore", divide="ignore"):
            drop = np.where(s > 0, drop / np.where(s > 0, s, 1.0), np.nan)
    elif variant != "absolute":
        raise MapError(f"evaluation.confidence.drop_variant must be 'absolute' or 'relative', got {variant!r}")
    return {"drop": drop, "increase": (s_prime > s).astype(np.float64)}


def grey_fill(model, level: float | None = None) -> torch.Tensor:
    """(1, 3, 1, 1) normalised value of the grey pixel ``level`` (in [0, 1]; default mean(mean_c),
    the grey closest to the normalisation mean): the same value in every channel before
    normalisation, so a pixel set to it is grey."""
    mean = torch.tensor(model.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(model.std, dtype=torch.float32).view(1, 3, 1, 1)
    level = float(mean.mean()) if level is None else float(level)
    return ((level - mean) / std).to(model.device)


def image_confidence(
    model, images: torch.Tensor, tokens: torch.Tensor, maps, broadcast: Broadcast = "full", batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """(s, s') per pair, float64 arrays (B,): similarity on the images and on the map-masked images
    (removed pixels go to ``grey_fill(model)``)."""
    images = images.to(model.device)
    tokens = tokens.to(model.device)
    fill = grey_fill(model)
    s_all, s_masked = [], []
    for start in range(0, images.shape[0], batch_size):
        sl = slice(start, start + batch_size)
        x = images[sl]
        s_all.append(model.similarity(x, tokens[sl]).double().cpu().numpy())
        s_masked.append(model.similarity(masked_input(x, maps[sl], broadcast, fill), tokens[sl]).double().cpu().numpy())
    return np.concatenate(s_all), np.concatenate(s_masked)


def text_keep_tokens(tokens: torch.Tensor, token_maps: Sequence[np.ndarray]) -> torch.Tensor:
    """Tokens (B, ctx) with every word token scoring at or below its text's median set to id 0.

    A text's real tokens are positions 0..EOT (EOT = argmax of the ids, open_clip's pooling rule);
    its map holds one score per real token (a map of length ``ctx`` is cut to the real tokens).
    The median is taken over the map's real-token scores; a token is kept when its score is
    strictly above it, so a constant map keeps no word. SOT and EOT are always kept: open_clip pools
    the text feature at the EOT position (the largest id), so dropping EOT would move the readout to
    another token, and the model never saw a text without SOT. Replacing rather than deleting keeps
    every position, so the positional embeddings of the kept tokens do not change.
    """
    if tokens.ndim != 2 or len(token_maps) != tokens.shape[0]:
        raise MapError(
            f"text_keep_tokens: {tokens.shape[0] if tokens.ndim == 2 else '?'} texts but {len(token_maps)} token maps"
        )
    eot = tokens.argmax(dim=-1).tolist()
    keep = torch.zeros_like(tokens, dtype=torch.bool)
    for i, (scores, e) in enumerate(zip(token_maps, eot)):
        scores = real_token_scores(scores, e, tokens.shape[1], i)
        above = torch.from_numpy(scores > np.median(scores))
        keep[i, : e + 1] = above.to(tokens.device)
        keep[i, 0] = True
        keep[i, e] = True
    return torch.where(keep, tokens, torch.full_like(tokens, REMOVED_TOKEN_ID))


def real_token_scores(scores, eot: int, context_length: int, index: int) -> np.ndarray:
    """Text ``index``'s map as float64 scores of its real tokens SOT..EOT (``eot + 1`` values).

    A map holds one score per real token, or one per context position (then cut to the real
    tokens); anything else, or a non-finite score, is a MapError."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if len(scores) == context_length:
        scores = scores[: eot + 1]
    if len(scores) != eot + 1:
        raise MapError(
            f"text map of text {index} has {len(scores)} scores, expected {eot + 1} (SOT..EOT) "
            f"or {context_length} (context length)"
        )
    if not np.isfinite(scores).all():
        raise MapError(f"text map of text {index} is not finite")
    return scores


def text_confidence(
    model, images: torch.Tensor, tokens: torch.Tensor, token_maps: Sequence[np.ndarray], batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """(s, s') per pair, float64 arrays (B,): similarity with the full text and with the text
    reduced to its above-median tokens (``text_keep_tokens``)."""
    images = images.to(model.device)
    tokens = tokens.to(model.device)
    kept = text_keep_tokens(tokens, token_maps)
    s_all, s_kept = [], []
    for start in range(0, images.shape[0], batch_size):
        sl = slice(start, start + batch_size)
        s_all.append(model.similarity(images[sl], tokens[sl]).double().cpu().numpy())
        s_kept.append(model.similarity(images[sl], kept[sl]).double().cpu().numpy())
    return np.concatenate(s_all), np.concatenate(s_kept)


# ---------------------------------------------------------------- deletion / insertion (RISE)

Fill = Literal["blur", "grey"]


def pair_seed(seed: int, pair_id: str) -> int:
    """The tie-breaking seed of one pair: the same for every method and every batch split."""
    return zlib.crc32(f"{int(seed)}:{pair_id}".encode())


def removal_rank(maps, seeds: Sequence[int]) -> np.ndarray:
    """(B, H*W) int64: each pixel's position in its map's removal order, highest value first.

    Ties are broken by a random permutation seeded per pair (``seeds``), never by row-major index:
    a constant map is removed in a random order, i.e. it scores the random-order expectation."""
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 3 or len(seeds) != maps.shape[0]:
        raise MapError(
            f"removal_rank: maps must be (B, H, W) with one seed per map, got {maps.shape} and {len(seeds)} seeds"
        )
    if not np.isfinite(maps).all():
        raise MapError("removal_rank: maps are not finite")
    flat = maps.reshape(maps.shape[0], -1)
    rank = np.empty(flat.shape, dtype=np.int64)
    for i, (values, seed) in enumerate(zip(flat, seeds)):
        perm = np.random.default_rng(int(seed)).permutation(len(values))
        order = perm[np.argsort(-values[perm], kind="stable")]
        rank[i, order] = np.arange(len(values))
    return rank


def gaussian_blur(grey: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B, H, W) grey images blurred by a separable Gaussian (std ``sigma`` pixels, radius 3 sigma,
    reflected borders)."""
    if sigma <= 0:
        return grey.clone()
    radius = max(1, min(int(np.ceil(3 * sigma)), min(grey.shape[-2:]) - 1))
    x = torch.arange(-radius, radius + 1, dtype=grey.dtype, device=grey.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    out = grey[:, None]
    out = torch.nn.functional.conv2d(
        torch.nn.functional.pad(out, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1)
    )
    out = torch.nn.functional.conv2d(
        torch.nn.functional.pad(out, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1)
    )
    return out[:, 0]


def fill_images(
    model, images: torch.Tensor, fill: Fill = "blur", blur_sigma: float = 5.0, grey_level: float | None = None
) -> torch.Tensor:
    """The substrate removed pixels are replaced with, normalised like ``images`` (B, 3, H, W).

    ``blur``: a Gaussian-blurred copy of the image (RISE's substrate); ``grey``: the constant grey
    ``grey_level`` (default mean(mean_c), see ``grey_fill``). Either is computed on the image's
    grey value (mean over channels before normalisation) and written to all channels alike, so the
    substrate is grey-scale whatever the input."""
    mean = torch.tensor(model.mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(model.std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    if fill == "blur":
        grey = gaussian_blur((images * std + mean).mean(1), float(blur_sigma))
    elif fill == "grey":
        level = float(mean.mean()) if grey_level is None else float(grey_level)
        grey = torch.full((images.shape[0], *images.shape[2:]), level, dtype=images.dtype, device=images.device)
    else:
        raise MapError(f"evaluation.deletion.fill must be 'blur' or 'grey', got {fill!r}")
    return (grey[:, None] - mean) / std


def causal_curves(
    model,
    images: torch.Tensor,
    tokens: torch.Tensor,
    maps,
    seeds: Sequence[int],
    steps: int = 16,
    fill: Fill = "blur",
    blur_sigma: float = 5.0,
    grey_level: float | None = None,
    batch_size: int = 64,
    s_image: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Deletion and insertion curves (Petsiuk et al. 2018, section 4.1), float64 (B, steps + 1).

    Point k is the similarity s after removing (deletion: from the image; insertion: from the
    substrate, i.e. inserting into it) the round(k / steps * H * W) highest pixels of the map, in
    ``removal_rank`` order. Removed pixels take the substrate's value (``fill_images``). Both
    curves share their end points (the image, the substrate); every intermediate image of every
    pair and both modes is scored in batches of ``batch_size`` images. ``s_image``: the
    similarity of the untouched pairs when the caller has it (saves one pass per pair).
    """
    if int(steps) < 1:
        raise MapError(f"evaluation.deletion.steps must be >= 1, got {steps}")
    images = images.to(model.device)
    tokens = tokens.to(model.device)
    b, _, h, w = images.shape
    rank = torch.from_numpy(removal_rank(maps, seeds)).to(model.device)
    if rank.shape != (b, h * w):
        raise MapError(f"causal_curves: maps do not match images {tuple(images.shape)}")
    substrate = fill_images(model, images, fill, blur_sigma, grey_level)
    counts = torch.tensor([round(k / steps * h * w) for k in range(steps + 1)], device=model.device)
    if s_image is None:
        s_image = model.similarity(images, tokens).double().cpu().numpy()
    s_fill = model.similarity(substrate, tokens).double().cpu().numpy()
    curves = {"deletion": np.empty((b, steps + 1)), "insertion": np.empty((b, steps + 1))}
    curves["deletion"][:, 0], curves["deletion"][:, -1] = s_image, s_fill
    curves["insertion"][:, 0], curves["insertion"][:, -1] = s_fill, s_image
    # one job = (pair, mode, k) for the intermediate points; mode 0 = deletion, 1 = insertion
    jobs = [(i, m, k) for i in range(b) for m in (0, 1) for k in range(1, steps)]
    score = _scorer(model, tokens)
    for start in range(0, len(jobs), batch_size):
        pair, mode, k = (torch.tensor(c, device=model.device) for c in zip(*jobs[start : start + batch_size]))
        removed = rank[pair] < counts[k][:, None]  # (C, H*W)
        from_image = (removed ^ (mode == 0)[:, None]).view(-1, 1, h, w)  # deletion keeps the unremoved
        x = torch.where(from_image, images[pair], substrate[pair])
        s = score(x, pair).double().cpu().numpy()
        for (i, m, kk), value in zip(jobs[start : start + batch_size], s):
            curves["deletion" if m == 0 else "insertion"][i, kk] = value
    return curves


def _scorer(model, tokens: torch.Tensor):
    """score(x, pair) = s of images x with the texts of ``pair``; an open_clip model's text features
    are computed once (the image tower is the cost), anything else goes through ``similarity``."""
    clip = getattr(model, "clip", None)
    if clip is None:
        return lambda x, pair: model.similarity(x, tokens[pair])
    with torch.no_grad():
        text = torch.nn.functional.normalize(clip.encode_text(tokens), dim=-1)

    @torch.no_grad()
    def score(x: torch.Tensor, pair: torch.Tensor) -> torch.Tensor:
        return (torch.nn.functional.normalize(clip.encode_image(x), dim=-1) * text[pair]).sum(-1)

    return score


def curve_auc(curves: np.ndarray) -> np.ndarray:
    """Per-row area under a curve sampled at fractions 0, 1/n, ..., 1 (trapezoid rule), (B,)."""
    curves = np.asarray(curves, dtype=np.float64)
    n = curves.shape[-1] - 1
    return (curves.sum(-1) - 0.5 * (curves[..., 0] + curves[..., -1])) / n


def deletion_auc(
    model, images: torch.Tensor, tokens: torch.Tensor, maps, seeds: Sequence[int], **options
) -> np.ndarray:
    """Deletion AUC per pair (Petsiuk et al., RISE, BMVC 2018): area under s as the map's top pixels
    are replaced by the substrate; lower = the map finds what the score needs. Options: see
    ``causal_curves``."""
    return curve_auc(causal_curves(model, images, tokens, maps, seeds, **options)["deletion"])


def insertion_auc(
    model, images: torch.Tensor, tokens: torch.Tensor, maps, seeds: Sequence[int], **options
) -> np.ndarray:
    """Insertion AUC per pair (Petsiuk et al. 2018): area under s as the map's top pixels are put
    back into the substrate; higher = the map's top pixels alone restore the score."""
    return curve_auc(causal_curves(model, images, tokens, maps, seeds, **options)["insertion"])
