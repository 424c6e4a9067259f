"""Saliency (docs/method.md): |∂S/∂x|, max over colour channels."""

from __future__ import annotations

from .common import minmax_norm
from .registry import ExplainOutput, register
from .wrapper import ForwardContext


@register("saliency", reference="Simonyan, Vedaldi, Zisserman, ICLR Workshop 2014")
def saliency(ctx: ForwardContext) -> ExplainOutput:
    g = ctx.trace(input_grad=True).input_grad
    return ExplainOutput(image=minmax_norm(g.float().abs().amax(1)))
