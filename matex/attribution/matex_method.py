"""MATEX (docs/method.md): multi-scale rollout (Eq. 1) + layer consistency (Eq. 2) + similarity gradient
+ text-guided spatial prior (Eqs. 3-5), fused. One forward and one backward pass give every term.

Resolution choice: rollout, consistency and gradient are computed on the patch grid and upsampled
bilinearly to the input size (H, W); the prior is computed directly at (H, W) (it is an analytic
soft box mask, so it keeps its sharp-but-soft edges) and multiplies the *upsampled* gradient.
Returned components, all (B, H, W): ``rollout`` = M_roll, ``consistency`` = C (in (0, 1]),
``gradient`` = norm(G), ``prior`` = norm(P), ``grad_prior`` = norm(G⊙P),
``grad_consistency`` = norm(G⊙C); the map is norm(α·grad_prior + β·rollout + γ·grad_consistency
+ δ·prior).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from ..errors import ConfigError
from .common import identity_like, masked_minmax, minmax_norm, resolve_block, rownorm, tokens_to_grid, upsample
from .registry import ExplainOutput, register
from .wrapper import ForwardContext


def layer_set(spec: int | Sequence[int] | None, n_blocks: int, key: str, last_k: bool = False) -> list[int]:
    """0-based sorted block indices: None = all; an int k with ``last_k`` = the last k blocks;
    otherwise a list of (possibly negative) indices."""
    if spec is None:
        return list(range(n_blocks))
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        if not last_k:
            return [resolve_block(int(spec), n_blocks, key)]
        if int(spec) < 1:
            raise ConfigError(f"{key}={spec} must be at least 1")
        return list(range(max(0, n_blocks - int(spec)), n_blocks))
    out = sorted({resolve_block(int(i), n_blocks, key) for i in spec})
    if not out:
        raise ConfigError(f"{key} is an empty list")
    return out


def rollout_matrices(mean_attention: torch.Tensor) -> torch.Tensor:
    """Eq. 1: Ā_l = rownorm(½·A_l + ½·I) and R_l = Ā_l···Ā_1 for every depth; (L, B, T, T) -> (L, B, T, T)."""
    a_bar = rownorm(0.5 * mean_attention + 0.5 * identity_like(mean_attention))
    out, r = [], None
    for a in a_bar:
        r = a if r is None else a @ r
        out.append(r)
    return torch.stack(out)


def layer_weights(layers: Sequence[int], n_blocks: int, tau: float, device=None) -> torch.Tensor:
    """w_l = softmax over l∈𝓛 of l/(τ·L), l 1-based: deeper layers weigh more for τ > 0."""
    if tau <= 0:
        raise ConfigError(f"attribution.params.matex.tau={tau} must be > 0")
    depth = torch.tensor([i + 1 for i in layers], dtype=torch.float32, device=device)
    return torch.softmax(depth / (tau * n_blocks), dim=0)


def query_rows(mats: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Row ``query[b]`` of each (…, B, T, T) matrix -> (…, B, T)."""
    idx = query.view(*([1] * (mats.ndim - 3)), -1, 1, 1).expand(*mats.shape[:-2], 1, mats.shape[-1])
    return mats.gather(-2, idx).squeeze(-2)


def token_components(
    attention: list[torch.Tensor],
    tokens: list[torch.Tensor],
    token_grads: list[torch.Tensor],
    query: torch.Tensor,
    key_mask: torch.Tensor,
    rollout_layers: list[int],
    gradient_layers: list[int],
    tau: float,
    eps: float,
) -> dict[str, torch.Tensor]:
    """Rollout, consistency and gradient scores (B, T) over the tokens selected by ``key_mask``,
    read from the attention row of token ``query`` (CLS for images, EOT for text)."""
    n_blocks = len(attention)
    mean_att = torch.stack([a.float().mean(1) for a in attention])  # (L, B, T, T)
    mask = key_mask.unsqueeze(0)
    # Eq. 1: multi-scale rollout
    r = query_rows(rollout_matrices(mean_att)[rollout_layers], query)  # (|𝓛|, B, T)
    w = layer_weights(rollout_layers, n_blocks, tau, r.device).view(-1, 1, 1)
    m_roll = (w * masked_minmax(r, mask.expand_as(r))).sum(0)
    # Eq. 2: layer consistency of the raw (head-mean) attention row
    a = masked_minmax(query_rows(mean_att[rollout_layers], query), mask.expand(len(rollout_layers), -1, -1))
    var = a.var(0, unbiased=False)
    mean_var = (var * key_mask).sum(-1, keepdim=True) / key_mask.sum(-1, keepdim=True).clamp_min(1)
    consistency = 1.0 / (1.0 + var / (mean_var + eps))
    # similarity gradient x block-input tokens
    grad = torch.stack([(token_grads[i].float() * tokens[i].float()).sum(-1).relu() for i in gradient_layers])
    return {"rollout": m_roll, "consistency": consistency, "gradient": grad.mean(0)}


