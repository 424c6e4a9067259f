"""Gradient × input (docs/method.md): |Σ_c x_c ⊙ ∂S/∂x_c| on the normalised input."""

from __future__ import annotations

from .common import minmax_norm
from .registry import ExplainOutput, register
from .wrapper import ForwardContext


@register("grad_input", reference="Shrikumar et al., 2016 (gradient × input)")
def grad_input(ctx: ForwardContext) -> ExplainOutput:
    g = ctx.trace(input_grad=True).input_grad
    return ExplainOutput(image=minmax_norm((g.float() * ctx.images.float()).sum(1).abs()))
