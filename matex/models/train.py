"""Contrastive (CLIP) training of a :class:`MatexModel`: the demo model of the embedded default, and
the ROAR+ fine-tuning runs (degraded images in, small learning rate).

Loss: symmetric InfoNCE, L = ½·[CE(s·F_I F_Tᵀ, y) + CE(s·F_T F_Iᵀ, y)] with s = exp(logit_scale) and
unit-norm features, y the diagonal. A phrase repeated in a batch (e.g. "cardiomegaly") has identical
text features, so its copies tie: spreading the targets over them would give the same value and
gradient, and the loss floor is the mean log of the number of copies instead of 0.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data.transforms import normalize_batch
from .augment import Augmentation
from .base import MatexModel
from .retrieval import (  # noqa: F401  (re-exported: the evaluation used to live here)
    RETRIEVAL_CHUNK,
    _batches,
    _lateralised,
    evaluate_retrieval,
    laterality_accuracy,
    swap_sides,
    validation_loss,
    validation_metrics,
)

LOGIT_SCALE_MAX = math.log(100.0)  # CLIP clamps the temperature at 100


def contrastive_loss(
    model: MatexModel,
    images: torch.Tensor,
    tokens: torch.Tensor,
    hard_negatives: torch.Tensor | None = None,
    negative_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric CLIP InfoNCE over a batch of normalised images (B,3,S,S) and tokens (B,ctx).

    ``hard_negatives`` (K, ctx): extra phrases every image must rank below its own (e.g. its phrase
    with left and right exchanged); they join the image->text softmax only. ``negative_mask`` (B, K)
    True where a hard negative is in fact the image's own text (excluded)."""
    clip = model.clip
    fi = F.normalize(clip.encode_image(images), dim=-1)
    ft = F.normalize(clip.encode_text(tokens), dim=-1)
    scale = clip.logit_scale.exp()
    logits = scale * fi @ ft.t()
    targets = torch.arange(len(logits), device=logits.device)
    image_to_text = logits
    if hard_negatives is not None and len(hard_negatives):
        extra = scale * fi @ F.normalize(clip.encode_text(hard_negatives), dim=-1).t()
        if negative_mask is not None:
            extra = extra.masked_fill(negative_mask.to(extra.device), float("-inf"))
        image_to_text = torch.cat([logits, extra], dim=1)
    return 0.5 * (F.cross_entropy(image_to_text, targets) + F.cross_entropy(logits.t(), targets))


def _lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up to ``base_lr`` over ``warmup_steps``, then cosine decay to 0 at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * progress))


