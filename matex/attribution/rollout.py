"""Attention rollout (Abnar & Zuidema 2020; docs/method.md, 7): R = Π_l rownorm(½·fuse_h(A_l) + ½·I),
read R[CLS, patches]. Rows are normalised with keepdim (vit-explain's bug drops it); head fusion
mean | max | min; ``discard_ratio`` zeroes that fraction of the smallest fused attention entries
per block (never the CLS→CLS entry). The options are recorded in the output's metadata."""

from __future__ import annotations

import torch

from ..errors import ConfigError
from .common import grid_to_image, identity_like, rownorm
from .registry import ExplainOutput, register
from .wrapper import ForwardContext

HEAD_FUSIONS = {"mean": lambda a: a.mean(1), "max": lambda a: a.amax(1), "min": lambda a: a.amin(1)}


def discard_lowest(fused: torch.Tensor, ratio: float) -> torch.Tensor:
    """Zero the ``ratio`` fraction of smallest entries of each (T, T) map, keeping CLS→CLS."""
    if ratio <= 0:
        return fused
    b, t, _ = fused.shape
    flat = fused.reshape(b, t * t).clone()
    k = int(flat.shape[1] * ratio)
    if k == 0:
        return fused
    protected = flat[:, 0].clone()
    idx = flat.topk(k, dim=-1, largest=False).indices
    flat.scatter_(1, idx, 0.0)
    flat[:, 0] = protected
    return flat.view(b, t, t)


@register("rollout", reference="Abnar & Zuidema, ACL 2020")
def rollout(ctx: ForwardContext, *, discard_ratio: float = 0.0, head_fusion: str = "mean") -> ExplainOutput:
    if head_fusion not in HEAD_FUSIONS:
        raise ConfigError(
            f"attribution.params.rollout.head_fusion={head_fusion!r}; expected one of {sorted(HEAD_FUSIONS)}"
        )
    if not 0.0 <= float(discard_ratio) < 1.0:
        raise ConfigError(f"attribution.params.rollout.discard_ratio={discard_ratio} must be in [0, 1)")
    tr = ctx.trace()
    r = None
    for a in tr.vision.attention:
        fused = discard_lowest(HEAD_FUSIONS[head_fusion](a.float()), float(discard_ratio))
        a_bar = rownorm(0.5 * fused + 0.5 * identity_like(fused))
        r = a_bar if r is None else a_bar @ r
    return ExplainOutput(
        image=grid_to_image(r[:, 0, 1:], ctx.size),
        meta={
            "options": {
                "head_fusion": head_fusion,
                "discard_ratio": float(discard_ratio),
                "residual": 0.5,
                "rownorm": "keepdim",
            }
        },
    )
