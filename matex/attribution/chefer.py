"""Gradient-weighted attention relevance (Chefer et al. 2021; docs/evaluation.md): R = I, then for every
block l ≥ start_layer R += mean_h((∂S/∂A_l ⊙ A_l)^+)·R; the map is R[CLS, patches]. The target is
each pair's own (diagonal) image-text similarity."""

from __future__ import annotations

import torch

from .common import grid_to_image, identity_like, resolve_block
from .registry import ExplainOutput, register
from .wrapper import ForwardContext


@register("chefer", reference="Chefer, Gur, Wolf, ICCV 2021")
def chefer(ctx: ForwardContext, *, start_layer: int = 0) -> ExplainOutput:
    tr = ctx.trace(attention_grads=True)
    n_blocks = len(tr.vision.attention)
    start = resolve_block(start_layer, n_blocks, "attribution.params.chefer.start_layer")
    r = None
    for a, g in list(zip(tr.vision.attention, tr.vision.attention_grads))[start:]:
        cam = (g.float() * a.float()).clamp_min(0).mean(1)
        r = identity_like(cam).clone() if r is None else r
        r = r + torch.bmm(cam, r)
    return ExplainOutput(
        image=grid_to_image(r[:, 0, 1:], ctx.size),
        meta={"options": {"start_layer": start, "target": "diagonal similarity"}},
    )
