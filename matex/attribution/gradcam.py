"""Grad-CAM on ViT tokens (Selvaraju et al., ICCV 2017; docs/method.md, 7), with the target layer read as
pytorch-grad-cam reads ViTs: by default the output of the LAST block's first LayerNorm (``ln_1``),
patch tokens (CLS dropped) reshaped to the grid. Those tokens still get gradient under CLS pooling:
they are the keys and values of the last attention.

Target: ``layer`` (block index, negative from the end; default −1) and ``point``: ``'ln_1'`` (the
block's first LayerNorm output, default) or ``'input'`` (the block's input tokens, the residual
stream; the last block's is fine, its OUTPUT would get zero patch gradient). ``weighting='channel'``
(Grad-CAM proper): w_d = mean over patches of ∂S/∂act_d, map = ReLU(Σ_d w_d·act_d);
``'elementwise'``: ReLU(Σ_d ∂S/∂act_d ⊙ act_d) per patch. S = cos(f_I(x), f_T(t)); the map is
upsampled bilinearly to the input and min-max normalised like every map."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from ..errors import ConfigError, MatexError
from .common import grid_to_image, resolve_block
from .registry import ExplainOutput, register
from .towers import first_norm, is_batch_first
from .wrapper import ForwardContext


def target_activations(ctx: ForwardContext, block: int, point: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Patch-token activations (B, N, D) at ``point`` of vision block ``block`` and ∂S/∂them, from one
    forward and one backward pass of the unmodified model (a forward hook keeps the tensor)."""
    blk = ctx.vision_blocks[block]
    batch_first = is_batch_first(ctx.vision_tower)
    kept: list[torch.Tensor] = []

    def keep_output(module, args, output):
        kept.append(output)

    def keep_input(module, args, kwargs):
        kept.append(args[0])

    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.enable_grad())
        handle = (
            first_norm(blk).register_forward_hook(keep_output)
            if point == "ln_1"
            else blk.register_forward_pre_hook(keep_input, with_kwargs=True)
        )
        stack.callback(handle.remove)
        x = ctx.images.detach().clone().requires_grad_(True)  # so the graph reaches every block
        fi = F.normalize(ctx.clip.encode_image(x).float(), dim=-1)
        sim = (fi * ctx.text_features()).sum(-1)
        if len(kept) != 1:
            raise MatexError(f"gradcam: expected one activation at block {block} {point}, got {len(kept)}")
        (grad,) = torch.autograd.grad(sim.sum(), kept)
    act, grad = kept[0].detach(), grad.detach()
    if not batch_first:
        act, grad = act.transpose(0, 1), grad.transpose(0, 1)
    return act[:, 1:].float(), grad[:, 1:].float()


@register("gradcam", reference="Selvaraju et al., ICCV 2017")
def gradcam(ctx: ForwardContext, *, layer: int = -1, point: str = "ln_1", weighting: str = "channel") -> ExplainOutput:
    n_blocks = len(ctx.vision_blocks)
    block = resolve_block(layer, n_blocks, "attribution.params.gradcam.layer")
    if point not in ("ln_1", "input"):
        raise ConfigError(f"attribution.params.gradcam.point={point!r}; expected ln_1 or input")
    if weighting not in ("channel", "elementwise"):
        raise ConfigError(f"attribution.params.gradcam.weighting={weighting!r}; expected channel or elementwise")
    act, grad = target_activations(ctx, block, point)
    if weighting == "channel":
        cam = (grad.mean(1, keepdim=True) * act).sum(-1).relu()
    else:
        cam = (grad * act).sum(-1).relu()
    where = "first LayerNorm (ln_1) output" if point == "ln_1" else "input tokens"
    return ExplainOutput(
        image=grid_to_image(cam, ctx.size),
        meta={"options": {"block": block, "tokens": f"block {block} {where}", "weighting": weighting}},
    )
