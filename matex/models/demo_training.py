"""Training the demo model of the embedded default: read the prepared pairs, train, write the
checkpoint and the training log (learning curves, cost, machine)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .augment import Augmentation
from .train import train_clip


def demo_recipe(demo: Mapping[str, Any]) -> dict[str, Any]:
    """The demo model's training recipe (``model.demo``) as :func:`~matex.models.train.train_clip`
    keywords: optimiser settings, schedule, the two text aids (category prompts, side-swapped hard
    negatives) and the augmentation. One definition, used by :func:`train_demo` and by ROAR's
    retraining of the demo model (:func:`matex.roar.retrain.retrain`), so a retrained model is the
    explained model's kind."""
    return {
        "epochs": int(demo["epochs"]),
        "batch_size": int(demo["batch_size"]),
        "lr": float(demo["lr"]),
        "weight_decay": float(demo["weight_decay"]),
        "warmup_steps": int(demo["warmup_steps"]),
        "category_prompt_fraction": float(demo.get("category_prompt_fraction", 0.0)),
        "side_swap_negatives": bool(demo.get("side_swap_negatives", False)),
        "augment": Augmentation.from_config(demo.get("augment")),
    }


def train_with_recipe(
    model,
    images_u8: np.ndarray,
    texts: Sequence[str],
    categories: Sequence[str],
    recipe: Mapping[str, Any],
    *,
    seed: int,
    threads: int | None = None,
    progress: bool = True,
    **overrides: Any,
) -> list[dict]:
    """Train ``model`` on (``images_u8``, ``texts``) with ``recipe`` (:func:`demo_recipe`), each pair's
    category given for the category prompts; ``overrides`` (e.g. ROAR's epochs, or ``val``/``log``)
    replace or add :func:`~matex.models.train.train_clip` keywords. The one training path of the
    demo model and of its ROAR retrains."""
    return train_clip(
        model,
        images_u8,
        list(texts),
        categories=list(categories),
        seed=seed,
        threads=threads,
        progress=progress,
        **{**recipe, **overrides},
    )


def train_demo(
    pairs_parquet,
    images_npy,
    cfg: Mapping[str, Any],
    out_checkpoint,
    out_log,
    progress: bool = True,
    settings: Mapping[str, Any] | None = None,
) -> dict:
    """Train the demo CLIP on the ``train`` pairs, evaluate on ``val``, write checkpoint + JSON log.

    ``pairs_parquet`` rows (pair_id, phrase, category, split) align with ``images_npy`` (n_pairs, S, S)
    uint8. ``settings`` (the pipeline's recorded settings of the rule) go into the checkpoint's meta,
    so a step that loads the checkpoint can refuse one trained with other settings. Returns the
    training log (per-epoch history, final metrics with chance levels, wall time)."""
    import logging

    from ..config import section_hash
    from ..io import write_json
    from .loading import demo_model_cfg, save_checkpoint

    logger = logging.getLogger("matex.train")
    t0 = time.perf_counter()
    pairs, images = _read_training_data(pairs_parquet, images_npy, cfg)
    size = int(cfg["input"]["size"])
    demo = cfg["model"]["demo"]
    seed = int(cfg["seed"])
    model = _new_demo_model(cfg, size, seed)
    model_cfg = demo_model_cfg(demo, size)
    train, val, n_train, n_val = _train_val_split(pairs, images, pairs_parquet)
    threads = int(demo.get("threads") or 0) or None
    history = train_with_recipe(
        model,
        *train,
        demo_recipe(demo),
        seed=seed,
        threads=threads,
        progress=progress,
        val=val,
        log=logger.info,
    )
    chash = section_hash(cfg, "data", "input", "model")
    meta = _checkpoint_meta(chash, seed, model.name, n_train, n_val, settings, history)
    save_checkpoint(model, out_checkpoint, model_cfg, meta)
    log = {
        "config_hash": chash,
        "seed": seed,
        "matex_version": meta["matex_version"],
        "model_cfg": model_cfg,
        "n_train": n_train,
        "n_val": n_val,
        "threads": threads,
        "machine": _machine(),
        "epochs": history,
        "final": _final_metrics(history),
        "wall_time_s": round(time.perf_counter() - t0, 2),
        "checkpoint": str(out_checkpoint),
    }
    write_json(out_log, log)
    return log


