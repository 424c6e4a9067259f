"""One forward and one backward pass that expose everything the methods read (docs/method.md, 7).

For every block l of the vision (and optionally text) transformer we record the attention
probabilities A_l (B, heads, T, T) and the block INPUT tokens h_l (B, T, D), plus their gradients
with respect to the per-pair similarity S_i = cos(f_I(x_i), f_T(t_i)). The backward pass
differentiates sum_i S_i: pairs never interact inside the model (eval mode, per-token norms), so
each pair's gradient is exactly its own.

open_clip is not edited: ``record_tower`` temporarily replaces each ``ResidualAttentionBlock``'s
``attention`` method on the instance with an explicit softmax(qk^T/sqrt(d) + mask)·v that keeps
the probabilities in the graph, and records block inputs with forward pre-hooks. Block inputs,
not outputs, carry the gradient: CLIP pools the CLS token, so the last block's output patch
tokens get zero gradient (docs/evaluation.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import MatexError
from .recording import (  # noqa: F401  (TowerTrace, Trace, record_tower, eot_index: re-exported)
    TowerRecord,
    TowerTrace,
    Trace,
    _detach_all,
    _grad_blocks,
    blocks_of,
    eot_index,
    record_tower,
)
from .towers import is_batch_first, tower_kind, vision_embed
from .towers import vision_readout as _vision_readout


def encode_text_prefix(clip: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """CLIP text features (B, embed_dim), computed on the shortest prefix of the context that holds
    every text's EOT token.

    Exact for open_clip's CLIP text tower (causal attention mask, features pooled at the EOT =
    argmax token): no position attends to a later one, so the padding after the last EOT cannot
    change the EOT feature; phrases of ~10 tokens then cost ~10/77 of the full context on ViT-B-32.
    Any other text tower (no causal mask, other pooling) falls back to ``clip.encode_text``."""
    mask = getattr(clip, "attn_mask", None)
    if getattr(clip, "text_pool_type", None) != "argmax" or not _is_causal_mask(mask):
        return clip.encode_text(tokens)
    n = int(tokens.argmax(dim=-1).max()) + 1
    prefix = tokens[:, :n]
    dtype = clip.transformer.get_cast_dtype()
    x = clip.token_embedding(prefix).to(dtype) + clip.positional_embedding[:n].to(dtype)
    x = clip.ln_final(clip.transformer(x, attn_mask=mask[:n, :n]))
    pooled = x[torch.arange(x.shape[0], device=x.device), prefix.argmax(dim=-1)]
    proj = clip.text_projection
    if proj is None:
        return pooled
    return proj(pooled) if isinstance(proj, nn.Module) else pooled @ proj


def _is_causal_mask(mask: torch.Tensor | None) -> bool:
    """True for an additive (T, T) mask that is -inf strictly above the diagonal and 0 elsewhere."""
    if mask is None or mask.ndim != 2 or mask.shape[0] != mask.shape[1] or mask.dtype == torch.bool:
        return False
    causal = torch.full_like(mask, float("-inf")).triu(1)
    return bool(torch.equal(mask, causal))


@dataclass
class ForwardContext:
    """The inputs of one ``explain`` call plus the passes methods can ask for."""

    model: object  # matex.models.base.MatexModel
    images: torch.Tensor  # normalised (B, 3, H, W) on the model's device
    tokens: torch.Tensor  # (B, context_length)
    texts: list[str]
    # the original films' (height, width) per pair, for priors laid in the model's frame (issue 12,
    # finding 10); None: each image is taken to be the model input itself
    image_sizes: list[tuple[int, int]] | None = None
    # the training pairs' aligned boxes and each explained pair's finding category: read only by the
    # bias controls mean_box and category_box (None when the caller did not supply them)
    training_boxes: object | None = None  # matex.attribution.mean_box.TrainingBoxes
    categories: list[str] | None = None
    _text_features: torch.Tensor | None = field(default=None, repr=False)
    _image_features: torch.Tensor | None = field(default=None, repr=False)

    @property
    def clip(self) -> nn.Module:
        return self.model.clip

    @property
    def size(self) -> tuple[int, int]:
        return int(self.images.shape[-2]), int(self.images.shape[-1])

    @property
    def input_mode(self) -> str:
        """How films became the input (``center_crop`` or ``letterbox``), from the model's geometry."""
        geometry = getattr(self.model, "geometry", None)
        return getattr(geometry, "mode", "center_crop")

    @property
    def batch(self) -> int:
        return int(self.images.shape[0])

    @property
    def vision_tower(self) -> nn.Module:
        """The vision transformer: open_clip's ``visual.transformer`` or a timm tower's ``visual.trunk``."""
        visual = self.clip.visual
        return visual.transformer if hasattr(visual, "transformer") else visual.trunk

    @property
    def text_tower(self) -> nn.Module | None:
        """The text transformer (open_clip's ``transformer``, or ``text.transformer`` of a custom or
        Hugging Face text tower), or None when it is of no supported kind."""
        clip = self.clip
        for tower in (getattr(clip, "transformer", None), getattr(getattr(clip, "text", None), "transformer", None)):
            if tower is not None and (hasattr(tower, "resblocks") or hasattr(getattr(tower, "encoder", None), "layer")):
                return tower
        return None

    @property
    def vision_blocks(self) -> list[nn.Module]:
        return blocks_of(self.vision_tower)

    @property
    def has_text_tower(self) -> bool:
        return self.text_tower is not None

    @property
    def text_tower_kind(self) -> str | None:
        """``open_clip`` | ``hf_bert`` | None (see ``towers.tower_kind``): the partial text passes
        (``text_tokens_after``, ``text_features_from``) exist for open_clip text towers only."""
        tower = self.text_tower
        return None if tower is None else tower_kind(tower)

    def text_positions(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per text (B,): the index of the token the text tower pools (EOT for open_clip's argmax
        pooling, 0 = [CLS] for a BERT tower) and of the last real token (EOT / [SEP])."""
        text = getattr(self.clip, "text", None)
        config = getattr(text, "config", None)
        if (
            config is not None
            and hasattr(config, "pad_token_id")
            and self.text_tower is getattr(text, "transformer", None)
        ):
            last = (self.tokens != int(config.pad_token_id or 0)).sum(-1) - 1
            return torch.zeros_like(last), last
        eot = eot_index(self.tokens)
        return eot, eot

    @torch.no_grad()
    def text_features(self) -> torch.Tensor:
        """Normalised text embeddings (B, D), computed once, no graph."""
        if self._text_features is None:
            self._text_features = F.normalize(encode_text_prefix(self.clip, self.tokens).float(), dim=-1)
        return self._text_features

    @torch.no_grad()
    def image_features(self) -> torch.Tensor:
        """Normalised image embeddings (B, D), computed once, no graph."""
        if self._image_features is None:
            self._image_features = F.normalize(self.clip.encode_image(self.images).float(), dim=-1)
        return self._image_features

    def text_similarity(self, text_features: torch.Tensor, repeat: int = 1) -> torch.Tensor:
        """cos(f_I, f_T) for text features laid out as ``repeat`` copies of the batch."""
        fi = self.image_features().repeat(repeat, 1)
        return (F.normalize(text_features.float(), dim=-1) * fi).sum(-1)

    def image_similarity(self, image_features: torch.Tensor, repeat: int = 1) -> torch.Tensor:
        """cos(f_I, f_T) for image features laid out as ``repeat`` copies of the batch."""
        ft = self.text_features().repeat(repeat, 1)
        return (F.normalize(image_features.float(), dim=-1) * ft).sum(-1)

    def trace(
        self,
        *,
        text: bool = False,
        attention_grads: bool = False,
        token_grads: bool | Mapping[str, Iterable[int]] = False,
        input_grad: bool = False,
    ) -> Trace:
        """One forward pass (recording every block) and, if any gradient is asked for, one
        ``torch.autograd.grad`` call that serves all requested layers at once.

        token_grads: True = the input-token gradients of every block of every traced tower, or
        ``{"vision": blocks, "text": blocks}`` (0-based) for only those: autograd then stops at the
        lowest requested block, so a method reading the last k blocks pays the backward pass of k
        blocks, not of the whole tower. Blocks not requested get ``None`` in ``token_grads``."""
        backward = attention_grads or bool(token_grads) or input_grad
        clip = self.clip
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.set_grad_enabled(backward))
            vrec = stack.enter_context(record_tower(self.vision_tower))
            trec = stack.enter_context(record_tower(self.text_tower)) if text else None
            x = self.images.detach()
            if input_grad:
                x = x.clone().requires_grad_(True)
            fi = F.normalize(clip.encode_image(x).float(), dim=-1)
            ft = F.normalize(encode_text_prefix(clip, self.tokens).float(), dim=-1) if text else self.text_features()
            sim = (fi * ft).sum(-1)
            n_blocks = len(vrec.attention)
            if len(vrec.inputs) != n_blocks:
                raise MatexError(f"recorded {len(vrec.inputs)} block inputs but {n_blocks} attention maps")
            vision = _tower_trace(vrec, n_blocks)
            text_trace = _tower_trace(trec, len(trec.inputs)) if trec is not None else None
            input_g = None
            if backward:
                wanted = _wanted_grads(vrec, trec, attention_grads, token_grads, x if input_grad else None)
                grads = torch.autograd.grad(sim.sum(), [w[2] for w in wanted], allow_unused=True)
                grads = [torch.zeros_like(w[2]) if g is None else g for w, g in zip(wanted, grads)]
                input_g = _store_grads(wanted, grads, vrec, trec, vision, text_trace)
        query, last = self.text_positions()
        return Trace(
            similarity=sim.detach(), vision=vision, text=text_trace, input_grad=input_g, eot=last, text_query=query
        )

    @contextlib.contextmanager
    def recorded_pass(self, *, text: bool = False) -> Iterator[tuple[TowerRecord, TowerRecord | None, torch.Tensor]]:
        """One forward pass with gradients on, for methods that differentiate several scores
        themselves (LeGrad, Grad-ECLIP): yields the vision record, the text record (or None) and the
        per-pair similarity S (B,), every tensor still in the graph."""
        clip = self.clip
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.enable_grad())
            vrec = stack.enter_context(record_tower(self.vision_tower))
            trec = stack.enter_context(record_tower(self.text_tower)) if text else None
            fi = F.normalize(clip.encode_image(self.images.detach()).float(), dim=-1)
            ft = F.normalize(encode_text_prefix(clip, self.tokens).float(), dim=-1) if text else self.text_features()
            yield vrec, trec, (fi * ft).sum(-1)

    def vision_readout(self, tokens: torch.Tensor, pooling: str = "model") -> torch.Tensor:
        """Image features (B, embed_dim) read from any block's output tokens (B, T, D) through the
        final norm and projection: ``model`` pools as the model does (CLS for CLIP ViTs), ``mean``
        averages all tokens first."""
        return _vision_readout(self.clip.visual, tokens, pooling)

    # -- partial passes for methods that intervene on the tokens (M2IB) -----------------------------
    def vision_tokens_after(self, block: int) -> torch.Tensor:
        """Tokens (B, T, D) after vision block ``block`` (0-based), no graph."""
        with torch.no_grad():
            x = vision_embed(self.clip.visual, self.images)
            x = self._run_blocks(x, self.vision_blocks[: block + 1])
        return x

    def vision_features_from(self, tokens: torch.Tensor, start_block: int) -> torch.Tensor:
        """Image features (B', embed_dim) from tokens (B', T, D) entering block ``start_block``."""
        x = self._run_blocks(tokens, self.vision_blocks[start_block:])
        return _vision_readout(self.clip.visual, x)

    def _run_blocks(self, x: torch.Tensor, blocks) -> torch.Tensor:
        batch_first = is_batch_first(self.vision_tower)
        x = x if batch_first else x.transpose(0, 1)
        for blk in blocks:
            x = blk(x)
        return x if batch_first else x.transpose(0, 1)

    # -- the same partial passes on the text tower (M2IB's text side) ------------------------------
    def _text_ids_and_mask(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The token ids the text tower reads and their attention mask: the shortest prefix holding
        every EOT for a causal, argmax-pooled tower (exact, see ``encode_text_prefix``), else all."""
        mask = getattr(self.clip, "attn_mask", None)
        if getattr(self.clip, "text_pool_type", None) == "argmax" and _is_causal_mask(mask):
            n = int(self.tokens.argmax(dim=-1).max()) + 1
            return self.tokens[:, :n], mask[:n, :n]
        return self.tokens, mask

    def text_tokens_after(self, block: int) -> torch.Tensor:
        """Text tokens (B, n, D) after text block ``block`` (0-based), no graph; n as
        ``_text_ids_and_mask`` (the EOT prefix when that is exact)."""
        clip = self.clip
        ids, mask = self._text_ids_and_mask()
        dtype = clip.transformer.get_cast_dtype()
        with torch.no_grad():
            x = clip.token_embedding(ids).to(dtype) + clip.positional_embedding[: ids.shape[1]].to(dtype)
            x = self._run_text_blocks(x, clip.transformer.resblocks[: block + 1], mask)
        return x

    def text_features_from(self, tokens: torch.Tensor, start_block: int, repeat: int = 1) -> torch.Tensor:
        """Text features (B', embed_dim) from tokens (B' = repeat·B, n, D) entering text block
        ``start_block``: the remaining blocks, the final norm, open_clip's pooling, the projection."""
        from open_clip.transformer import text_global_pool

        clip = self.clip
        ids, mask = self._text_ids_and_mask()
        x = clip.ln_final(self._run_text_blocks(tokens, clip.transformer.resblocks[start_block:], mask))
        pooled = text_global_pool(
            x, ids.repeat(repeat, 1), clip.text_pool_type, eos_token_id=getattr(clip, "text_eos_id", None)
        )
        proj = clip.text_projection
        if proj is None:
            return pooled
        return proj(pooled) if isinstance(proj, nn.Module) else pooled @ proj

    def _run_text_blocks(self, x: torch.Tensor, blocks, mask: torch.Tensor | None) -> torch.Tensor:
        batch_first = bool(getattr(self.clip.transformer, "batch_first", True))
        x = x if batch_first else x.transpose(0, 1)
        for blk in blocks:
            x = blk(x, attn_mask=mask)
        return x if batch_first else x.transpose(0, 1)


def _tower_trace(rec: TowerRecord, n_blocks: int) -> TowerTrace:
    """A tower's recorded attention maps and block input tokens, detached (gradients filled later)."""
    return TowerTrace(_detach_all(rec.attention), [rec.tokens(i).detach() for i in range(n_blocks)])


def _wanted_grads(
    vrec: TowerRecord,
    trec: TowerRecord | None,
    attention_grads: bool,
    token_grads: bool | Mapping[str, Iterable[int]],
    x: torch.Tensor | None,
) -> list[tuple[str, int, torch.Tensor]]:
    """The tensors :meth:`ForwardContext.trace` differentiates, as ``(name, block, tensor)``: each
    traced tower's attention maps (``attention_grads``) and requested block inputs, then the input
    images ``x`` when given."""
    wanted: list[tuple[str, int, torch.Tensor]] = []
    for rec, name in ((vrec, "vision"), (trec, "text")):
        if rec is None:
            continue
        if attention_grads:
            wanted += [(name + ".attention", i, a) for i, a in enumerate(rec.attention)]
        wanted += [(name + ".tokens", i, rec.inputs[i]) for i in _grad_blocks(token_grads, name, len(rec.inputs))]
    if x is not None:
        wanted.append(("input", 0, x))
    return wanted


def _store_grads(
    wanted: list[tuple[str, int, torch.Tensor]],
    grads: list[torch.Tensor],
    vrec: TowerRecord,
    trec: TowerRecord | None,
    vision: TowerTrace,
    text_trace: TowerTrace | None,
) -> torch.Tensor | None:
    """Put each gradient in its tower trace's ``attention_grads`` / ``token_grads`` (token gradients
    batch-first; blocks not asked for stay None); return the input gradient, or None."""
    input_g = None
    for (name, i, _), g in zip(wanted, grads):
        tower, _, kind = name.partition(".")
        target = vision if tower == "vision" else text_trace
        if name == "input":
            input_g = g.detach()
            continue
        rec = vrec if tower == "vision" else trec
        if kind == "tokens" and not rec.batch_first:
            g = g.transpose(0, 1)
        lst = "attention_grads" if kind == "attention" else "token_grads"
        if getattr(target, lst) is None:
            setattr(target, lst, [None] * len(target.attention))
        getattr(target, lst)[i] = g.detach()
    return input_g
