"""Recording a transformer tower's attention probabilities and block inputs during one forward pass
(the machinery under :class:`~matex.attribution.wrapper.ForwardContext`).

open_clip is not edited: :func:`record_tower` temporarily replaces each ``ResidualAttentionBlock``'s
``attention`` method on the instance with an explicit softmax(qk^T/sqrt(d) + mask)·v that keeps the
probabilities in the graph, and records block inputs with forward pre-hooks; both are restored when
the context exits.

Thread safety: patching and hooking change the shared model, so every ``explain`` call holds the
model's lock (:func:`model_session`) for its whole duration: calls from threads on one model run one
at a time and give the maps serial calls give; calls on different models run in parallel. Every
call leaves the model as it found it (training flags, instance attributes, hooks), also when it raises.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import MatexError
from .towers import attention_patches, is_batch_first, tower_blocks

_MISSING = object()
_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(module: nn.Module) -> threading.RLock:
    """The re-entrant lock of ``module`` (one per model object, dropped with the model)."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(module)
        if lock is None:
            lock = _LOCKS[module] = threading.RLock()
        return lock


def _hook_state(module: nn.Module) -> tuple:
    """What a call may change on one module: its training flag, instance attributes and hooks."""
    hooks = tuple(
        tuple(getattr(module, name, {}).keys())
        for name in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_forward_hooks_with_kwargs")
    )
    return module.training, tuple(sorted(module.__dict__)), hooks


def module_state(root: nn.Module) -> dict[str, tuple]:
    """Per submodule of ``root``: training flag, instance attribute names and hook ids (for tests and
    for checking that a call left the model as it found it)."""
    return {name: _hook_state(m) for name, m in root.named_modules()}


@contextlib.contextmanager
def model_session(module: nn.Module) -> Iterator[None]:
    """Hold ``module``'s lock, put it in eval mode (dropout off: maps must be deterministic) and, on
    exit, also after an error, give every submodule back its own training flag.

    Concurrent ``explain`` calls on one model serialise here (patches and hooks live on the shared
    model); nested calls from the same thread re-enter."""
    with model_lock(module):
        flags = [(m, m.training) for m in module.modules()]
        module.eval()
        try:
            yield
        finally:
            for m, flag in flags:
                m.training = flag


@dataclass
class TowerRecord:
    """What one transformer recorded during the forward pass (tensors still in the graph)."""

    batch_first: bool
    attention: list[torch.Tensor] = field(default_factory=list)  # per block (B, heads, T, T)
    inputs: list[torch.Tensor] = field(default_factory=list)  # per block, as the block saw it
    outputs: list[torch.Tensor] = field(default_factory=list)  # per block, as the block returned it
    # per block: the attention's queries, keys and values after the input projection, as computed
    # (B, heads, T, head_dim; no copy is made), and its context softmax(qk^T)·v with heads
    # concatenated (B, T, D), the input of the output projection
    qkv: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=list)
    contexts: list[torch.Tensor] = field(default_factory=list)

    def projections(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Block i's queries, keys and values as (B, T, D), heads concatenated like the context."""
        return tuple(z.transpose(1, 2).flatten(2) for z in self.qkv[i])  # type: ignore[return-value]

    def tokens(self, i: int) -> torch.Tensor:
        """Block i's input as (B, T, D) whatever the transformer's layout."""
        x = self.inputs[i]
        return x if self.batch_first else x.transpose(0, 1)

    def output_tokens(self, i: int) -> torch.Tensor:
        """Block i's output as (B, T, D) whatever the transformer's layout."""
        x = self.outputs[i]
        return x if self.batch_first else x.transpose(0, 1)


@dataclass
class TowerTrace:
    """Detached per-block tensors of one tower and, when requested, their gradients w.r.t. S."""

    attention: list[torch.Tensor]  # (B, heads, T, T)
    tokens: list[torch.Tensor]  # block inputs (B, T, D)
    attention_grads: list[torch.Tensor] | None = None
    token_grads: list[torch.Tensor | None] | None = None  # None for blocks not asked for


@dataclass
class Trace:
    similarity: torch.Tensor  # (B,) S per pair
    vision: TowerTrace
    text: TowerTrace | None = None
    input_grad: torch.Tensor | None = None  # (B, 3, H, W) dS/dx
    eot: torch.Tensor | None = None  # (B,) index of the last real text token (EOT / [SEP])
    text_query: torch.Tensor | None = None  # (B,) index of the token the text tower pools


def blocks_of(transformer: nn.Module) -> list[nn.Module]:
    """The blocks of an open_clip, timm or Hugging Face BERT transformer (see ``towers``)."""
    return tower_blocks(transformer)


@contextlib.contextmanager
def record_tower(transformer: nn.Module, leaf_input: bool = True) -> Iterator[TowerRecord]:
    """Swap every block's attention for a recording one and hook the block's input and output,
    for the duration of the context (open_clip, timm and BERT towers: ``towers.attention_patches``).

    leaf_input: when the first block's input does not require grad (frozen embeddings), replace it
    by a detached copy that does, so gradients w.r.t. block inputs always exist."""
    blocks = tower_blocks(transformer)
    rec = TowerRecord(batch_first=is_batch_first(transformer))
    patches = attention_patches(transformer, rec)
    saved, handles = [], []

    def pre_hook(module, args, kwargs):
        x = args[0] if args else kwargs["hidden_states"]
        if leaf_input and not rec.inputs and torch.is_grad_enabled() and not x.requires_grad:
            x = x.detach().requires_grad_(True)
            if args:
                args = (x,) + tuple(args[1:])
            else:
                kwargs = {**kwargs, "hidden_states": x}
        rec.inputs.append(x)
        return args, kwargs

    def post_hook(module, args, output):
        rec.outputs.append(output[0] if isinstance(output, (tuple, list)) else output)

    try:
        for owner, attr, fn in patches:
            saved.append((owner, attr, owner.__dict__.get(attr, _MISSING)))
            setattr(owner, attr, fn)
        for blk in blocks:
            handles.append(blk.register_forward_pre_hook(pre_hook, with_kwargs=True))
            handles.append(blk.register_forward_hook(post_hook))
        yield rec
    finally:
        for h in handles:
            h.remove()
        for owner, attr, old in saved:
            if old is _MISSING:
                owner.__dict__.pop(attr, None)
            else:
                setattr(owner, attr, old)


def eot_index(tokens: torch.Tensor) -> torch.Tensor:
    """open_clip's argmax pooling: the EOT token has the largest id."""
    return tokens.argmax(dim=-1)


def _grad_blocks(spec: bool | Mapping[str, Iterable[int]], tower: str, n_blocks: int) -> list[int]:
    """The blocks of ``tower`` whose input-token gradients ``trace(token_grads=spec)`` asked for."""
    if isinstance(spec, Mapping):
        blocks = sorted({int(i) for i in spec.get(tower, ())})
        bad = [i for i in blocks if not 0 <= i < n_blocks]
        if bad:
            raise MatexError(f"token gradients asked for {tower} blocks {bad}; the tower has {n_blocks} blocks")
        return blocks
    return list(range(n_blocks)) if spec else []


def _detach_all(ts: list[torch.Tensor]) -> list[torch.Tensor]:
    return [t.detach() for t in ts]
