"""M2IB as published (Wang, Rudner, Wilson, NeurIPS 2023; docs/method.md): an information bottleneck on
the tokens h (T, D) after one block, on the image side and on the text side.

One gate per token AND feature: λ = sigmoid(α), α of shape (T, D) started at ``init`` (5). The
bottleneck replaces h by Z = λ·h + (1−λ)·ε, ε ~ N(0, 1), in the features' own coordinates (the
authors' code builds a mean/std estimator but its forward pass never uses it: h is the raw block
output and the noise is standard normal). The capacity is KL(N(λ·h, (1−λ)²) ‖ N(0, 1)) per element.
``steps`` Adam steps at ``lr`` minimise β·mean_{T,D}(capacity) − mean over ``n_noise`` noisy copies
of S, the cosine similarity of the pair's two embeddings (the other tower untouched). The map is the
capacity summed over features per token (``readout='capacity'``, the authors' code; ``'gate'``
sums λ instead), read, as their code does, at the gates of the LAST forward pass (before the last
Adam update); image: patch tokens, reshaped to the grid, upsampled, min-max; text: the real tokens
(SOT..EOT), min-max.

Settings: ``m2ib`` follows the authors' general CLIP demo and their CLIP benchmarks (β = 0.1,
block 9 on both sides); ``m2ib_cxr`` their chest X-ray demo (β = 1, image block 9, text block 7).

Block: ``layer`` / ``text_layer`` None = the published depth (after block 9 of 12, 0-based) scaled
to the tower: 10/12 of the blocks before the bottleneck, at most the second-to-last block.
Noise: step k draws ε = randn((n_noise, T, D)) from ``torch.Generator().manual_seed(seed)`` in step
order (text: a second generator with the same seed, (n_noise, context_length, D) sliced to the
tokens), shared by the pairs of a batch: a pair's map does not depend on its batch. Pairs are
optimised together: each pair's loss depends only on its own gates and Adam is element-wise, so
this equals one-by-one optimisation."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .common import grid_to_image, masked_minmax, resolve_block
from .registry import ExplainOutput, register
from .wrapper import ForwardContext

PUBLISHED_BLOCK, PUBLISHED_DEPTH = 9, 12  # bottleneck after block 9 (0-based) of ViT-B/32's 12
CXR_TEXT_BLOCK = 7  # the authors' chest X-ray demo: text bottleneck after text block 7


def scaled_block(layer: int | None, n_blocks: int, key: str, published: int = PUBLISHED_BLOCK) -> int:
    """0-based block after which the bottleneck sits: ``layer`` when given, else the published
    block (of 12) scaled: round((published+1)/12·L) blocks before it, clamped to [0, L−2]."""
    if layer is not None:
        return resolve_block(layer, n_blocks, key)
    before = int((published + 1) * n_blocks / PUBLISHED_DEPTH + 0.5)
    return max(0, min(before - 1, n_blocks - 2))


def capacity(h: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """KL(N(λ·h, (1−λ)²) ‖ N(0, 1)) element-wise, λ = sigmoid(α); log(1−λ) = logsigmoid(−α) stays
    finite where 1 − λ rounds to 0 in float32 (α ≳ 17)."""
    log_sd = F.logsigmoid(-alpha)
    mu = torch.sigmoid(alpha) * h
    return 0.5 * (torch.exp(2 * log_sd) + mu**2 - 1.0) - log_sd


def fit_bottleneck(
    h: torch.Tensor,
    similarity,
    token_mask: torch.Tensor,
    *,
    beta: float,
    steps: int,
    lr: float,
    n_noise: int,
    init: float,
    noise: torch.Tensor,
) -> torch.Tensor:
    """Optimise the gates α (B, T, D) of tokens h (B, T, D); return the α of the last forward pass.

    similarity: (n_noise·B, T, D) bottlenecked tokens -> (n_noise·B,) S. token_mask (B, T): tokens
    that count in the capacity mean (text: SOT..EOT). noise: (steps, n_noise, T, D)."""
    b, t, d = h.shape
    alpha = torch.full((b, t, d), float(init), device=h.device, requires_grad=True)
    opt = torch.optim.Adam([alpha], lr=float(lr))
    weight = (token_mask.float() / (token_mask.sum(1, keepdim=True).float() * d)).unsqueeze(-1)  # mean over T·D
    read = alpha.detach().clone()
    for k in range(int(steps)):
        eps = noise[k].unsqueeze(1).to(h.device)  # (n_noise, 1, T, D)
        read = alpha.detach().clone()
        with torch.enable_grad():
            lam = torch.sigmoid(alpha)
            z = lam * h + (1 - lam) * eps  # (n_noise, B, T, D)
            s = similarity(z.reshape(n_noise * b, t, d)).view(n_noise, b)
            kl = (capacity(h, alpha) * weight).sum((1, 2))
            loss = (float(beta) * kl - s.mean(0)).sum()
            (grad,) = torch.autograd.grad(loss, [alpha])  # model .grad untouched
        opt.zero_grad(set_to_none=True)
        alpha.grad = grad
        opt.step()
    return read


def readout_scores(h: torch.Tensor, alpha: torch.Tensor, readout: str) -> torch.Tensor:
    """Per-token score (B, T): capacity or gate summed over features."""
    with torch.no_grad():
        return (capacity(h, alpha) if readout == "capacity" else torch.sigmoid(alpha)).sum(-1)


def draw_noise(seed: int, steps: int, n_noise: int, t: int, d: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(int(seed))
    return (
        torch.stack([torch.randn(n_noise, t, d, generator=gen) for _ in range(int(steps))])
        if steps
        else torch.zeros(0, n_noise, t, d)
    )


@register("m2ib", reference="Wang, Rudner, Wilson, NeurIPS 2023")
def m2ib(
    ctx: ForwardContext,
    *,
    layer: int | None = None,
    text_layer: int | None = None,
    beta: float = 0.1,
    steps: int = 10,
    lr: float = 1.0,
    n_noise: int = 10,
    init: float = 5.0,
    readout: str = "capacity",
    text_side: bool = True,
    seed: int = 0,
) -> ExplainOutput:
    return run_m2ib(ctx, "m2ib", PUBLISHED_BLOCK, **_params(locals()))


@register("m2ib_cxr", reference="Wang, Rudner, Wilson, NeurIPS 2023: their chest X-ray demo settings")
def m2ib_cxr(
    ctx: ForwardContext,
    *,
    layer: int | None = None,
    text_layer: int | None = None,
    beta: float = 1.0,
    steps: int = 10,
    lr: float = 1.0,
    n_noise: int = 10,
    init: float = 5.0,
    readout: str = "capacity",
    text_side: bool = True,
    seed: int = 0,
) -> ExplainOutput:
    """M2IB with the settings of the authors' chest X-ray (MS-CXR) demo: β = 1 on both sides, the
    image bottleneck after block 9 and the text bottleneck after text block 7 of 12 (scaled to the
    tower as ``m2ib`` scales block 9)."""
    return run_m2ib(ctx, "m2ib_cxr", CXR_TEXT_BLOCK, **_params(locals()))


def _params(scope: dict) -> dict:
    return {k: v for k, v in scope.items() if k != "ctx"}


def run_m2ib(
    ctx: ForwardContext,
    name: str,
    text_published: int,
    *,
    layer: int | None,
    text_layer: int | None,
    beta: float,
    steps: int,
    lr: float,
    n_noise: int,
    init: float,
    readout: str,
    text_side: bool,
    seed: int,
) -> ExplainOutput:
    """Both sides of M2IB; ``text_published``: the text block (of 12) the bottleneck follows when
    ``text_layer`` is None."""
    if steps < 0 or n_noise < 1:
        raise ConfigError(f"attribution.params.{name}: need steps>=0 and n_noise>=1 (got {steps}, {n_noise})")
    if readout not in ("capacity", "gate"):
        raise ConfigError(f"attribution.params.{name}.readout={readout!r}; expected capacity or gate")
    fit = dict(beta=beta, steps=steps, lr=lr, n_noise=n_noise, init=init)
    block = scaled_block(layer, len(ctx.vision_blocks), f"attribution.params.{name}.layer")
    image = _image_side(ctx, block, fit, readout, seed)
    options = {
        "block": block,
        "noise": "N(0, 1) on the raw block output, one draw per step shared by the batch",
        "readout": f"{readout} summed over features, gates of the last forward pass",
        "seed": int(seed),
    }
    text_scores = None
    if text_side and ctx.text_tower_kind == "open_clip":  # a BERT text tower (BiomedCLIP): image side only
        n_text = len(ctx.clip.transformer.resblocks)
        tblock = scaled_block(text_layer, n_text, f"attribution.params.{name}.text_layer", text_published)
        text_scores = _text_side(ctx, tblock, fit, readout, seed)
        options["text_block"] = tblock
    return ExplainOutput(image=image, text=text_scores, meta={"options": options})


def _image_side(ctx: ForwardContext, block: int, fit: dict, readout: str, seed: int) -> torch.Tensor:
    """The image map: a bottleneck fitted on the tokens after vision block ``block`` (the text
    embedding fixed), read out per patch and upsampled to the input."""
    tokens = ctx.vision_tokens_after(block)
    dtype = tokens.dtype
    h = tokens.float()
    b, t, d = h.shape
    n_noise = fit["n_noise"]

    def image_similarity(z: torch.Tensor) -> torch.Tensor:
        return ctx.image_similarity(ctx.vision_features_from(z.to(dtype), block + 1), repeat=n_noise)

    every = torch.ones(b, t, dtype=torch.bool, device=h.device)
    alpha = fit_bottleneck(h, image_similarity, every, noise=draw_noise(seed, fit["steps"], n_noise, t, d), **fit)
    return grid_to_image(readout_scores(h, alpha, readout)[:, 1:], ctx.size)


def _text_side(ctx: ForwardContext, tblock: int, fit: dict, readout: str, seed: int) -> list[np.ndarray]:
    """Per text, one min-max normalised score per real token (SOT..EOT): a bottleneck fitted on the
    tokens after text block ``tblock`` (the image embedding fixed)."""
    ttokens = ctx.text_tokens_after(tblock)
    tdtype = ttokens.dtype
    th = ttokens.float()
    n = th.shape[1]
    n_noise = fit["n_noise"]
    eot = ctx.tokens.argmax(dim=-1).to(th.device)
    real = torch.arange(n, device=th.device).unsqueeze(0) <= eot.unsqueeze(1)

    def text_similarity(z: torch.Tensor) -> torch.Tensor:
        return ctx.text_similarity(ctx.text_features_from(z.to(tdtype), tblock + 1, repeat=n_noise), repeat=n_noise)

    tnoise = draw_noise(seed, fit["steps"], n_noise, ctx.tokens.shape[1], th.shape[2])[:, :, :n]
    talpha = fit_bottleneck(th, text_similarity, real, noise=tnoise, **fit)
    scores = masked_minmax(readout_scores(th, talpha, readout), real).cpu().numpy().astype(np.float32)
    return [scores[i, : int(e) + 1].copy() for i, e in enumerate(eot.tolist())]
