"""One adapter per transformer kind, so the trace records the same things in each (docs/method.md):
open_clip's ``ResidualAttentionBlock`` ViTs and text towers, timm ``VisionTransformer`` trunks
(BiomedCLIP's vision tower) and Hugging Face BERT encoders (BiomedCLIP's text tower).

Each adapter swaps a block's attention for an explicit softmax(qk^T·scale + mask)·v equal to the
model's, that keeps the probabilities in the graph and appends to the tower record: the
probabilities (B, heads, T, T), q/k/v (B, heads, T, head_dim) and the context (B, T, heads·head_dim)
that enters the output projection. Nothing is edited on disk or on the class: the swap is an
instance attribute, removed when the record closes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import MatexError


def tower_kind(tower: nn.Module) -> str:
    """``open_clip`` | ``timm`` | ``hf_bert``, or a MatexError naming what was found."""
    if hasattr(tower, "resblocks"):
        return "open_clip"
    if hasattr(tower, "blocks") and hasattr(tower, "patch_embed"):
        return "timm"
    if hasattr(getattr(tower, "encoder", None), "layer"):
        return "hf_bert"
    raise MatexError(
        f"{type(tower).__name__} is not a supported transformer: expected an open_clip transformer "
        "(.resblocks), a timm VisionTransformer (.blocks) or a Hugging Face BERT encoder (.encoder.layer)"
    )


def tower_blocks(tower: nn.Module) -> list[nn.Module]:
    """The blocks of ``tower`` in order, checked to have the attention the adapter expects."""
    kind = tower_kind(tower)
    if kind == "open_clip":
        blocks = list(tower.resblocks)
        for i, blk in enumerate(blocks):
            attn = getattr(blk, "attn", None)
            if not isinstance(attn, nn.MultiheadAttention) or attn.in_proj_weight is None:
                raise MatexError(
                    f"block {i} ({type(blk).__name__}) has no packed nn.MultiheadAttention at .attn; "
                    "only open_clip ResidualAttentionBlock ViTs are supported"
                )
        return blocks
    if kind == "timm":
        blocks = list(tower.blocks)
        for i, blk in enumerate(blocks):
            attn = getattr(blk, "attn", None)
            if not (hasattr(attn, "qkv") and hasattr(attn, "num_heads")) or getattr(attn, "gate", None) is not None:
                raise MatexError(f"timm block {i} ({type(blk).__name__}) has no plain qkv attention at .attn")
        return blocks
    blocks = list(tower.encoder.layer)
    for i, layer in enumerate(blocks):
        if not hasattr(getattr(getattr(layer, "attention", None), "self", None), "query"):
            raise MatexError(f"BERT layer {i} has no self-attention with query/key/value at .attention.self")
    return blocks


def is_batch_first(tower: nn.Module) -> bool:
    return bool(getattr(tower, "batch_first", True)) if tower_kind(tower) == "open_clip" else True


def _masked(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Apply a boolean (True = attend) or additive mask broadcastable to (B, heads, T, T)."""
    if mask is None:
        return scores
    if mask.dtype == torch.bool:
        return scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return scores + mask.to(scores.dtype)


def _record(rec: Any, probs, q, k, v, context) -> None:
    rec.attention.append(probs)
    rec.qkv.append((q, k, v))
    rec.contexts.append(context)