def _param_groups(clip: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only; gains, biases, embeddings' scalars and logit_scale are exempt."""
    decay, no_decay = [], []
    for name, p in clip.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "logit_scale" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# 64 lines, 36 of them its keyword parameters and docstring: the steps are _train_epoch, _batch_loss, _history_row
def train_clip(
    model: MatexModel,
    images_u8: np.ndarray,
    texts: Sequence[str] | torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    warmup_steps: int,
    seed: int,
    threads: int | None = None,
    progress: bool = True,
    val: tuple | None = None,
    log: Callable[[str], Any] | None = None,
    categories: Sequence[str] | None = None,
    category_prompt_fraction: float = 0.0,
    side_swap_negatives: bool = False,
    augment: Augmentation | None = None,
) -> list[dict]:
    """Train ``model`` in place with AdamW and warm-up + cosine learning rate; shuffling is seeded.

    ``images_u8``: (N, S, S) uint8 model inputs; ``texts``: N phrases, or their (N, ctx) token ids
    (text ROAR+ trains on degraded tokens, which no string reproduces). ``val``: ``(images, texts)``,
    optionally with ``categories`` and ``image_ids`` after them, evaluated after every epoch
    (:func:`~matex.models.retrieval.validation_metrics`). Returns one history row per epoch
    (epoch, train_loss, lr, and val_loss plus retrieval metrics when ``val`` is given). Deterministic
    on CPU for a fixed seed and thread count. The model is left in eval mode.

    Two text-side aids (both off by default, both need ``texts`` as strings): with
    ``category_prompt_fraction`` p, each training pair's phrase is replaced, with probability p per
    epoch, by its lower-cased category name (``categories``), so the category prompts used for
    zero-shot evaluation are in the text tower's vocabulary; ``side_swap_negatives`` adds each
    lateralised phrase with left and right exchanged as a hard negative (:func:`contrastive_loss`).
    ``augment``: random affine and exposure changes of each training image, per step (never a flip).
    """
    if len(images_u8) != len(texts):
        raise ValueError(f"train_clip: {len(images_u8)} images but {len(texts)} texts")
    if len(images_u8) < 2:
        raise ValueError("train_clip: need at least 2 pairs for a contrastive batch")
    with _torch_threads(threads), _eval_mode_after(model.clip):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        tokens_all = texts.cpu() if isinstance(texts, torch.Tensor) else model.tokenizer(list(texts))  # CPU, per batch
        aids = _TextAids.build(model, texts, categories, category_prompt_fraction, side_swap_negatives)
        total_steps = max(1, epochs * len(_batches(len(texts), batch_size, None)))
        optimizer = torch.optim.AdamW(_param_groups(model.clip, weight_decay), lr=lr, betas=(0.9, 0.98), eps=1e-6)
        schedule = functools.partial(_lr_at, base_lr=lr, warmup_steps=warmup_steps, total_steps=total_steps)
        history: list[dict] = []
        step = 0
        t_start, cpu_start = time.perf_counter(), time.process_time()  # learning curves carry their cost
        for epoch in range(1, epochs + 1):
            batches = _batches(len(texts), batch_size, generator)
            losses, sizes, step, current_lr = _train_epoch(
                model, optimizer, schedule, step, batches, images_u8, tokens_all, aids, augment, generator,
                desc=f"epoch {epoch}/{epochs}", progress=progress,
            )  # fmt: skip
            row = _history_row(epoch, losses, sizes, current_lr, step, t_start, cpu_start)
            if val is not None:
                row.update(validation_metrics(model, *val, batch_size=batch_size))
            history.append(row)
            if log is not None:
                log(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        return history


def _history_row(
    epoch: int, losses: list[float], sizes: list[int], lr: float, step: int, t_start: float, cpu_start: float
) -> dict[str, Any]:
    """An epoch's history row: its size-weighted mean training loss, last learning rate, step count
    and the wall and CPU seconds since training began."""
    return {
        "epoch": epoch,
        "train_loss": float(np.average(losses, weights=sizes)),
        "lr": lr,
        "steps": step,
        "elapsed_s": round(time.perf_counter() - t_start, 2),
        "cpu_s": round(time.process_time() - cpu_start, 2),
    }


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Torch's thread count set to ``threads`` (when given) within the block, restored after."""
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous_threads)


@contextlib.contextmanager
def _eval_mode_after(clip: torch.nn.Module) -> Iterator[None]:
    """The model is left in eval mode however the block ends."""
    try:
        yield
    finally:
        clip.eval()


def _train_epoch(
    model: MatexModel,
    optimizer: torch.optim.Optimizer,
    schedule: Callable[[int], float],
    step: int,
    batches: list[torch.Tensor],
    images_u8: np.ndarray,
    tokens_all: torch.Tensor,
    aids: _TextAids | None,
    augment: Augmentation | None,
    generator: torch.Generator,
    *,
    desc: str,
    progress: bool,
) -> tuple[list[float], list[int], int, float]:
    """One pass over ``batches`` in train mode (eval mode after): per batch, the scheduled learning rate,
    one AdamW step on :func:`contrastive_loss` and the temperature clamp. Returns the batch losses,
    the batch sizes, the global step count after the epoch and the last learning rate."""
    from tqdm.auto import tqdm

    clip = model.clip
    clip.train()
    losses, sizes = [], []
    bar = tqdm(batches, desc=desc, disable=not progress, leave=False)
    for idx in bar:
        current_lr = schedule(step)
        for group in optimizer.param_groups:
            group["lr"] = current_lr
        loss = _batch_loss(model, idx, images_u8, tokens_all, aids, augment, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            clip.logit_scale.clamp_(0, LOGIT_SCALE_MAX)
        losses.append(float(loss.detach()))
        sizes.append(len(idx))
        step += 1
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    clip.eval()
    return losses, sizes, step, current_lr


def _batch_loss(
    model: MatexModel,
    idx: torch.Tensor,
    images_u8: np.ndarray,
    tokens_all: torch.Tensor,
    aids: _TextAids | None,
    augment: Augmentation | None,
    generator: torch.Generator,
) -> torch.Tensor:
    """The contrastive loss of the pairs ``idx``: images augmented (when ``augment``) and normalised,
    texts with the text aids (category prompts, side-swapped negatives) when ``aids``."""
    device = model.device
    batch = torch.as_tensor(np.asarray(images_u8[idx.numpy()]))
    if augment is not None:
        batch = augment.apply(batch.to(torch.float32).div_(255.0), generator).mul_(255.0)
    images = normalize_batch(batch, model.mean, model.std).to(device)
    if aids is None:
        return contrastive_loss(model, images, tokens_all[idx].to(device))
    tokens, negatives, mask = aids.batch(idx, tokens_all, generator)
    return contrastive_loss(model, images, tokens.to(device), negatives, mask)


class _TextAids:
    """Per-batch text of :func:`train_clip` with category prompts and side-swapped hard negatives."""

    def __init__(
        self,
        texts: list[str],
        prompt_tokens: torch.Tensor | None,
        prompt_texts: list[str] | None,
        fraction: float,
        swap_tokens: torch.Tensor | None,
        swapped: list[str] | None,
    ):
        self.texts, self.prompt_tokens, self.prompt_texts = texts, prompt_tokens, prompt_texts
        self.fraction, self.swap_tokens, self.swapped = fraction, swap_tokens, swapped

    @classmethod
    def build(cls, model: MatexModel, texts, categories, fraction: float, side_swap: bool) -> _TextAids | None:
        if fraction <= 0 and not side_swap:
            return None
        if isinstance(texts, torch.Tensor):
            raise TypeError("train_clip: category prompts and side-swap negatives need phrases, not token ids")
        texts = list(texts)
        prompt_tokens = prompt_texts = swap_tokens = swapped = None
        if fraction > 0:
            if categories is None or len(categories) != len(texts):
                raise ValueError("train_clip: category_prompt_fraction needs one category per pair")
            prompt_texts = [str(c).lower() for c in categories]
            prompt_tokens = model.tokenizer(prompt_texts)
        if side_swap:
            swapped = [swap_sides(t) if _lateralised(t) else None for t in texts]
            swap_tokens = model.tokenizer([t if t is not None else "" for t in swapped])
        return cls(texts, prompt_tokens, prompt_texts, fraction, swap_tokens, swapped)

    def batch(self, idx: torch.Tensor, tokens_all: torch.Tensor, generator: torch.Generator):
        """(tokens, hard negative tokens or None, mask of negatives equal to a row's own text)."""
        tokens = tokens_all[idx].clone()
        own = [self.texts[i] for i in idx.tolist()]
        as_prompt = torch.zeros(len(idx), dtype=torch.bool)
        if self.prompt_tokens is not None:
            as_prompt = torch.rand(len(idx), generator=generator) < self.fraction
            tokens[as_prompt] = self.prompt_tokens[idx[as_prompt]]
            own = [self.prompt_texts[i] if p else t for i, t, p in zip(idx.tolist(), own, as_prompt.tolist())]
        if self.swap_tokens is None:
            return tokens, None, None
        rows = [j for j, i in enumerate(idx.tolist()) if self.swapped[i] is not None and not as_prompt[j]]
        if not rows:
            return tokens, None, None
        negatives = [self.swapped[int(idx[j])] for j in rows]
        mask = torch.tensor([[t == n for n in negatives] for t in own], dtype=torch.bool)
        return tokens, self.swap_tokens[idx[rows]], mask
