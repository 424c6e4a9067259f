"""Sobel edges (docs/evaluation.md): the gradient magnitude of the (un-normalised, grey) input image. A
sanity baseline: a method that scores like this explains edges, not the model."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import minmax_norm
from .registry import ExplainOutput, register
from .wrapper import ForwardContext


@register("sobel", reference="control: Sobel edge magnitude of the image (ignores the phrase and the model)")
def sobel(ctx: ForwardContext) -> ExplainOutput:
    x = ctx.images.float()
    mean = torch.tensor(ctx.model.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(ctx.model.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    grey = (x * std + mean).mean(1, keepdim=True)
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device)
    kernels = torch.stack([kx, kx.t()]).unsqueeze(1)  # (2, 1, 3, 3)
    g = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), kernels)
    return ExplainOutput(image=minmax_norm(g.pow(2).sum(1).sqrt()))
