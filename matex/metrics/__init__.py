"""Evaluation metrics (docs/evaluation.md): localisation against boxes, confidence drop/increase,
deletion/insertion AUC, model-randomisation sanity and bootstrap intervals.

The public functions are re-exported lazily, so importing ``matex.metrics.aggregate`` (used by the
figures) does not pull in torch and scipy.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "pointing_game": "localisation",
    "energy_in_box": "localisation",
    "iou_top_fraction": "localisation",
    "top_fraction_masks": "localisation",
    "auroc": "localisation",
    "masked_input": "faithfulness",
    "confidence_scores": "faithfulness",
    "image_confidence": "faithfulness",
    "text_keep_tokens": "faithfulness",
    "text_confidence": "faithfulness",
    "DROP_LABELS": "faithfulness",
    "deletion_auc": "faithfulness",
    "insertion_auc": "faithfulness",
    "causal_curves": "faithfulness",
    "curve_auc": "faithfulness",
    "grey_fill": "faithfulness",
    "fill_images": "faithfulness",
    "randomize_cascading": "sanity",
    "spearman_maps": "sanity",
    "abs_spearman": "sanity",
    "ssim": "sanity",
    "bootstrap_ci": "stats",
    "summarise": "stats",
    "PatientBootstrap": "stats",
    "paired_difference": "stats",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
