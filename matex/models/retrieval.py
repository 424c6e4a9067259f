"""How well a CLIP matches images and phrases: the validation loss, zero-shot category accuracy,
pair retrieval in both directions and laterality (the demo model's learning curves, ROAR+ and ROAR).

Every function works on unit-norm features computed once per call (or passed in), in eval mode.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data.transforms import normalize_batch
from .base import MatexModel

RETRIEVAL_CHUNK = 100  # pair retrieval ranks each image among 100 phrases


def _batches(n: int, batch_size: int, generator: torch.Generator | None) -> list[torch.Tensor]:
    """Index batches of a (seeded) permutation; a final batch of one pair (no negatives) is dropped."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    batches = list(torch.split(order, batch_size))
    return [b for b in batches if len(b) >= 2]


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


def encode_pairs(model: MatexModel, images_u8: np.ndarray, texts: Sequence[str], batch_size: int = 128):
    """Unit-norm (image, text) features of the pairs, in eval mode: the ``features`` every measure
    here accepts, so that several measures of one model encode the pairs once."""
    was_training = model.clip.training
    model.clip.eval()
    try:
        return _encode_images(model, images_u8, batch_size), _encode_texts(model, list(texts), batch_size)
    finally:
        model.clip.train(was_training)


@torch.no_grad()
def evaluate_retrieval(
    model: MatexModel,
    images_u8: np.ndarray,
    texts: Sequence[str],
    categories: Sequence[str] | None,
    batch_size: int = 128,
    features: tuple[torch.Tensor, torch.Tensor] | None = None,
    image_ids: Sequence[str] | None = None,
) -> dict:
    """Zero-shot category accuracy and pair retrieval in both directions, each with its chance level.

    (a) Zero-shot: prompts = the distinct category names, lower-cased; each film's top-1 prompt.
    ``zero_shot_accuracy`` counts a film as right when the prompt is one of its findings (a film with
    two findings has two pairs and one image: no classifier can name both); ``zero_shot_accuracy_pairs``
    scores every pair against its own category. Without ``image_ids`` every pair is its own film and
    the two agree. Chance: 1/n_categories.
    (b) Image->text (``r_at_1``, ``r_at_5``): within consecutive chunks of 100 pairs, rank the chunk's
    distinct phrases for each image; a hit is a retrieved phrase equal to the pair's phrase. Repeated
    phrases are one candidate (identical texts tie), so chance is k / n_distinct per chunk.
    (c) Text->image (``t2i_r_at_1``, ``t2i_r_at_5``): in the same chunks, rank the chunk's distinct
    films for each pair's phrase; a hit is a retrieved film that has this phrase. Chance is the
    probability that k films drawn at random include one of them."""
    was_training = model.clip.training
    model.clip.eval()
    try:
        texts = list(texts)
        ids = [str(i) for i in image_ids] if image_ids is not None else [str(i) for i in range(len(texts))]
        if len(ids) != len(texts):
            raise ValueError(f"evaluate_retrieval: {len(ids)} image ids for {len(texts)} pairs")
        image_feats = features[0] if features is not None else _encode_images(model, images_u8, batch_size)
        out: dict[str, Any] = {"n_pairs": len(texts), "n_images": len(set(ids))}
        if categories is not None:
            out.update(_zero_shot(model, image_feats, [str(c).lower() for c in categories], ids, batch_size))
        text_feats = features[1] if features is not None else _encode_texts(model, texts, batch_size)
        i2t: dict[str, list] = {k: [] for k in ("r_at_1", "r_at_5", "r_at_1_chance", "r_at_5_chance")}
        t2i: dict[str, list] = {k: [] for k in ("t2i_r_at_1", "t2i_r_at_5", "t2i_r_at_1_chance", "t2i_r_at_5_chance")}
        for start in range(0, len(texts), RETRIEVAL_CHUNK):
            rows = np.arange(start, min(start + RETRIEVAL_CHUNK, len(texts)))
            for metrics, found in (
                (i2t, _image_to_text(image_feats, text_feats, texts, rows)),
                (t2i, _text_to_image(image_feats, text_feats, texts, ids, rows)),
            ):
                for key, values in zip(metrics, found):
                    metrics[key] += values
        for metrics in (i2t, t2i):
            if metrics[next(iter(metrics))]:
                out.update({k: float(np.mean(v)) for k, v in metrics.items()})
        if i2t["r_at_1"]:
            out["retrieval_chunk"] = RETRIEVAL_CHUNK
        return out
    finally:
        model.clip.train(was_training)