@dataclass(frozen=True)
class PriorMaps:
    """The text-guided priors of a batch: P (Eqs. 3-5), norm(P), and whether each phrase named a
    location (False: P is flat and norm(P) all zeros)."""

    raw: torch.Tensor  # (B, H, W)
    normalised: torch.Tensor  # (B, H, W)
    present: list[bool]


@lru_cache(maxsize=256)  # ~0.4 MB per entry at 224 px: films of many sizes would fill a big cache
def _prior_cached(
    text: str, size: tuple[int, int], sigma: float, strength: float, image_size: tuple[int, int] | None, input_mode: str
) -> tuple[np.ndarray, np.ndarray, bool]:
    """P, norm(P) and "a location was found" for one phrase on one film size; computed once."""
    from matex.priors import spatial_prior

    p = np.asarray(
        spatial_prior(text, size, sigma=sigma, strength=strength, image_size=image_size, input_mode=input_mode),
        dtype=np.float32,
    )
    if p.shape != tuple(size):
        raise ConfigError(f"spatial_prior returned shape {p.shape} for size {size}")
    normalised = minmax_norm(torch.from_numpy(p)).numpy()
    for a in (p, normalised):
        a.setflags(write=False)
    return p, normalised, bool((p != 1).any())


def spatial_priors(
    texts: Sequence[str],
    size: tuple[int, int],
    sigma: float,
    strength: float,
    device=None,
    image_sizes: Sequence[tuple[int, int]] | None = None,
    input_mode: str = "center_crop",
) -> PriorMaps:
    """Stack the text-guided priors of ``texts`` at ``size``, each laid on the model input as its
    film (``image_sizes``: (height, width) per text; None = the input is the film) went through
    ``input_mode`` (issue 12, finding 10). Each (phrase, film size) is computed once."""
    films = list(image_sizes) if image_sizes is not None else [None] * len(texts)
    cached = [
        _prior_cached(
            t, tuple(size), float(sigma), float(strength), None if f is None else (int(f[0]), int(f[1])), input_mode
        )
        for t, f in zip(texts, films)
    ]
    return PriorMaps(
        raw=torch.from_numpy(np.stack([c[0] for c in cached])).to(device),
        normalised=torch.from_numpy(np.stack([c[1] for c in cached])).to(device),
        present=[c[2] for c in cached],
    )


# MATEX's defaults, named once: its no-prior control (matex_noprior.py) keeps the same ones.
ALPHA, BETA, GAMMA, DELTA = 0.5, 0.2, 0.35, 0.2
TAU = 0.5
GRADIENT_LAYERS = 4
CONSISTENCY_EPS = 1e-06


