"""LeGrad (Bousselham et al., ICCV 2025, arXiv 2404.03214): the sensitivity of each layer's
feature formation to that layer's attention.

For every block l ≥ ``start_layer`` the image-text score is read from the block's OUTPUT tokens
through the final norm and projection, s_l = cos(proj(ln_post(pool(h_{l+1}))), f_T) (Eq. 3), and
differentiated with respect to the block's own attention probabilities A_l (B, heads, T, T) only.
E_l = mean over heads and query rows of ReLU(∂s_l/∂A_l), read at the patch columns (Eq. 4);
the map is the mean of E_l over the layers, min-max normalised (Eq. 5). Each s_l reaches A_l only
through block l, so the L backward calls together cost about one backward pass.

Defaults follow the authors' released code (``LeWrapper``, WalBouss/LeGrad; docs/fidelity.md):
``start_layer=-2`` (the last two blocks) and ``pooling="mean"`` (the block's tokens, CLS
included, averaged before the final norm). The paper's prose reading, every block and the token
the model pools (CLS for CLIP ViTs), is ``start_layer=0, pooling="model"``. A negative
``start_layer`` beyond the tower's depth means every block. Image side only."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .common import grid_to_image, resolve_block
from .registry import ExplainOutput, register
from .wrapper import ForwardContext


@register("legrad", reference="Bousselham et al., ICCV 2025")
def legrad(ctx: ForwardContext, *, start_layer: int = -2, pooling: str = "mean") -> ExplainOutput:
    if pooling not in ("model", "mean"):
        raise ConfigError(f"attribution.params.legrad.pooling={pooling!r}; expected model or mean")
    n_blocks = len(ctx.vision_blocks)
    # "the last k blocks" on a tower with fewer than k blocks: all of them
    first = max(int(start_layer), -n_blocks) if int(start_layer) < 0 else int(start_layer)
    start = resolve_block(first, n_blocks, "attribution.params.legrad.start_layer")
    text = ctx.text_features()
    total = None
    with ctx.recorded_pass() as (vrec, _, _):
        for layer in range(start, n_blocks):
            feats = F.normalize(ctx.vision_readout(vrec.output_tokens(layer), pooling).float(), dim=-1)
            score = (feats * text).sum()  # Σ_i s_l(pair i): pairs never interact in the model
            (grad,) = torch.autograd.grad(score, [vrec.attention[layer]], retain_graph=layer < n_blocks - 1)
            e_l = grad.float().clamp_min(0).mean((1, 2))[:, 1:]  # heads, then every query row
            total = e_l if total is None else total + e_l
    layer_mean = total / (n_blocks - start)
    return ExplainOutput(
        image=grid_to_image(layer_mean, ctx.size),
        meta={"options": {"layers": list(range(start, n_blocks)), "pooling": pooling, "target": "diagonal similarity"}},
    )
