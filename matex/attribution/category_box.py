"""Category box (a bias control, docs/method.md): the mean box mask of the training pairs of the same
finding category as the explained pair. It reads the pair's category label, never the image or the
phrase's words: what it scores shows how much "where this finding usually is" explains. A category
with no training pair falls back to the mean box of all training pairs (recorded in the meta)."""

from __future__ import annotations

from ..errors import DataError
from .mean_box import as_maps, require_training_boxes
from .registry import ExplainOutput, register
from .wrapper import ForwardContext


@register("category_box", reference="bias control: mean training box mask of the finding category")
def category_box(ctx: ForwardContext) -> ExplainOutput:
    tb = require_training_boxes(ctx, "category_box")
    if ctx.categories is None or len(ctx.categories) != ctx.batch:
        got = "none" if ctx.categories is None else f"{len(ctx.categories)} for {ctx.batch} pairs"
        raise DataError(
            f"method 'category_box' needs each pair's finding category: call "
            f"explain(..., categories=[...]) with one category per pair (got {got})"
        )
    masks, fallback = [], []
    for i, cat in enumerate(ctx.categories):
        m = tb.category_mean(cat)
        if m is None:
            fallback.append(i)
            m = tb.mean
        masks.append(m)
    counts = tb.counts()
    return ExplainOutput(
        image=as_maps(masks, ctx),
        meta={
            "options": {"training_pairs": [counts.get(c, 0) for c in ctx.categories], "fallback_to_mean_box": fallback}
        },
    )
