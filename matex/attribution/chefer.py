"""Gradient-weighted attention relevance (Chefer, Gur, Wolf, ICCV 2021; docs/fidelity.md), as the
authors' CLIP notebook (Transformer-MM-Explainability) computes it: R = I, then for every block
l ≥ ``start_layer`` R += mean_h((∂y/∂A_l ⊙ A_l)^+)·R; the map is R[CLS, patches].

Defaults follow the authors: ``start_layer=-1`` (only the last block contributes; the notebook
skips every block before its start layer) and ``target="logit"``, y = logit_scale·cos(f_I, f_T) of
each pair's own (diagonal) image-text logit. Documented options: ``start_layer=0`` (every block,
the paper's general transformer rule) and ``target="cosine"`` (y = cos, no scale). The scale
matters only when several blocks contribute: R's identity term is not multiplied by it."""

from __future__ import annotations

import torch

from ..errors import ConfigError
from .common import grid_to_image, identity_like, resolve_block
from .registry import ExplainOutput, register
from .wrapper import ForwardContext


def logit_scale(clip: torch.nn.Module) -> float:
    """exp(logit_scale) of an open_clip model (the temperature CLIP's logits are multiplied by)."""
    scale = getattr(clip, "logit_scale", None)
    if scale is None:
        raise ConfigError("attribution.params.chefer.target=logit: the model has no logit_scale; use target: cosine")
    return float(torch.as_tensor(scale).detach().float().exp().reshape(-1)[0])


@register("chefer", reference="Chefer, Gur, Wolf, ICCV 2021")
def chefer(ctx: ForwardContext, *, start_layer: int = -1, target: str = "logit") -> ExplainOutput:
    if target not in ("logit", "cosine"):
        raise ConfigError(f"attribution.params.chefer.target={target!r}; expected logit or cosine")
    tr = ctx.trace(attention_grads=True)  # gradients of the cosine S
    scale = logit_scale(ctx.clip) if target == "logit" else 1.0  # ∂(s·S)/∂A = s·∂S/∂A
    n_blocks = len(tr.vision.attention)
    start = resolve_block(start_layer, n_blocks, "attribution.params.chefer.start_layer")
    r = None
    for a, g in list(zip(tr.vision.attention, tr.vision.attention_grads))[start:]:
        cam = (scale * g.float() * a.float()).clamp_min(0).mean(1)
        r = identity_like(cam).clone() if r is None else r
        r = r + torch.bmm(cam, r)
    target_name = "diagonal logit (logit_scale x cosine)" if target == "logit" else "diagonal cosine similarity"
    return ExplainOutput(
        image=grid_to_image(r[:, 0, 1:], ctx.size),
        meta={"options": {"start_layer": start, "target": target_name, "logit_scale": scale}},
    )