def _image_to_text(image_feats, text_feats, texts: list[str], rows: np.ndarray) -> tuple[list, ...]:
    """Per pair of the chunk ``rows``: hit@1, hit@5 ranking the chunk's distinct phrases for its image,
    and their chance levels; empty lists when the chunk has fewer than 2 distinct phrases."""
    chunk_texts = [texts[i] for i in rows]
    candidates = sorted(set(chunk_texts))
    if len(candidates) < 2:
        return [], [], [], []
    candidate_feats = text_feats[[rows[chunk_texts.index(c)] for c in candidates]]
    ranking = (image_feats[rows] @ candidate_feats.t()).argsort(dim=1, descending=True).numpy()
    truth = np.array([candidates.index(t) for t in chunk_texts])
    n = len(candidates)
    return (
        list(ranking[:, 0] == truth),
        list((ranking[:, :5] == truth[:, None]).any(1)),
        [1.0 / n] * len(rows),
        [min(5, n) / n] * len(rows),
    )


def _text_to_image(image_feats, text_feats, texts: list[str], ids: list[str], rows: np.ndarray) -> tuple[list, ...]:
    """Per pair of the chunk ``rows``: hit@1, hit@5 ranking the chunk's distinct films for its phrase
    (a hit: a film that has this phrase), and their chance levels; empty with fewer than 2 films."""
    chunk_ids = [ids[i] for i in rows]
    films = sorted(set(chunk_ids))
    if len(films) < 2:
        return [], [], [], []
    film_feats = image_feats[[rows[chunk_ids.index(f)] for f in films]]
    has_text = {(ids[i], texts[i]) for i in rows}
    ranking = (text_feats[rows] @ film_feats.t()).argsort(dim=1, descending=True).numpy()
    out: tuple[list, ...] = ([], [], [], [])
    for j, i in enumerate(rows):
        relevant = np.array([(f, texts[i]) in has_text for f in films])
        hits = relevant[ranking[j]]
        out[0].append(bool(hits[:1].any()))
        out[1].append(bool(hits[:5].any()))
        out[2].append(_chance_any(len(films), int(relevant.sum()), 1))
        out[3].append(_chance_any(len(films), int(relevant.sum()), 5))
    return out


def _zero_shot(
    model: MatexModel, image_feats: torch.Tensor, categories: list[str], ids: list[str], batch_size: int
) -> dict:
    """Zero-shot accuracy per film (prompt among the film's findings) and per pair; see evaluate_retrieval."""
    names = sorted(set(categories))
    prompt_feats = _encode_texts(model, names, batch_size)
    predicted = [names[k] for k in (image_feats @ prompt_feats.t()).argmax(1).tolist()]
    findings: dict[str, set[str]] = {}
    for film, category in zip(ids, categories):
        findings.setdefault(film, set()).add(category)
    first = {}
    for row, film in enumerate(ids):
        first.setdefault(film, row)
    return {
        "zero_shot_accuracy": float(np.mean([predicted[r] in findings[f] for f, r in first.items()])),
        "zero_shot_accuracy_pairs": float(np.mean([p == c for p, c in zip(predicted, categories)])),
        "zero_shot_chance": 1.0 / len(names),
        "n_categories": len(names),
    }


def _chance_any(n: int, relevant: int, k: int) -> float:
    """P(k of n items drawn without replacement include at least one of ``relevant``)."""
    k = min(k, n)
    miss = 1.0
    for j in range(k):
        miss *= max(0, n - relevant - j) / (n - j)
    return 1.0 - miss


@torch.no_grad()
def validation_metrics(
    model: MatexModel,
    images_u8: np.ndarray,
    texts: Sequence[str],
    categories: Sequence[str] | None = None,
    image_ids: Sequence[str] | None = None,
    batch_size: int = 32,
) -> dict:
    """Everything the learning curves record on held-out pairs: validation loss
    (:func:`validation_loss`), zero-shot accuracy and retrieval (:func:`evaluate_retrieval`) and
    laterality (:func:`laterality_accuracy`), from one encoding of the images and phrases."""
    feats = encode_pairs(model, images_u8, texts, max(batch_size, 128))
    row = {"val_loss": validation_loss(model, images_u8, texts, batch_size, seed=0, features=feats)}
    row.update(evaluate_retrieval(model, images_u8, texts, categories, features=feats, image_ids=image_ids))
    row.update(laterality_accuracy(model, images_u8, texts, image_feats=feats[0]))
    return row


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
