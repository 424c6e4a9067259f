"""Grad-ECLIP (Zhao et al., ICML 2024; image and text sides in arXiv 2502.18816, 2025): the
gradient-weighted decomposition of the last attention layer's output.

The pooled token's attention output of the last block is o = Σ_j A_{0j} v_j (heads concatenated,
before the output projection). Grad-ECLIP keeps the decomposition over source tokens j but
replaces the sharp softmax weights by a "loosened" attention and weighs each channel c by the
gradient of the score:

    w_c = ∂S/∂o_c                    (channel importance, at the pooled token's row)
    λ_j = minmax_j cos(q_0, k_j)     (loosened attention over the explained tokens)
    H_j = ReLU(Σ_c w_c · v_{j,c} · λ_j)

Image: the pooled token is CLS, j runs over the patches. Text: the pooled token is EOT, j over the
phrase's tokens, summed over the last ``text_layers`` blocks before the ReLU; the start and end
tokens get 0 and the word tokens are min-max normalised (the authors drop both and normalise the
rest). ``loosen=False`` uses λ ≡ 1. One forward and one backward pass.

Deviation: the authors' code recomputes the last block with the heads merged into one; we keep the
model's own multi-head forward, so S is the model's similarity."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .common import grid_to_image
from .registry import ExplainOutput, register
from .wrapper import ForwardContext


def loosened_attention(query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """λ (B, N): cos(query_b, keys_bj) min-max normalised over j per pair (a flat row gives zeros)."""
    cos = (F.normalize(query.float(), dim=-1).unsqueeze(1) * F.normalize(keys.float(), dim=-1)).sum(-1)
    lo, hi = cos.amin(1, keepdim=True), cos.amax(1, keepdim=True)
    return (cos - lo) / (hi - lo).clamp_min(torch.finfo(cos.dtype).tiny)


def _decomposition(
    grad_row: torch.Tensor, values: torch.Tensor, query: torch.Tensor, keys: torch.Tensor, loosen: bool
) -> torch.Tensor:
    """Σ_c w_c · v_{j,c} · λ_j (B, N) before the ReLU."""
    scores = (grad_row.float().unsqueeze(1) * values.float()).sum(-1)
    return scores * loosened_attention(query, keys) if loosen else scores


@register("grad_eclip", reference="Zhao et al., ICML 2024")
def grad_eclip(ctx: ForwardContext, *, loosen: bool = True, text_layers: int = 1) -> ExplainOutput:
    use_text = ctx.has_text_tower
    with ctx.recorded_pass(text=use_text) as (vrec, trec, sim):
        n_text = len(trec.contexts) if trec is not None else 0
        if use_text and not 1 <= text_layers <= n_text:
            raise ConfigError(
                f"attribution.params.grad_eclip.text_layers={text_layers}: the text tower has {n_text} blocks"
            )
        wanted = [vrec.contexts[-1]] + (trec.contexts[n_text - text_layers :] if trec is not None else [])
        grads = torch.autograd.grad(sim.sum(), wanted)
        q, k, v = vrec.projections(len(vrec.contexts) - 1)
        w = grads[0][:, 0]  # CLS row: channel weights
        image = _decomposition(w, v[:, 1:], q[:, 0], k[:, 1:], loosen).relu()
        text_scores = None
        if trec is not None:
            text_scores = _text_scores(ctx, trec, grads[1:], n_text - text_layers, loosen)
    return ExplainOutput(
        image=grid_to_image(image.detach(), ctx.size),
        text=text_scores,
        meta={
            "options": {
                "loosen": loosen,
                "text_layers": text_layers if use_text else None,
                "image_layer": "last block",
                "target": "diagonal similarity",
            }
        },
    )


def _text_scores(ctx: ForwardContext, trec, grads, first: int, loosen: bool) -> list[np.ndarray]:
    """Per text: scores for tokens 0..EOT (start and end tokens 0, words min-max normalised), read
    from the row of the pooled token (EOT for open_clip, [CLS] for a BERT tower)."""
    query, eot = ctx.text_positions()
    rows = torch.arange(eot.shape[0], device=eot.device)
    total = 0
    for layer, g in enumerate(grads, start=first):
        q, k, v = trec.projections(layer)
        total = total + _decomposition(g[rows, query], v, q[rows, query], k, False) * (
            _masked_loosened(q[rows, query], k, eot) if loosen else 1.0
        )
    scores = total.detach().relu().cpu().numpy()
    out = []
    for i, e in enumerate(eot.tolist()):
        s = scores[i, : e + 1].astype(np.float32).copy()
        s[0] = s[e] = 0.0
        words = s[1:e]
        if words.size:
            span = float(words.max() - words.min())
            s[1:e] = (words - words.min()) / span if span > 0 else 0.0
        out.append(s)
    return out


def _masked_loosened(query: torch.Tensor, keys: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
    """λ over the tokens 0..EOT of each text (the range is set by those tokens only)."""
    cos = (F.normalize(query.float(), dim=-1).unsqueeze(1) * F.normalize(keys.float(), dim=-1)).sum(-1)
    real = torch.arange(keys.shape[1], device=keys.device).unsqueeze(0) <= eot.unsqueeze(1)
    big = torch.finfo(cos.dtype).max
    lo = torch.where(real, cos, big).amin(1, keepdim=True)
    hi = torch.where(real, cos, -big).amax(1, keepdim=True)
    return torch.where(real, (cos - lo) / (hi - lo).clamp_min(torch.finfo(cos.dtype).tiny), 0.0)
