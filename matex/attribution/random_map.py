"""Random (docs/method.md): uniform noise, the floor every method should beat. Each pair's draw is seeded
by (seed, image bytes, text), so it is reproducible and independent of batching."""

from __future__ import annotations

import torch

from .common import minmax_norm, pair_seed
from .registry import ExplainOutput, register
from .wrapper import ForwardContext


@register("random", reference="control: uniform noise (the floor)")
def random_map(ctx: ForwardContext, *, seed: int = 0) -> ExplainOutput:
    h, w = ctx.size
    # one small draw per pair (no model pass): the per-pair seed is what makes it batch-independent
    maps = torch.stack(
        [
            torch.rand(h, w, generator=torch.Generator().manual_seed(pair_seed(seed, img, txt)))
            for img, txt in zip(ctx.images, ctx.texts)
        ]
    )
    return ExplainOutput(image=minmax_norm(maps), meta={"options": {"seed": int(seed)}})
