"""NIB, the Narrowing Information Bottleneck (Zhu, Jin, Zhang, Yang, Huang, Zhou, Chen, ICLR 2025,
arXiv 2502.14889; docs/fidelity.md): M2IB's successor without noise, without a β and without an
optimiser.

Where M2IB learns gates λ that mix the tokens h after a block with noise, NIB narrows a
deterministic bottleneck Z = λ·h uniformly from λ = 0 (nothing passes) to λ = 1 (everything
passes) and accumulates, per token and feature, how much the score gains on the way:

    A = Σ_{k=1..n} h ⊙ ∂S/∂Z |_{Z = (k/n)·h} · 1/n          (n = ``steps``, the authors' num_steps = 10)

a right Riemann sum of the path integral ∫₀¹ h ⊙ ∂S(λh)/∂(λh) dλ from the empty bottleneck to the
full one, which the paper derives to satisfy the attribution axioms. (Σ A reaches S(h) − S(0) only
for very fine steps: LayerNorm's ε makes S change within λ ≲ 10⁻³, which 10 steps never sample;
the map, a per-token sum, is what the authors read.) S is the cosine similarity of the pair's two embeddings,
the other tower fixed. The map is Σ_d A per token (signed, no ReLU, as the authors' code), image:
patch tokens, reshaped to the grid, upsampled, min-max; text: the real tokens SOT..EOT, min-max.

Where: the authors scale the hidden states entering layer 9 of ViT-B/32's 12 (0-based; one block
earlier than M2IB's bottleneck, which sits after block 9), on both towers. ``layer`` /
``text_layer``: the 0-based block whose INPUT is scaled; None = that depth scaled to the tower
(round(9/12·L), 0 = the embeddings), at most block L−2. Never the last block's input: a pre-norm
block reads every token but the pooled one only through its LayerNorm, which is blind to the token's
scale, so Σ_d h_d·∂S/∂h_d is exactly 0 for those tokens there and the map would be rounding noise
(Euler's theorem for scale-invariant functions; tests/test_nib.py shows it). With two or more
blocks after the bottleneck the token's own residual stream carries its scale on. The n points of the path run as one
batch (n·B copies through the blocks after the bottleneck) and one backward pass: pairs never
interact inside the model, so batching changes nothing. Deterministic: no seed. A BERT text tower
(BiomedCLIP) gets the image side only, as for ``m2ib``."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..errors import ConfigError
from .common import grid_to_image, masked_minmax, resolve_block
from .registry import ExplainOutput, register
from .wrapper import ForwardContext

PUBLISHED_INPUT, PUBLISHED_DEPTH = 9, 12  # the input of block 9 (0-based) of ViT-B/32's 12


def scaled_input_block(layer: int | None, n_blocks: int, key: str) -> int:
    """0-based block whose input NIB scales: ``layer`` when given, else round(9/12·L) clamped to
    [0, L−2] (L = 12: block 9, as published; at least two blocks after the bottleneck)."""
    if layer is not None:
        return resolve_block(layer, n_blocks, key)
    return max(0, min(int(PUBLISHED_INPUT * n_blocks / PUBLISHED_DEPTH + 0.5), n_blocks - 2))


def narrowing_attribution(
    h: torch.Tensor, similarity: Callable[[torch.Tensor], torch.Tensor], steps: int
) -> torch.Tensor:
    """A (B, T, D) = Σ_k h ⊙ ∂S/∂Z at Z = (k/n)·h, / n, k = 1..n (Eq. of the narrowing path).

    similarity: (n·B, T, D) bottleneck outputs, laid out as n copies of the batch -> (n·B,) S."""
    n = int(steps)
    lam = torch.arange(1, n + 1, dtype=h.dtype, device=h.device).div_(n).view(n, 1, 1, 1)
    with torch.enable_grad():
        z = (lam * h.detach().unsqueeze(0)).requires_grad_(True)  # (n, B, T, D)
        s = similarity(z.reshape(-1, *h.shape[1:]))
        (grad,) = torch.autograd.grad(s.sum(), [z])  # model .grad untouched
    return h * grad.mean(0)


@register("nib", reference="Zhu et al., ICLR 2025")
def nib(
    ctx: ForwardContext,
    *,
    layer: int | None = None,
    text_layer: int | None = None,
    steps: int = 10,
    text_side: bool = True,
) -> ExplainOutput:
    if steps < 1:
        raise ConfigError(f"attribution.params.nib.steps={steps}: need at least 1")
    block = scaled_input_block(layer, len(ctx.vision_blocks), "attribution.params.nib.layer")
    tokens = ctx.vision_tokens_after(block - 1)  # block 0: the embeddings
    dtype = tokens.dtype

    def image_similarity(z: torch.Tensor) -> torch.Tensor:
        return ctx.image_similarity(ctx.vision_features_from(z.to(dtype), block), repeat=steps)

    attribution = narrowing_attribution(tokens.float(), image_similarity, steps)
    image = grid_to_image(attribution.sum(-1)[:, 1:].detach(), ctx.size)
    options = {"input_of_block": block, "steps": int(steps), "target": "diagonal cosine similarity"}

    text_scores = None
    if text_side and ctx.text_tower_kind == "open_clip":
        tblock = scaled_input_block(
            text_layer, len(ctx.clip.transformer.resblocks), "attribution.params.nib.text_layer"
        )
        ttokens = ctx.text_tokens_after(tblock - 1)
        tdtype = ttokens.dtype

        def text_similarity(z: torch.Tensor) -> torch.Tensor:
            return ctx.text_similarity(ctx.text_features_from(z.to(tdtype), tblock, repeat=steps), repeat=steps)

        tattr = narrowing_attribution(ttokens.float(), text_similarity, steps).sum(-1).detach()
        eot = ctx.tokens.argmax(dim=-1).to(tattr.device)
        real = torch.arange(tattr.shape[1], device=tattr.device).unsqueeze(0) <= eot.unsqueeze(1)
        scores = masked_minmax(tattr, real).cpu().numpy().astype(np.float32)
        text_scores = [scores[i, : int(e) + 1].copy() for i, e in enumerate(eot.tolist())]
        options["text_input_of_block"] = tblock
    return ExplainOutput(image=image, text=text_scores, meta={"options": options})
