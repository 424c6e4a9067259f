"""ROAR, RemOve And Retrain (Hooker, Erhan, Kindermans, Kim: "A Benchmark for Interpretability
Methods in Deep Neural Networks", NeurIPS 2019), as its authors define it.

For each fraction k, every training AND validation image loses the top-k % pixels of its own map,
filled the same way for every method (``roar.fill``: by default ROAD's noisy linear imputation,
Rong et al. 2022, which leaves no flat patch whose shape the retrained model could read as a class;
``grey``, the dataset's grey mean, and ``blur`` are selectable); a model is retrained on the degraded training pairs
and measured on the degraded validation pairs. A method whose top pixels carry the information the
task needs leaves less to learn from, so the retrained model is worse: the curve of validation
accuracy (or loss) against k falls faster, and its area is smaller (accuracy) or larger (loss).
Retraining separates "the pixels mattered" from "the degraded images are out of the training
distribution", which fine-tuning on degraded images only (``roar_plus``) cannot.

The control is a smooth random map: uniform random values on the model's patch grid, upsampled
bilinearly like every method's patch-grid map, so it removes contiguous blobs as the methods do
(uniform pixel noise removes scattered pixels, and any blob-shaped map then "beats random" by its
shape alone). Ties in a map are broken in a seeded random order, never by pixel position.

Retraining (``roar.retrain.mode``): ``from_init``, Hooker et al.'s protocol, starts the demo model
from its own initialisation (``model.demo`` architecture and seed) with the demo recipe (AdamW,
warm-up + cosine, weight decay; :func:`matex.models.train.train_clip`) for ``roar.retrain.epochs``
epochs; ``finetune`` trains a copy of the explained model instead, the only choice for a hub or
checkpoint model, which has no initialisation we could retrain from (a documented deviation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import MapError
from ..metrics.localisation import top_k_count
from .imputation import FillSpec, as_fill

# the measures recorded for every retrained model, on the degraded validation pairs
MEASURES = ("val_loss", "zero_shot_accuracy", "r_at_1", "r_at_5")


def top_fraction_random_ties(maps: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """(B, H, W) bool: exactly ceil(``fraction`` H W) highest pixels of each map; pixels of equal
    value are taken in a seeded random order (a plateau is not removed from its top-left corner)."""
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 3:
        raise MapError(f"ROAR: maps must be (B, H, W), got {maps.shape}")
    b, h, w = maps.shape
    k = top_k_count(fraction, h * w)
    tiebreak = np.random.default_rng(seed).random((b, h * w))
    flat = maps.reshape(b, -1)
    top = np.zeros((b, h * w), dtype=bool)
    for i in range(b):  # lexsort: last key primary (descending value), then the random key
        top[i, np.lexsort((tiebreak[i], -flat[i]))[:k]] = True
    return top.reshape(b, h, w)


def smooth_random_maps(n: int, size: int, grid: int, seed: int) -> np.ndarray:
    """The random control: (n, size, size) float32 maps, uniform values on a ``grid`` x ``grid``
    patch grid upsampled bilinearly (align_corners=False) like the methods' maps, seeded."""
    from ..attribution.common import upsample

    if grid < 1 or n < 0:
        raise MapError(f"smooth_random_maps: need grid >= 1 and n >= 0, got grid={grid}, n={n}")
    cells = np.random.default_rng(seed).random((n, grid, grid), dtype=np.float32)
    return upsample(torch.from_numpy(cells), (size, size)).numpy().astype(np.float32)


def grey_fill(images_u8: np.ndarray) -> float:
    """The grey fill's value (``roar.fill: grey``): the mean pixel of the (clean) training images. The inputs are grey-scale
    (one channel, replicated to RGB by the model's preprocessing), so the per-channel dataset mean
    is this value in every channel: a neutral grey, no colour cast."""
    return float(np.asarray(images_u8, dtype=np.float64).mean())


def degrade(images_u8: np.ndarray, maps: np.ndarray, fraction: float, fill: float | FillSpec, seed: int) -> np.ndarray:
    """A copy of ``images_u8`` (N, S, S) with each image's top-``fraction`` pixels (by its map)
    filled: ``fill`` is a :class:`~matex.roar.imputation.FillSpec` (``roar.fill``; default ROAD's
    noisy linear imputation) or a number, the level of a grey fill. ``seed``: ties and noise."""
    if images_u8.shape != maps.shape:
        raise MapError(f"ROAR: images {images_u8.shape} and maps {maps.shape} differ in shape")
    return as_fill(fill).apply(images_u8, top_fraction_random_ties(maps, fraction, seed), seed)