@register("matex", reference="Imran, Lee, Lee, arXiv 2601.11666, 2026")
def matex(
    ctx: ForwardContext,
    *,
    alpha: float = ALPHA,
    beta: float = BETA,
    gamma: float = GAMMA,
    delta: float = DELTA,
    tau: float = TAU,
    rollout_layers: int | list[int] | None = None,
    gradient_layers: int | list[int] = GRADIENT_LAYERS,
    consistency_eps: float = CONSISTENCY_EPS,
    prior_sigma: float = 0.1,
    prior_strength: float = 2.5,
) -> ExplainOutput:
    """The fused MATEX map, its components, and per-token text scores."""
    use_text = ctx.has_text_tower
    n_blocks = len(ctx.vision_blocks)
    roll_layers = layer_set(rollout_layers, n_blocks, "attribution.params.matex.rollout_layers")
    grad_layers = layer_set(gradient_layers, n_blocks, "attribution.params.matex.gradient_layers", last_k=True)
    # gradients only where they are read: the last k vision blocks and the text tower's first block
    tr = ctx.trace(text=use_text, token_grads={"vision": grad_layers, "text": [0]})
    device = tr.vision.tokens[0].device
    comp = _vision_components(tr, roll_layers, grad_layers, tau, consistency_eps)
    size = ctx.size
    rollout = upsample(tokens_to_grid(comp["rollout"][:, 1:]), size)
    consistency = upsample(tokens_to_grid(comp["consistency"][:, 1:]), size)
    gradient = upsample(tokens_to_grid(comp["gradient"][:, 1:]), size)
    prior = spatial_priors(ctx.texts, size, prior_sigma, prior_strength, device, ctx.image_sizes, ctx.input_mode)
    components = {
        "rollout": rollout,
        "consistency": consistency,
        "gradient": minmax_norm(gradient),
        "prior": prior.normalised,
        "grad_prior": minmax_norm(gradient * prior.raw),
        "grad_consistency": minmax_norm(gradient * consistency),
    }
    # fusion (docs/method.md), accumulated in place (full-size maps: every temporary costs a pass over B x H x W)
    fused = components["grad_prior"].mul(alpha).add_(rollout, alpha=beta)
    fused = minmax_norm(fused.add_(components["grad_consistency"], alpha=gamma).add_(prior.normalised, alpha=delta))
    text_scores = None
    if use_text and tr.text is not None:
        text_scores = _text_scores(tr, device, (alpha, beta, gamma), tau, consistency_eps)

    present = prior.present
    return ExplainOutput(
        image=fused,
        text=text_scores,
        components=components,
        meta={
            "options": {
                "rollout_layers": roll_layers,
                "gradient_layers": grad_layers,
                "layer_weights": layer_weights(roll_layers, n_blocks, tau).tolist(),
                "prior_present": present,
                "text_side": "rollout(EOT row) + gradient x token embedding" if text_scores is not None else None,
            }
        },
    )


def _vision_components(tr, roll_layers: list[int], grad_layers: list[int], tau: float, eps: float) -> dict:
    """The vision tower's per-token rollout, consistency and gradient (:func:`token_components`),
    read from the [CLS] row over the patch tokens."""
    b, t = tr.vision.tokens[0].shape[:2]
    device = tr.vision.tokens[0].device
    patches = torch.ones(b, t, dtype=torch.bool, device=device)
    patches[:, 0] = False
    cls = torch.zeros(b, dtype=torch.long, device=device)
    return token_components(
        tr.vision.attention, tr.vision.tokens, tr.vision.token_grads, cls, patches, roll_layers, grad_layers, tau, eps
    )


def _text_scores(
    tr, device: torch.device, weights: tuple[float, float, float], tau: float, eps: float
) -> list[np.ndarray]:
    """Per text, one score per real token (SOT..EOT): the same fusion on the text tower, rollout from
    the pooled token's row over every text block, gradient x token embedding at its first block
    (``weights``: MATEX's alpha, beta, gamma)."""
    alpha, beta, gamma = weights
    eot = tr.eot.to(device)  # last real token (EOT; [SEP] for a BERT tower)
    query = tr.text_query.to(device) if tr.text_query is not None else eot  # the pooled token
    n_text = len(tr.text.attention)
    real = torch.arange(tr.text.tokens[0].shape[1], device=device).unsqueeze(0) <= eot.unsqueeze(1)
    tcomp = token_components(
        tr.text.attention, tr.text.tokens, tr.text.token_grads, query, real, list(range(n_text)), [0], tau, eps
    )
    g = masked_minmax(tcomp["gradient"], real)
    scores = masked_minmax(
        alpha * g + beta * tcomp["rollout"] + gamma * masked_minmax(tcomp["gradient"] * tcomp["consistency"], real),
        real,
    )
    scores = scores.cpu().numpy().astype(np.float32)
    return [scores[i, : int(e) + 1].copy() for i, e in enumerate(eot.tolist())]