def _read_training_data(pairs_parquet, images_npy, cfg: Mapping[str, Any]) -> tuple[Any, np.ndarray]:
    """The pairs table and the memory-mapped model inputs, checked against each other and ``input.size``."""
    import pandas as pd

    from ..errors import DataError

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
    return pairs, images


def _new_demo_model(cfg: Mapping[str, Any], size: int, seed: int):
    """The untrained demo model of ``model.demo``, initialised from ``seed``."""
    from ..data.transforms import InputGeometry
    from .loading import load_model

    return load_model(
        "demo",
        demo=cfg["model"]["demo"],
        geometry=InputGeometry(size, cfg["input"].get("mode", "center_crop")),
        seed=seed,
        name=cfg["model"].get("name", "demo"),
        mean=cfg["input"].get("mean"),
        std=cfg["input"].get("std"),
    )


def _train_val_split(pairs, images: np.ndarray, pairs_parquet) -> tuple[tuple, tuple | None, int, int]:
    """``((train_images, train_phrases, train_categories), val, n_train, n_val)`` by the ``split``
    column; ``val`` (images, phrases, categories, film ids or None) only with at least 2 val pairs."""
    from ..errors import ConfigError

    split = pairs["split"].astype(str).to_numpy()
    train_rows, val_rows = np.flatnonzero(split == "train"), np.flatnonzero(split == "val")
    if len(train_rows) < 2:
        raise ConfigError(f"too few training pairs in {pairs_parquet} ({len(train_rows)}) to train the demo model")
    phrases = pairs["phrase"].astype(str).tolist()
    categories = pairs["category"].astype(str).tolist()
    train_images = np.ascontiguousarray(images[train_rows])
    films = pairs["dicom_id"].astype(str).tolist() if "dicom_id" in pairs.columns else None
    val = None
    if len(val_rows) >= 2:
        val = (
            np.ascontiguousarray(images[val_rows]),
            [phrases[i] for i in val_rows],
            [categories[i] for i in val_rows],
            [films[i] for i in val_rows] if films is not None else None,
        )
    train = (train_images, [phrases[i] for i in train_rows], [categories[i] for i in train_rows])
    return train, val, len(train_rows), len(val_rows)


def _final_metrics(history: list[dict]) -> dict:
    """The last epoch's metrics (without its epoch number, learning rate, step count and times)."""
    if not history:
        return {}
    return {k: v for k, v in history[-1].items() if k not in ("epoch", "lr", "steps", "elapsed_s", "cpu_s")}


def _checkpoint_meta(
    chash: str,
    seed: int,
    name: str,
    n_train: int,
    n_val: int,
    settings: Mapping[str, Any] | None,
    history: list[dict],
) -> dict:
    """The checkpoint's meta: config hash, seed, version, sizes, the rule's settings and the history."""
    from .. import __version__

    return {
        "config_hash": chash,
        "seed": seed,
        "matex_version": __version__,
        "source": "demo",
        "name": name,
        "n_train": n_train,
        "n_val": n_val,
        **({"settings": dict(settings)} if settings is not None else {}),
        # without the run's wall/CPU times, so the same config gives a byte-identical checkpoint (and so
        # identical checkpoint hashes in every downstream artifact); the times are in train_log.json
        "history": [{k: v for k, v in row.items() if k not in ("elapsed_s", "cpu_s")} for row in history],
    }


def _machine() -> dict:
    """The machine the training ran on, for the log's cost figures."""
    import os
    import platform

    return {
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
