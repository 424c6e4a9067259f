"""Mean box (a bias control, docs/method.md): the mean of the training pairs' box masks, laid on the model
input. It looks at neither the image nor the phrase, so whatever it scores on localisation comes from
where the dataset's findings usually are, not from the model. Pairs are explained with the mask
min-max normalised like every other map.

The training pairs' aligned boxes reach the method through ``explain(..., training_boxes=...)``
(a :class:`TrainingBoxes`; the pipeline builds it from the pairs table's train split)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import torch

from ..data.transforms import box_mask
from ..errors import DataError
from .common import minmax_norm
from .registry import ExplainOutput, register
from .wrapper import ForwardContext


@dataclass
class TrainingBoxes:
    """The aligned boxes (x0, y0, x1, y1 in input pixels) and finding categories of the training
    pairs that have at least one box, with their mean masks (computed on first use)."""

    boxes: list[list[tuple[float, float, float, float]]]
    categories: list[str]
    size: tuple[int, int]

    @classmethod
    def from_pairs(cls, pairs: pd.DataFrame, size: int | Sequence[int], split: str = "train") -> TrainingBoxes:
        """The pairs of ``split`` in a pairs table (columns ``split``, ``boxes``, ``category``)."""
        missing = sorted({"split", "boxes", "category"} - set(pairs.columns))
        if missing:
            raise DataError(f"the pairs table has no column(s) {missing}: training boxes need split, boxes, category")
        sub = pairs[pairs["split"].to_numpy() == split]
        boxes, cats = [], []
        for bs, cat in zip(sub["boxes"], sub["category"]):
            bs = [tuple(float(v) for v in b) for b in (bs if bs is not None else [])]
            if bs:
                boxes.append(bs)
                cats.append(str(cat))
        hw = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
        return cls(boxes=boxes, categories=cats, size=hw)

    @cached_property
    def _sums(self) -> dict[str, np.ndarray]:
        """Per category, the (H, W) sum of its pairs' union masks (one pass, no (N, H, W) stack:
        2400 pairs at 224 px would be ~0.5 GB)."""
        sums: dict[str, np.ndarray] = {}
        for boxes, cat in zip(self.boxes, self.categories):
            m = box_mask(boxes, self.size)
            if cat in sums:
                sums[cat] += m
            else:
                sums[cat] = m.astype(np.float64)
        return sums

    @cached_property
    def mean(self) -> np.ndarray:
        """(H, W) mean mask of all training pairs: the fraction of pairs whose box covers each pixel."""
        return (sum(self._sums.values()) / len(self.boxes)).astype(np.float32)

    def category_mean(self, category: str) -> np.ndarray | None:
        """(H, W) mean mask of the training pairs of ``category``; None when there is none."""
        if category not in self._sums:
            return None
        return (self._sums[category] / self.categories.count(category)).astype(np.float32)

    def counts(self) -> dict[str, int]:
        """Training pairs with a box, per category."""
        return {c: self.categories.count(c) for c in sorted(set(self.categories))}


def require_training_boxes(ctx: ForwardContext, method: str) -> TrainingBoxes:
    """The context's TrainingBoxes at the input size, or a DataError that says what to pass."""
    tb = ctx.training_boxes
    if tb is None:
        raise DataError(
            f"method {method!r} needs the training pairs' aligned boxes, which were not given: call "
            "explain(..., training_boxes=TrainingBoxes.from_pairs(pairs, size)) with "
            "matex.attribution.mean_box.TrainingBoxes and the pairs table (columns split, boxes, "
            "category)"
        )
    if not isinstance(tb, TrainingBoxes):
        raise DataError(f"method {method!r}: training_boxes must be a TrainingBoxes, got {type(tb).__name__}")
    if not tb.boxes:
        raise DataError(
            f"method {method!r}: no training pair has a box (the pairs table's train split is "
            "empty or all its boxes were dropped)"
        )
    if tuple(tb.size) != tuple(ctx.size):
        raise DataError(f"method {method!r}: training boxes were aligned to {tb.size}, the model input is {ctx.size}")
    return tb


def as_maps(masks: Sequence[np.ndarray], ctx: ForwardContext) -> torch.Tensor:
    """Stack (H, W) mean masks into normalised (B, H, W) maps on the context's device."""
    return minmax_norm(torch.from_numpy(np.stack(masks)).to(ctx.images.device, torch.float32))


@register("mean_box", reference="bias control: mean training box mask")
def mean_box(ctx: ForwardContext) -> ExplainOutput:
    tb = require_training_boxes(ctx, "mean_box")
    return ExplainOutput(image=as_maps([tb.mean] * ctx.batch, ctx), meta={"options": {"training_pairs": len(tb.boxes)}})
