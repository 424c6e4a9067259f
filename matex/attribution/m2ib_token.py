"""M2IB with one gate per token (a lighter variant of M2IB, Wang, Rudner, Wilson 2023; the published
formulation is ``m2ib``): an information bottleneck on the vision tokens after block ``layer``.
Per token a gate λ = sigmoid(α) (α starts at ``init``) mixes the tokens R with
noise: Z = λ·R + (1−λ)·ε, ε ~ N(μ_R, σ_R²), μ_R, σ_R the per-feature statistics of the pair's own
tokens (so batching never changes a pair's map). ``steps`` Adam steps at ``lr`` minimise
−S(Z) + β·KL(Q(Z|R) ‖ N(μ_R, σ_R²)), averaged over ``n_noise`` noisy copies; the map is the KL
capacity per patch token (summed over features). Pairs are optimised together: each pair's loss
depends only on its own gates and Adam is element-wise, so this equals one-by-one optimisation.
The noise draw (seeded) is shared by the pairs of a batch. Image side only."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .common import grid_to_image, resolve_block
from .registry import ExplainOutput, register
from .wrapper import ForwardContext


def capacity(r_norm: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """KL(N(λ·r, (1−λ)²) ‖ N(0, 1)) element-wise, in the coordinates (Z − μ_R)/σ_R."""
    lam = torch.sigmoid(alpha)
    log_sd = F.logsigmoid(-alpha)  # log(1 − λ), stable for large α
    mu = lam * r_norm
    return 0.5 * (torch.exp(2 * log_sd) + mu**2 - 1.0) - log_sd


@register("m2ib_token", reference="variant of Wang et al., NeurIPS 2023: one gate per token")
def m2ib_token(
    ctx: ForwardContext,
    *,
    layer: int = -3,
    beta: float = 0.1,
    steps: int = 10,
    lr: float = 1.0,
    n_noise: int = 10,
    init: float = 5.0,
    seed: int = 0,
) -> ExplainOutput:
    if steps < 0 or n_noise < 1:
        raise ConfigError(f"attribution.params.m2ib_token: need steps>=0 and n_noise>=1 (got {steps}, {n_noise})")
    n_blocks = len(ctx.vision_blocks)
    block = resolve_block(layer, n_blocks, "attribution.params.m2ib_token.layer")
    tokens = ctx.vision_tokens_after(block)
    dtype = tokens.dtype
    r = tokens.float()
    b, t, d = r.shape
    mu = r.mean(1, keepdim=True)
    sd = r.std(1, keepdim=True).clamp_min(1e-6)
    r_norm = (r - mu) / sd
    gen = torch.Generator().manual_seed(int(seed))
    alpha = torch.full((b, t, 1), float(init), device=r.device, requires_grad=True)
    opt = torch.optim.Adam([alpha], lr=float(lr))
    for _ in range(int(steps)):
        noise = torch.randn(n_noise, 1, t, d, generator=gen).to(r.device)
        with torch.enable_grad():
            lam = torch.sigmoid(alpha)
            z = lam * r + (1 - lam) * (mu + sd * noise)  # (n_noise, B, T, D)
            feats = ctx.vision_features_from(z.reshape(n_noise * b, t, d).to(dtype), block + 1)
            s = ctx.image_similarity(feats, repeat=n_noise).view(n_noise, b)
            kl = capacity(r_norm, alpha).mean((1, 2))
            loss = (-s.mean(0) + float(beta) * kl).sum()
            (grad,) = torch.autograd.grad(loss, [alpha])  # model .grad untouched
        opt.zero_grad(set_to_none=True)
        alpha.grad = grad
        opt.step()
    with torch.no_grad():
        cap = capacity(r_norm, alpha).sum(-1)[:, 1:]
    return ExplainOutput(
        image=grid_to_image(cap, ctx.size),
        meta={"options": {"block": block, "noise": "per-pair token statistics, shared draw", "seed": int(seed)}},
    )
