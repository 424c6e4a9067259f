"""Grad-CAM on ViT tokens (Selvaraju et al.; DESIGN 4, 7). Activations are the tokens after block
``layer`` (= the input of its successor, so the last block's CLS pooling cannot zero them).
``weighting='channel'`` (default, Grad-CAM proper): w_d = mean over patches of ∂S/∂act_d, map =
ReLU(Σ_d w_d·act_d); ``'elementwise'``: ReLU(Σ_d ∂S/∂act_d ⊙ act_d) per patch."""
from __future__ import annotations

from ..errors import ConfigError
from .common import grid_to_image, resolve_block
from .registry import ExplainOutput, register
from .wrapper import ForwardContext


@register("gradcam")
def gradcam(ctx: ForwardContext, *, layer: int = -3, weighting: str = 'channel') -> ExplainOutput:
    n_blocks = len(ctx.vision_blocks)
    block = resolve_block(layer, n_blocks, "attribution.params.gradcam.layer")
    if block == n_blocks - 1:
        raise ConfigError("attribution.params.gradcam.layer points at the last block, whose output patch tokens "
                          "get zero gradient under CLS pooling; use -2 or earlier")
    if weighting not in ("channel", "elementwise"):
        raise ConfigError(f"attribution.params.gradcam.weighting={weighting!r}; expected channel or elementwise")
    tr = ctx.trace(token_grads={"vision": [block + 1]})
    act = tr.vision.tokens[block + 1][:, 1:].float()
    grad = tr.vision.token_grads[block + 1][:, 1:].float()
    if weighting == "channel":
        cam = (grad.mean(1, keepdim=True) * act).sum(-1).relu()
    else:
        cam = (grad * act).sum(-1).relu()
    return ExplainOutput(image=grid_to_image(cam, ctx.size),
                         meta={"options": {"block": block, "tokens": f"input of block {block + 1}",
                                           "weighting": weighting}})
