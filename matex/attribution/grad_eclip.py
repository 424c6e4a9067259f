"""Grad-ECLIP (Zhao et al., ICML 2024; image and text sides in arXiv 2502.18816, 2025): the
gradient-weighted decomposition of the last attention layer's output.

The pooled token's attention output of the last block is o = Σ_j A_{0j} v_j (heads concatenated,
before the output projection). Grad-ECLIP keeps the decomposition over source tokens j but
replaces the sharp softmax weights by a "loosened" attention and weighs each channel c by the
gradient of the score:

    w_c = ∂S/∂o_c                    (channel importance, at the pooled token's row)
    λ_j = minmax_j cos(q_0, k_j)     (loosened attention over the explained tokens)
    H_j = ReLU(Σ_c w_c · v_{j,c} · λ_j)

Image: the pooled token is CLS, j runs over the patches, the last block only. Text (as the authors'
text notebook, Cyang-Zhao/Grad-Eclip): the pooled token is EOT, H is summed over the last
``text_layers`` blocks before the ReLU (default 8, the authors' choice for a 12-block tower; a
tower with fewer blocks uses all of them, recorded in the metadata), λ is min-max normalised over
every position of the context (padding included, as the authors' 77-token pass does), and the
text tower runs on the full context for that reason (a separate pass with the image embedding
fixed: ∂S/∂o of one tower does not depend on whether the other tower is in the graph). The start
and end tokens get 0 and the word tokens are min-max normalised. ``loosen=False`` uses λ ≡ 1.

Deviations (docs/fidelity.md): the authors' code recomputes the explained blocks with the heads
merged into one; we keep the model's own multi-head forward, so S is the model's similarity. Their
text scores are divided by their sum; ours are min-max normalised like every text output of matex
(the same order of the words, another scale).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .common import grid_to_image
from .recording import record_tower
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
def grad_eclip(ctx: ForwardContext, *, loosen: bool = True, text_layers: int = 8) -> ExplainOutput:
    if text_layers < 1:
        raise ConfigError(f"attribution.params.grad_eclip.text_layers={text_layers}: need at least 1")
    with ctx.recorded_pass() as (vrec, _, sim):
        (grad,) = torch.autograd.grad(sim.sum(), [vrec.contexts[-1]])
        q, k, v = vrec.projections(len(vrec.contexts) - 1)
        w = grad[:, 0]  # CLS row: channel weights
        image = _decomposition(w, v[:, 1:], q[:, 0], k[:, 1:], loosen).relu()
    text_scores, used = _text_side(ctx, text_layers, loosen) if ctx.has_text_tower else (None, None)
    return ExplainOutput(
        image=grid_to_image(image.detach(), ctx.size),
        text=text_scores,
        meta={
            "options": {
                "loosen": loosen,
                "text_layers": used,
                "image_layer": "last block",
                "text_rescaling": "every context position",
                "target": "diagonal similarity",
            }
        },
    )


def _text_side(ctx: ForwardContext, text_layers: int, loosen: bool) -> tuple[list[np.ndarray], int]:
    """Token scores from the last min(text_layers, L) text blocks, on a full-context text pass."""
    with torch.enable_grad(), record_tower(ctx.text_tower) as trec:
        ft = F.normalize(ctx.clip.encode_text(ctx.tokens).float(), dim=-1)
        n_text = len(trec.contexts)
        used = min(int(text_layers), n_text)
        sim = (ft * ctx.image_features()).sum(-1)
        grads = torch.autograd.grad(sim.sum(), trec.contexts[n_text - used :])
        scores = _text_scores(ctx, trec, grads, n_text - used, loosen)
    return scores, used


def _text_scores(ctx: ForwardContext, trec, grads, first: int, loosen: bool) -> list[np.ndarray]:
    """Per text: scores for tokens 0..EOT (start and end tokens 0, words min-max normalised), read
    from the row of the pooled token (EOT for open_clip, [CLS] for a BERT tower)."""
    query, eot = ctx.text_positions()
    rows = torch.arange(eot.shape[0], device=eot.device)
    total = 0
    for layer, g in enumerate(grads, start=first):
        q, k, v = trec.projections(layer)
        total = total + _decomposition(g[rows, query], v, q[rows, query], k, loosen)
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
