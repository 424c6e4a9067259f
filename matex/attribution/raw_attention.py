"""Raw attention (docs/method.md): the last vision block's CLS→patch attention, mean over heads."""

from __future__ import annotations

from .common import grid_to_image
from .registry import ExplainOutput, register
from .wrapper import ForwardContext


@register("raw_attention", reference="last-layer CLS attention, mean of heads (Abnar & Zuidema, ACL 2020, as baseline)")
def raw_attention(ctx: ForwardContext) -> ExplainOutput:
    tr = ctx.trace()
    cls_row = tr.vision.attention[-1].float().mean(1)[:, 0, 1:]
    return ExplainOutput(image=grid_to_image(cls_row, ctx.size), meta={"options": {"block": -1, "heads": "mean"}})