def _open_clip_attention(attn: nn.MultiheadAttention, rec: Any) -> Callable:
    def attention(
        q_x: torch.Tensor,
        k_x: torch.Tensor | None = None,
        v_x: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if k_x is not None or v_x is not None:
            raise MatexError("cross-attention blocks are not supported by the attribution wrapper")
        x = q_x if attn.batch_first else q_x.transpose(0, 1)
        b, t, d = x.shape
        heads = attn.num_heads
        q, k, v = (
            F.linear(x, attn.in_proj_weight, attn.in_proj_bias).view(b, t, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        )
        scores = (q @ k.transpose(-2, -1)) * (d // heads) ** -0.5
        if attn_mask is not None:
            mask = attn_mask if attn_mask.ndim == 2 else attn_mask.view(b, heads, t, t)
            scores = (
                scores.masked_fill(mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.to(scores.dtype)
            )
        probs = scores.softmax(-1)
        context = (probs @ v).transpose(1, 2).reshape(b, t, d)
        _record(rec, probs, q, k, v, context)
        out = attn.out_proj(context)
        return out if attn.batch_first else out.transpose(0, 1)

    return attention


def _timm_attention(attn: nn.Module, rec: Any) -> Callable:
    def forward(x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        if is_causal:
            raise MatexError("causal timm attention is not supported by the attribution wrapper")
        b, t, _ = x.shape
        heads, head_dim = (
            attn.num_heads,
            getattr(attn, "head_dim", None) or attn.qkv.out_features // (3 * attn.num_heads),
        )
        q, k, v = attn.qkv(x).reshape(b, t, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = attn.q_norm(q), attn.k_norm(k)
        probs = _masked((q * attn.scale) @ k.transpose(-2, -1), attn_mask).softmax(-1)
        context = (probs @ v).transpose(1, 2).reshape(b, t, heads * head_dim)
        _record(rec, probs, q, k, v, context)
        out = getattr(attn, "norm", nn.Identity())(context)
        return attn.proj_drop(attn.proj(out))

    return forward


def _bert_self_attention(sa: nn.Module, rec: Any) -> Callable:
    def forward(hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, *args, **kwargs):
        b, t, _ = hidden_states.shape
        size = sa.attention_head_size
        split = lambda z: z.view(b, t, -1, size).transpose(1, 2)  # noqa: E731
        q, k, v = split(sa.query(hidden_states)), split(sa.key(hidden_states)), split(sa.value(hidden_states))
        scale = getattr(sa, "scaling", size**-0.5)
        probs = _masked((q @ k.transpose(-1, -2)) * scale, attention_mask).softmax(-1)
        context = (probs @ v).transpose(1, 2).reshape(b, t, -1)
        _record(rec, probs, q, k, v, context)
        return context, probs

    return forward


def attention_patches(tower: nn.Module, rec: Any) -> list[tuple[nn.Module, str, Callable]]:
    """(module, attribute, replacement) per block: set as instance attributes while recording."""
    kind = tower_kind(tower)
    blocks = tower_blocks(tower)
    if kind == "open_clip":
        return [(blk, "attention", _open_clip_attention(blk.attn, rec)) for blk in blocks]
    if kind == "timm":
        return [(blk.attn, "forward", _timm_attention(blk.attn, rec)) for blk in blocks]
    return [(layer.attention.self, "forward", _bert_self_attention(layer.attention.self, rec)) for layer in blocks]


# -- the parts of a vision tower around its blocks (for LeGrad's per-layer readout and M2IB) --------
def vision_embed(visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Tokens (B, T, D) entering the first block."""
    if hasattr(visual, "trunk"):
        trunk = visual.trunk
        x = trunk._pos_embed(trunk.patch_embed(images))
        return trunk.norm_pre(trunk.patch_drop(x))
    return visual._embeds(images)


def vision_readout(visual: nn.Module, tokens: torch.Tensor, pooling: str = "model") -> torch.Tensor:
    """Image features (B, embed_dim) from a block's output tokens (B, T, D) through the final norm,
    the pooling (``model``: the model's own; ``mean``: all tokens averaged) and the projection."""
    if hasattr(visual, "trunk"):
        trunk = visual.trunk
        x = trunk.norm(tokens)
        pooled = trunk.forward_head(x) if pooling == "model" else trunk.head(trunk.fc_norm(x.mean(1)))
        return visual.head(pooled)
    if pooling == "mean":
        pooled = visual.ln_post(tokens.mean(1))
    else:
        pooled, _ = visual._pool(tokens)
    return pooled @ visual.proj if visual.proj is not None else pooled


def first_norm(block: nn.Module) -> nn.Module:
    """The LayerNorm a pre-norm block applies before its attention (open_clip ``ln_1``, timm ``norm1``)."""
    norm = getattr(block, "ln_1", None) or getattr(block, "norm1", None)
    if norm is None:
        raise MatexError(f"{type(block).__name__} has no pre-attention LayerNorm (ln_1 / norm1)")
    return norm