def degrade_splits(
    train_u8: np.ndarray,
    val_u8: np.ndarray,
    train_maps: np.ndarray | None,
    val_maps: np.ndarray | None,
    fraction: float,
    fill: float | FillSpec,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Both splits degraded the same way (same method, same k, same fill); ``fraction`` 0 = clean."""
    if fraction == 0:
        return np.ascontiguousarray(train_u8), np.ascontiguousarray(val_u8)
    if train_maps is None or val_maps is None:
        raise MapError("ROAR: a degraded run needs maps for both the training and the validation pairs")
    return (degrade(train_u8, train_maps, fraction, fill, seed), degrade(val_u8, val_maps, fraction, fill, seed + 1))


def patch_grid(model) -> int:
    """The side of the model's patch grid (open_clip ViT: ``visual.grid_size``; timm tower: its patch embed)."""
    visual = model.clip.visual
    grid = getattr(visual, "grid_size", None)
    if grid is None:
        grid = getattr(getattr(getattr(visual, "trunk", None), "patch_embed", None), "grid_size", None)
    if grid is None:
        raise MapError("ROAR: cannot read the model's patch grid; set roar.retrain.random_grid")
    return int(grid[0] if isinstance(grid, (tuple, list)) else grid)


def retrain_mode(cfg: Mapping[str, Any]) -> str:
    """``from_init`` (the demo model, Hooker et al.'s protocol) or ``finetune`` (any model; the only
    choice for hub and checkpoint models, which have no initialisation we could retrain from).
    Unset (null): from_init for the demo model, finetune otherwise."""
    from ..errors import ConfigError

    demo = cfg["model"].get("source", "demo") == "demo"
    mode = cfg["roar"]["retrain"].get("mode") or ("from_init" if demo else "finetune")
    if mode == "from_init" and not demo:
        raise ConfigError(
            f"config key roar.retrain.mode: from_init needs the demo model (model.source demo); "
            f"a {cfg['model'].get('source')} model has no initialisation to retrain from: use finetune"
        )
    if mode not in ("from_init", "finetune"):
        raise ConfigError(f"config key roar.retrain.mode: expected from_init or finetune, got {mode!r}")
    return mode


def retrain_batch_size(cfg: Mapping[str, Any]) -> int:
    """The demo recipe's batch when retraining from init, ROAR+'s fine-tuning batch otherwise."""
    if retrain_mode(cfg) == "from_init":
        return int(cfg["model"]["demo"]["batch_size"])
    return int(cfg["roar"]["batch_size"])


def retrain(
    cfg: Mapping[str, Any],
    base_model,
    images_u8: np.ndarray,
    texts: Sequence[str],
    seed: int,
    threads: int | None,
    device: str = "cpu",
    categories: Sequence[str] | None = None,
):
    """A model trained on (``images_u8``, ``texts``) for ROAR, through the demo's one training helper
    (:func:`matex.models.demo_training.train_with_recipe`). ``from_init``: a fresh demo model from the
    demo's initialisation (seed ``cfg.seed + seed``) trained with the demo recipe (optimiser, schedule,
    text aids, augmentation: ``model.demo``) for ``roar.retrain.epochs``. ``finetune``: a copy of
    ``base_model`` trained at ``roar.retrain.finetune_lr`` (no weight decay, no warm-up); a demo
    model keeps the recipe's text aids and augmentation, a hub model is fine-tuned plainly.
    ``categories``: one per pair (the category prompts); required for a demo model."""
    import copy

    from ..data.transforms import InputGeometry
    from ..models.demo_training import demo_recipe, train_with_recipe
    from ..models.loading import load_model

    rt = cfg["roar"]["retrain"]
    epochs = int(rt["epochs"])
    batch = retrain_batch_size(cfg)
    demo = cfg["model"].get("demo") if cfg["model"].get("source", "demo") == "demo" else None
    recipe = demo_recipe(demo) if demo is not None else {}
    if recipe and categories is None:
        raise MapError("ROAR retrain: the demo recipe's category prompts need each training pair's category")
    cats = list(categories) if categories is not None else [""] * len(texts)
    if retrain_mode(cfg) == "from_init":
        inp = cfg["input"]
        init_seed = int(cfg["seed"]) + int(seed)
        model = load_model(
            "demo",
            demo=demo,
            geometry=InputGeometry(int(inp["size"]), inp.get("mode", "center_crop")),
            device=device,
            name=cfg["model"].get("name"),
            seed=init_seed,
            mean=inp.get("mean"),
            std=inp.get("std"),
        )
        steps = epochs * max(1, len(texts) // batch)
        warmup = rt.get("warmup_steps")
        warmup = min(int(demo["warmup_steps"]), steps // 10) if warmup is None else int(warmup)
        train_with_recipe(
            model, images_u8, texts, cats, recipe, seed=init_seed, threads=threads, progress=False,
            epochs=epochs, batch_size=batch, warmup_steps=warmup,
        )  # fmt: skip
        return model
    model = copy.deepcopy(base_model)
    train_with_recipe(
        model, images_u8, texts, cats, recipe, seed=int(seed), threads=threads, progress=False,
        epochs=epochs, batch_size=batch, lr=float(rt["finetune_lr"]), weight_decay=0.0, warmup_steps=0,
    )  # fmt: skip
    return model


def measure(model, val_u8: np.ndarray, texts: Sequence[str], categories: Sequence[str], batch_size: int) -> dict:
    """Validation contrastive loss, zero-shot category accuracy and pair retrieval (R@1, R@5) with chance levels."""
    from ..models.train import evaluate_retrieval, validation_loss

    out = {"val_loss": float(validation_loss(model, val_u8, texts, batch_size=batch_size, seed=0))}
    out.update(evaluate_retrieval(model, val_u8, texts, categories, batch_size=max(batch_size, 128)))
    return out


DEGRADE_SEED = 0  # ties, imputation noise and the random control's maps: one degraded data set per variant


def roar_retrain_runs(
    cfg: Mapping[str, Any],
    base_model,
    pairs,
    images_u8: np.ndarray,
    train_rows: np.ndarray,
    val_rows: np.ndarray,
    variant: str,
    train_maps: np.ndarray | None,
    val_maps: np.ndarray | None,
    seeds: int | Sequence[int],
    threads: int | None = None,
    device: str = "cpu",
    log=None,
    samples: dict | None = None,
    n_samples: int = 4,
) -> list[dict]:
    """ROAR curves of one variant: for each configured k (``clean``: k = 0 only), degrade both
    splits with ``variant``'s maps (``random``: smooth random maps) once, then retrain and measure
    once per retraining seed. One row per (k, seed). The degradation (tie-breaking, imputation
    noise, the random control's maps) is drawn from ``DEGRADE_SEED``, so the seeds vary the
    retrained model (initialisation, batch order), not the data, and one imputation serves them all.

    ``samples``: a dict to fill with the first ``n_samples`` degraded training images at each k
    (``k<percent>/<pair_id>``, uint8), so the removal can be seen."""
    import time

    rt = cfg["roar"]["retrain"]
    seeds = [int(seeds)] if isinstance(seeds, (int, np.integer)) else [int(q) for q in seeds]
    train_u8 = np.ascontiguousarray(images_u8[train_rows])
    val_u8 = np.ascontiguousarray(images_u8[val_rows])
    texts = pairs["phrase"].astype(str).tolist()
    train_texts, val_texts = [texts[i] for i in train_rows], [texts[i] for i in val_rows]
    categories = pairs["category"].astype(str).to_numpy()
    fill = FillSpec.from_config(cfg["roar"], grey=grey_fill(train_u8))
    if variant == "random":
        train_maps, val_maps = _random_control_maps(rt, base_model, train_u8.shape[1], len(train_rows), len(val_rows))
    fractions = [0.0] if variant == "clean" else [float(k) for k in rt["fractions"]]
    batch, mode = retrain_batch_size(cfg), retrain_mode(cfg)
    common = {"n_train": len(train_rows), "n_val": len(val_rows), "fill": fill.kind, "fill_grey": fill.grey}
    common.update(epochs=int(rt["epochs"]), retrain=mode)
    rows = []
    for fraction in fractions:
        t0 = time.perf_counter()
        train_deg, val_deg = degrade_splits(train_u8, val_u8, train_maps, val_maps, fraction, fill, DEGRADE_SEED)
        degrade_s = (time.perf_counter() - t0) / len(seeds)  # its share of one imputation
        if samples is not None:
            ids = pairs["pair_id"].iloc[train_rows[:n_samples]].tolist()
            samples.update({f"k{round(100 * fraction):02d}/{p}": train_deg[i] for i, p in enumerate(ids)})
        for seed in seeds:
            t1 = time.perf_counter()
            model = retrain(cfg, base_model, train_deg, train_texts, seed, threads, device, categories[train_rows])
            row = {"variant": variant, "k": fraction, "seed": seed}
            row.update(measure(model, val_deg, val_texts, list(categories[val_rows]), batch), **common)
            row["wall_s"] = round(degrade_s + time.perf_counter() - t1, 2)
            rows.append(row)
            if log is not None:
                log(_progress_line(row))
    return rows


def _random_control_maps(
    rt: Mapping[str, Any], base_model, size: int, n_train: int, n_val: int
) -> tuple[np.ndarray, np.ndarray]:
    """The random control's smooth maps of both splits, on ``roar.retrain.random_grid`` or the
    model's patch grid, drawn from ``DEGRADE_SEED`` (its own stream per split)."""
    grid = int(rt.get("random_grid") or patch_grid(base_model))
    train_maps = smooth_random_maps(n_train, size, grid, 1000 * DEGRADE_SEED + 1)
    val_maps = smooth_random_maps(n_val, size, grid, 1000 * DEGRADE_SEED + 2)
    return train_maps, val_maps


def _progress_line(row: Mapping[str, Any]) -> str:
    """The log line of one retrained (variant, k, seed): loss, zero-shot accuracy and wall time."""
    return (
        f"ROAR {row['variant']} k={row['k']:.2f} seed={row['seed']}: loss {row['val_loss']:.4f}, "
        f"zero-shot {row.get('zero_shot_accuracy', float('nan')):.3f}, {row['wall_s']} s"
    )
