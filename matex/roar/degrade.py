"""ROAR+ (Hooker et al. 2019, as used by M2IB and MATEX): remove the top-k % pixels of each map
(filled as ``roar.fill`` says: ROAD's noisy linear imputation by default) from the training images (image side) or the top-k % word tokens of each token map from the
training texts (text side) and fine-tune; a method whose maps point at what the model needs makes
the retrained model worse on untouched validation pairs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import MapError

# The text confidence metric's conventions: removed tokens become id 0, maps cover SOT..EOT.
from ..metrics.faithfulness import REMOVED_TOKEN_ID, real_token_scores

# One definition of "the top k %" (exact ceil count, stable tie-breaking) for ROAR+ and IoU@k.
from ..metrics.localisation import top_fraction_masks, top_k_count
from .imputation import FillSpec, as_fill


def degrade_images(
    images_u8: np.ndarray, maps: np.ndarray, fraction: float, fill: float | FillSpec, seed: int = 0
) -> np.ndarray:
    """Fill each image's top-``fraction`` pixels (by its map): ``fill`` is a
    :class:`~matex.roar.imputation.FillSpec` (``roar.fill``, default ROAD's noisy linear
    imputation; ``seed`` draws its noise) or a number, the level of a grey fill (the training set's
    per-channel mean: grey-scale radiographs, one channel replicated)."""
    if images_u8.shape != maps.shape:
        raise ValueError(f"images {images_u8.shape} and maps {maps.shape} differ in shape")
    return as_fill(fill).apply(images_u8, top_fraction_masks(maps, fraction), seed)


def degrade_tokens(tokens: torch.Tensor, token_maps: Sequence[np.ndarray], fraction: float) -> torch.Tensor:
    """Tokens (B, ctx) with each text's top ceil(``fraction`` x n_words) word tokens (by its token
    map) replaced by id 0, the id the text confidence metric uses; a new tensor.

    Word tokens are positions 1..EOT-1 (EOT = argmax of the ids, open_clip's pooling rule). SOT and
    EOT are never removed: open_clip reads the text feature at EOT, and the model never saw a text
    without SOT. A map holds one score per real token SOT..EOT, or one per context position
    (``matex.metrics.faithfulness.text_keep_tokens``'s convention); only its word scores rank.
    The count is rounded up because phrases are short (3-6 words): 10 % of 5 words rounded to the
    nearest integer removes nothing, so every text with a word loses at least one. Ties go to the
    earlier position (stable sort), so the result is deterministic. A text without words is kept.
    """
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2:
        raise MapError(
            f"degrade_tokens: tokens must be a (B, ctx) tensor, got {getattr(tokens, 'shape', type(tokens))}"
        )
    if len(token_maps) != tokens.shape[0]:
        raise MapError(f"degrade_tokens: {tokens.shape[0]} texts but {len(token_maps)} token maps")
    top_k_count(fraction, 1)  # a fraction outside (0, 1] is a MapError even when no text has words
    out = tokens.clone()
    for i, e in enumerate(tokens.argmax(dim=-1).tolist()):
        words = real_token_scores(token_maps[i], e, tokens.shape[1], i)[1:e]
        if len(words) == 0:
            continue
        top = np.argsort(-words, kind="stable")[: top_k_count(fraction, len(words))]
        out[i, torch.from_numpy(top + 1)] = REMOVED_TOKEN_ID
    return out


def random_token_maps(tokens: torch.Tensor, seed: int) -> list[np.ndarray]:
    """The text random-removal control: one uniform score per real token (SOT..EOT) of each text, seeded."""
    rng = np.random.default_rng(seed)
    return [rng.random(e + 1, dtype=np.float32) for e in tokens.argmax(dim=-1).tolist()]


def roar_plus(loss_degraded: float, loss_clean: float) -> float:
    """ROAR+ = 100 (L_val(theta_deg) - L_val(theta_clean)) / L_val(theta_clean)."""
    return 100.0 * (loss_degraded - loss_clean) / loss_clean
