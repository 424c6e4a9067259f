"""Contrastive (CLIP) training of a :class:`MatexModel`: the demo model of the embedded default, and
the ROAR+ fine-tuning runs (degraded images in, small learning rate).

Loss: symmetric InfoNCE, L = ½·[CE(s·F_I F_Tᵀ, y) + CE(s·F_T F_Iᵀ, y)] with s = exp(logit_scale) and
unit-norm features, y the diagonal. A phrase repeated in a batch (e.g. "cardiomegaly") has identical
text features, so its copies tie: spreading the targets over them would give the same value and
gradient, and the loss floor is the mean log of the number of copies instead of 0.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data.transforms import normalize_batch
from .base import MatexModel

LOGIT_SCALE_MAX = math.log(100.0)  # CLIP clamps the temperature at 100
RETRIEVAL_CHUNK = 100  # pair retrieval ranks each image among 100 phrases


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


def _batches(n: int, batch_size: int, generator: torch.Generator | None) -> list[torch.Tensor]:
    """Index batches of a (seeded) permutation; a final batch of one pair (no negatives) is dropped."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    batches = list(torch.split(order, batch_size))
    return [b for b in batches if len(b) >= 2]


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
) -> list[dict]:
    """Train ``model`` in place with AdamW and warm-up + cosine learning rate; shuffling is seeded.

    ``images_u8``: (N, S, S) uint8 model inputs; ``texts``: N phrases, or their (N, ctx) token ids
    (text ROAR+ trains on degraded tokens, which no string reproduces). ``val``: ``(images, texts)``
    or ``(images, texts, categories)``, evaluated after every epoch. Returns one history row per epoch
    (epoch, train_loss, lr, and val_loss plus retrieval metrics when ``val`` is given). Deterministic
    on CPU for a fixed seed and thread count. The model is left in eval mode.

    Two text-side aids (both off by default, both need ``texts`` as strings): with
    ``category_prompt_fraction`` p, each training pair's phrase is replaced, with probability p per
    epoch, by its lower-cased category name (``categories``), so the category prompts used for
    zero-shot evaluation are in the text tower's vocabulary; ``side_swap_negatives`` adds each
    lateralised phrase with left and right exchanged as a hard negative (:func:`contrastive_loss`).
    """
    from tqdm.auto import tqdm

    if len(images_u8) != len(texts):
        raise ValueError(f"train_clip: {len(images_u8)} images but {len(texts)} texts")
    if len(images_u8) < 2:
        raise ValueError("train_clip: need at least 2 pairs for a contrastive batch")
    clip = model.clip
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        device = model.device
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        tokens_all = texts.cpu() if isinstance(texts, torch.Tensor) else model.tokenizer(list(texts))  # CPU, per batch
        aids = _TextAids.build(model, texts, categories, category_prompt_fraction, side_swap_negatives)
        steps_per_epoch = len(_batches(len(texts), batch_size, None))
        total_steps = max(1, epochs * steps_per_epoch)
        optimizer = torch.optim.AdamW(_param_groups(clip, weight_decay), lr=lr, betas=(0.9, 0.98), eps=1e-6)
        history: list[dict] = []
        step = 0
        t_start, cpu_start = time.perf_counter(), time.process_time()  # learning curves carry their cost
        for epoch in range(1, epochs + 1):
            clip.train()
            losses, sizes = [], []
            batches = _batches(len(texts), batch_size, generator)
            bar = tqdm(batches, desc=f"epoch {epoch}/{epochs}", disable=not progress, leave=False)
            for idx in bar:
                current_lr = _lr_at(step, lr, warmup_steps, total_steps)
                for group in optimizer.param_groups:
                    group["lr"] = current_lr
                images = normalize_batch(images_u8[idx.numpy()], model.mean, model.std).to(device)
                if aids is None:
                    loss = contrastive_loss(model, images, tokens_all[idx].to(device))
                else:
                    tokens, negatives, mask = aids.batch(idx, tokens_all, generator)
                    loss = contrastive_loss(model, images, tokens.to(device), negatives, mask)
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
            row: dict[str, Any] = {
                "epoch": epoch,
                "train_loss": float(np.average(losses, weights=sizes)),
                "lr": current_lr,
                "steps": step,
                "elapsed_s": round(time.perf_counter() - t_start, 2),
                "cpu_s": round(time.process_time() - cpu_start, 2),
            }
            if val is not None:
                v_images, v_texts = val[0], val[1]
                v_categories = val[2] if len(val) > 2 else None
                feats = (
                    _encode_images(model, v_images, max(batch_size, 128)),
                    _encode_texts(model, list(v_texts), max(batch_size, 128)),
                )
                row["val_loss"] = validation_loss(model, v_images, v_texts, batch_size, seed=0, features=feats)
                row.update(evaluate_retrieval(model, v_images, v_texts, v_categories, features=feats))
                row.update(laterality_accuracy(model, v_images, v_texts, image_feats=feats[0]))
            history.append(row)
            if log is not None:
                log(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        return history
    finally:
        clip.eval()
        torch.set_num_threads(previous_threads)


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


def _loss_from_features(fi: torch.Tensor, ft: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """The symmetric InfoNCE of :func:`contrastive_loss`, from unit-norm features."""
    logits = logit_scale.exp() * fi @ ft.t()
    targets = torch.arange(len(logits), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets))


@torch.no_grad()
def validation_loss(
    model: MatexModel,
    images_u8: np.ndarray,
    texts: Sequence[str],
    batch_size: int,
    seed: int = 0,
    features: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> float:
    """Mean contrastive loss (weighted by batch size) over fixed seeded batches, without gradients.

    The batches depend only on ``seed`` and N, so the losses of two models are comparable (ROAR+).
    Each pair is encoded once (the encoders see one sample at a time in eval mode, so the features do
    not depend on the batch); ``features`` reuses unit-norm (image, text) features already computed."""
    was_training = model.clip.training
    model.clip.eval()
    try:
        if features is None:
            features = (_encode_images(model, images_u8, batch_size), _encode_texts(model, list(texts), batch_size))
        fi, ft = features
        scale = model.clip.logit_scale.detach().cpu()
        total, count = 0.0, 0
        for idx in _batches(len(texts), batch_size, torch.Generator().manual_seed(seed)):
            total += float(_loss_from_features(fi[idx], ft[idx], scale)) * len(idx)
            count += len(idx)
        if count == 0:
            raise ValueError("validation_loss: need at least 2 pairs")
        return total / count
    finally:
        model.clip.train(was_training)


@torch.no_grad()
def _encode_images(model: MatexModel, images_u8: np.ndarray, batch_size: int) -> torch.Tensor:
    feats = [
        model.clip.encode_image(normalize_batch(images_u8[i : i + batch_size], model.mean, model.std).to(model.device))
        for i in range(0, len(images_u8), batch_size)
    ]
    return F.normalize(torch.cat(feats), dim=-1).cpu()


@torch.no_grad()
def _encode_texts(model: MatexModel, texts: Sequence[str], batch_size: int) -> torch.Tensor:
    feats = [
        model.clip.encode_text(model.tokenize(texts[i : i + batch_size])) for i in range(0, len(texts), batch_size)
    ]
    return F.normalize(torch.cat(feats), dim=-1).cpu()


@torch.no_grad()
def evaluate_retrieval(
    model: MatexModel,
    images_u8: np.ndarray,
    texts: Sequence[str],
    categories: Sequence[str] | None,
    batch_size: int = 128,
    features: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict:
    """Zero-shot category accuracy and image->text pair retrieval, each with its chance level.

    (a) prompts = the distinct category names, lower-cased; top-1 image->prompt accuracy, chance
    1/n_categories. (b) within consecutive chunks of 100 pairs, rank the chunk's distinct phrases for
    each image; a hit is a retrieved phrase equal to the true phrase text (R@1, R@5). Repeated phrases
    are one candidate (identical texts tie), so chance is k / n_distinct per chunk: 1 % and 5 % for
    100 distinct phrases, higher when phrases repeat (the reported chance levels say so)."""
    was_training = model.clip.training
    model.clip.eval()
    try:
        texts = list(texts)
        image_feats = features[0] if features is not None else _encode_images(model, images_u8, batch_size)
        out: dict[str, Any] = {"n_pairs": len(texts)}
        if categories is not None:
            names = sorted({str(c).lower() for c in categories})
            prompt_feats = _encode_texts(model, names, batch_size)
            predicted = (image_feats @ prompt_feats.t()).argmax(1).numpy()
            truth = np.array([names.index(str(c).lower()) for c in categories])
            out.update(
                zero_shot_accuracy=float((predicted == truth).mean()),
                zero_shot_chance=1.0 / len(names),
                n_categories=len(names),
            )
        text_feats = features[1] if features is not None else _encode_texts(model, texts, batch_size)
        hits1, hits5, chance1, chance5 = [], [], [], []
        for start in range(0, len(texts), RETRIEVAL_CHUNK):
            rows = np.arange(start, min(start + RETRIEVAL_CHUNK, len(texts)))
            candidates = sorted({texts[i] for i in rows})  # distinct phrases of the chunk
            if len(candidates) < 2:
                continue
            candidate_feats = text_feats[[rows[[texts[i] for i in rows].index(c)] for c in candidates]]
            ranking = (image_feats[rows] @ candidate_feats.t()).argsort(dim=1, descending=True).numpy()
            truth = np.array([candidates.index(texts[i]) for i in rows])
            hits1.extend(ranking[:, 0] == truth)
            hits5.extend((ranking[:, :5] == truth[:, None]).any(1))
            chance1.extend([1.0 / len(candidates)] * len(rows))
            chance5.extend([min(5, len(candidates)) / len(candidates)] * len(rows))
        if hits1:
            out.update(
                r_at_1=float(np.mean(hits1)),
                r_at_5=float(np.mean(hits5)),
                r_at_1_chance=float(np.mean(chance1)),
                r_at_5_chance=float(np.mean(chance5)),
                retrieval_chunk=RETRIEVAL_CHUNK,
            )
        return out
    finally:
        model.clip.train(was_training)


_SIDE_SWAP = {"left": "right", "right": "left", "Left": "Right", "Right": "Left"}
_SIDE_WORD = re.compile(r"\b(left|right|Left|Right)\b")


def _lateralised(text: str) -> bool:
    """The phrase names exactly one side (left or right, not both)."""
    return len({w.lower() for w in _SIDE_WORD.findall(text)}) == 1


def swap_sides(text: str) -> str:
    """The phrase with every 'left' and 'right' exchanged ("left apical pneumothorax" -> "right ...")."""
    return _SIDE_WORD.sub(lambda m: _SIDE_SWAP[m.group(1)], text)


@torch.no_grad()
def laterality_accuracy(
    model: MatexModel,
    images_u8: np.ndarray,
    texts: Sequence[str],
    batch_size: int = 128,
    image_feats: torch.Tensor | None = None,
) -> dict:
    """Share of lateralised pairs (the phrase names exactly one side) on which the model scores the
    true phrase above the same phrase with left and right exchanged: S(x, t) > S(x, swap(t)).
    Chance is 50 %; a model blind to side scores about 50 % (ties count as misses)."""
    texts = list(texts)
    rows = [i for i, t in enumerate(texts) if _lateralised(t)]
    if not rows:
        return {"laterality_accuracy": float("nan"), "n_lateralised": 0}
    fi = image_feats[rows] if image_feats is not None else _encode_images(model, images_u8[rows], batch_size)
    true_t = _encode_texts(model, [texts[i] for i in rows], batch_size)
    swap_t = _encode_texts(model, [swap_sides(texts[i]) for i in rows], batch_size)
    wins = ((fi * true_t).sum(-1) > (fi * swap_t).sum(-1)).float()
    return {"laterality_accuracy": float(wins.mean()), "n_lateralised": len(rows)}


def train_demo(
    pairs_parquet, images_npy, cfg: Mapping[str, Any], out_checkpoint, out_log, progress: bool = True
) -> dict:
    """Train the demo CLIP on the ``train`` pairs, evaluate on ``val``, write checkpoint + JSON log.

    ``pairs_parquet`` rows (pair_id, phrase, category, split) align with ``images_npy`` (n_pairs, S, S)
    uint8. Returns the training log (per-epoch history, final metrics with chance levels, wall time)."""
    import logging

    import pandas as pd

    from .. import __version__
    from ..config import section_hash
    from ..data.transforms import InputGeometry
    from ..errors import ConfigError, DataError
    from ..io import write_json
    from .loading import demo_model_cfg, load_model, save_checkpoint

    logger = logging.getLogger("matex.train")
    t0 = time.perf_counter()
    pairs = pd.read_parquet(pairs_parquet)
    missing = [c for c in ("phrase", "category", "split") if c not in pairs.columns]
    if missing:
        raise DataError(f"pairs table lacks columns {missing}", file=str(pairs_parquet))
    images = np.load(images_npy, mmap_mode="r")
    size = int(cfg["input"]["size"])
    if images.ndim != 3 or images.dtype != np.uint8 or images.shape[1:] != (size, size):
        raise DataError(
            f"images must be uint8 (n_pairs, {size}, {size}) (input.size), got {images.dtype} {images.shape}",
            file=str(images_npy),
        )
    if len(images) != len(pairs):
        raise DataError(f"{len(images)} images but {len(pairs)} pairs in {pairs_parquet}", file=str(images_npy))
    demo = cfg["model"]["demo"]
    seed = int(cfg["seed"])
    geometry = InputGeometry(size, cfg["input"].get("mode", "center_crop"))
    model = load_model(
        "demo",
        demo=demo,
        geometry=geometry,
        seed=seed,
        name=cfg["model"].get("name", "demo"),
        mean=cfg["input"].get("mean"),
        std=cfg["input"].get("std"),
    )
    model_cfg = demo_model_cfg(demo, size)
    split = pairs["split"].astype(str).to_numpy()
    train_rows, val_rows = np.flatnonzero(split == "train"), np.flatnonzero(split == "val")
    if len(train_rows) < 2:
        raise ConfigError(f"too few training pairs in {pairs_parquet} ({len(train_rows)}) to train the demo model")
    phrases = pairs["phrase"].astype(str).tolist()
    categories = pairs["category"].astype(str).tolist()
    train_images = np.ascontiguousarray(images[train_rows])
    val = None
    if len(val_rows) >= 2:
        val = (
            np.ascontiguousarray(images[val_rows]),
            [phrases[i] for i in val_rows],
            [categories[i] for i in val_rows],
        )
    threads = int(demo.get("threads") or 0) or None
    history = train_clip(
        model,
        train_images,
        [phrases[i] for i in train_rows],
        epochs=int(demo["epochs"]),
        batch_size=int(demo["batch_size"]),
        lr=float(demo["lr"]),
        weight_decay=float(demo["weight_decay"]),
        warmup_steps=int(demo["warmup_steps"]),
        seed=seed,
        threads=threads,
        progress=progress,
        val=val,
        log=logger.info,
        categories=[categories[i] for i in train_rows],
        category_prompt_fraction=float(demo.get("category_prompt_fraction", 0.0)),
        side_swap_negatives=bool(demo.get("side_swap_negatives", False)),
    )
    final = (
        {k: v for k, v in history[-1].items() if k not in ("epoch", "lr", "steps", "elapsed_s", "cpu_s")}
        if history
        else {}
    )
    chash = section_hash(cfg, "data", "input", "model")
    meta = {
        "config_hash": chash,
        "seed": seed,
        "matex_version": __version__,
        "source": "demo",
        "name": model.name,
        "n_train": len(train_rows),
        "n_val": len(val_rows),
        # without the run's wall/CPU times, so the same config gives a byte-identical checkpoint (and so
        # identical checkpoint hashes in every downstream artifact); the times are in train_log.json
        "history": [{k: v for k, v in row.items() if k not in ("elapsed_s", "cpu_s")} for row in history],
    }
    save_checkpoint(model, out_checkpoint, model_cfg, meta)
    import os
    import platform

    log = {
        "config_hash": chash,
        "seed": seed,
        "matex_version": __version__,
        "model_cfg": model_cfg,
        "n_train": len(train_rows),
        "n_val": len(val_rows),
        "threads": threads,
        "machine": {
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "load_average_1min": round(os.getloadavg()[0], 2),
        },
        "epochs": history,
        "final": final,
        "wall_time_s": round(time.perf_counter() - t0, 2),
        "checkpoint": str(out_checkpoint),
    }
    write_json(out_log, log)
    return log
