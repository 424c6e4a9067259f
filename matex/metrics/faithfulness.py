"""Confidence drop and increase (M2IB's protocol, DESIGN.md section 5).

Image side: s = cos(f_I(x), f_T(t)) on the normalised image x, s' on x multiplied by the map
(values in [0, 1]; 1 keeps a pixel, 0 sends it to the normalised value 0, i.e. the CLIP mean).
Text side: s' on the text with its low-scoring tokens replaced by id 0.
Per pair: drop = max(0, s - s') and increase = 1[s' > s]; the x100 and the averaging over pairs
happen in aggregation (``matex.metrics.aggregate``).
"""
from __future__ import annotations

from typing import Literal, Sequence

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


def masked_input(images: torch.Tensor, maps, broadcast: Broadcast = "full") -> torch.Tensor:
    """The normalised images (B, 3, H, W) multiplied by the maps (B, H, W).

    ``full`` (correct): pixel (i, j) of every channel is scaled by map[i, j].
    ``first_row`` reproduces M2IB's public evaluation code, which multiplies the image by the map's
    first row broadcast over the image: every row i of every channel is scaled by map[0, :], so
    pixel (i, j) gets map[0, j] whatever i is. The result depends only on the map's top row, and
    equals ``full`` exactly when all rows of the map are identical.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise MapError(f"masked_input: images must be a (B, C, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    weights = torch.as_tensor(np.asarray(maps) if not isinstance(maps, torch.Tensor) else maps)
    weights = weights.to(device=images.device, dtype=images.dtype)
    b, _, h, w = images.shape
    if weights.shape != (b, h, w):
        raise MapError(f"masked_input: maps {tuple(weights.shape)} do not match images {tuple(images.shape)}; "
                       f"expected ({b}, {h}, {w})")
    if not torch.isfinite(weights).all():
        raise MapError("masked_input: maps are not finite")
    if broadcast == "full":
        return images * weights[:, None, :, :]
    if broadcast == "first_row":
        return images * weights[:, None, 0:1, :]  # (B, 1, 1, W): row 0 scales every row
    raise MapError(f"evaluation.confidence.map_broadcast must be 'full' or 'first_row', got {broadcast!r}")


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


def image_confidence(model, images: torch.Tensor, tokens: torch.Tensor, maps, broadcast: Broadcast = "full",
                     batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(s, s') per pair, float64 arrays (B,): similarity on the images and on the map-masked images."""
    images = images.to(model.device)
    tokens = tokens.to(model.device)
    s_all, s_masked = [], []
    for start in range(0, images.shape[0], batch_size):
        sl = slice(start, start + batch_size)
        x = images[sl]
        s_all.append(model.similarity(x, tokens[sl]).double().cpu().numpy())
        s_masked.append(model.similarity(masked_input(x, maps[sl], broadcast), tokens[sl]).double().cpu().numpy())
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
        raise MapError(f"text_keep_tokens: {tokens.shape[0] if tokens.ndim == 2 else '?'} texts but "
                       f"{len(token_maps)} token maps")
    eot = tokens.argmax(dim=-1).tolist()
    keep = torch.zeros_like(tokens, dtype=torch.bool)
    for i, (scores, e) in enumerate(zip(token_maps, eot)):
        scores = real_token_scores(scores, e, tokens.shape[1], i)
        above = torch.from_numpy(scores > np.median(scores))
        keep[i, :e + 1] = above.to(tokens.device)
        keep[i, 0] = True
        keep[i, e] = True
    return torch.where(keep, tokens, torch.full_like(tokens, REMOVED_TOKEN_ID))


def real_token_scores(scores, eot: int, context_length: int, index: int) -> np.ndarray:
    """Text ``index``'s map as float64 scores of its real tokens SOT..EOT (``eot + 1`` values).

    A map holds one score per real token, or one per context position (then cut to the real
    tokens); anything else, or a non-finite score, is a MapError."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if len(scores) == context_length:
        scores = scores[:eot + 1]
    if len(scores) != eot + 1:
        raise MapError(f"text map of text {index} has {len(scores)} scores, expected {eot + 1} (SOT..EOT) "
                       f"or {context_length} (context length)")
    if not np.isfinite(scores).all():
        raise MapError(f"text map of text {index} is not finite")
    return scores


def text_confidence(model, images: torch.Tensor, tokens: torch.Tensor, token_maps: Sequence[np.ndarray],
                    batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
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
