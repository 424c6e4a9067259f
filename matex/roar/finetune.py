"""One ROAR+ run: fine-tune the explained CLIP on (possibly degraded) training pairs and measure the
contrastive loss on the untouched validation pairs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .degrade import degrade_images, degrade_tokens, random_token_maps
from .imputation import FillSpec

MODALITIES = ("image", "text")


def roar_run(
    model,
    pairs: pd.DataFrame,
    images_u8: np.ndarray,
    train_rows: np.ndarray,
    val_rows: np.ndarray,
    variant: str,
    maps: np.ndarray | Sequence[np.ndarray] | None,
    roar_cfg: Mapping[str, Any],
    seed: int,
    threads: int | None = None,
    progress: bool = True,
    modality: str = "image",
) -> dict[str, Any]:
    """``variant``: a method name (``maps`` are its maps for ``train_rows``), ``clean`` (no removal)
    or ``random`` (random removal: smooth random maps, :func:`random_control_maps`). ``modality``: ``image`` removes the top pixels of the training
    images (``maps``: (N, H, W)); ``text`` keeps the images and removes the top word tokens of the
    training texts (``maps``: one token-score array per training pair). The clean run removes
    nothing, so one clean run per seed serves both sides; it records modality ``both``. Returns
    losses before and after fine-tuning."""
    from ..models.train import validation_loss

    if modality not in MODALITIES:
        raise ValueError(f"ROAR+ modality must be one of {MODALITIES}, got {modality!r}")
    train_imgs = np.ascontiguousarray(images_u8[train_rows])
    train_texts = pairs["phrase"].iloc[train_rows].tolist()
    fraction = float(roar_cfg["top_fraction"])
    if variant == "clean":
        degraded, train_tokens = train_imgs, train_texts
    elif modality == "image":
        degraded, train_tokens = (
            _degrade_image_side(model, train_imgs, variant, maps, roar_cfg, fraction, seed),
            train_texts,
        )
    else:
        degraded, train_tokens = train_imgs, _degrade_text_side(model, train_texts, variant, maps, fraction, seed)
    val_imgs = np.ascontiguousarray(images_u8[val_rows])
    val_texts = pairs["phrase"].iloc[val_rows].tolist()
    bs = int(roar_cfg["batch_size"])
    # the explained model's own loss is the same for every variant and seed: measured once, with the clean run
    loss_before = validation_loss(model, val_imgs, val_texts, batch_size=bs, seed=0) if variant == "clean" else None
    history = _fine_tune(model, degraded, train_tokens, roar_cfg, seed, threads, progress)
    loss_after = validation_loss(model, val_imgs, val_texts, batch_size=bs, seed=0)
    return {
        "variant": variant,
        "seed": seed,
        "modality": "both" if variant == "clean" else modality,
        "val_loss_before": float(loss_before) if loss_before is not None else None,
        "val_loss": float(loss_after),
        "n_train": int(len(train_rows)),
        "n_val": int(len(val_rows)),
        "removed_fraction": 0.0 if variant == "clean" else fraction,
        "history": history,
    }


def _fine_tune(
    model, images: np.ndarray, texts, roar_cfg: Mapping[str, Any], seed: int, threads: int | None, progress: bool
) -> list[dict]:
    """ROAR+'s fine-tuning: ``roar.epochs`` at the constant learning rate ``roar.lr``, no weight decay."""
    from ..models.train import train_clip

    return train_clip(
        model,
        images,
        texts,
        epochs=int(roar_cfg["epochs"]),
        batch_size=int(roar_cfg["batch_size"]),
        lr=float(roar_cfg["lr"]),
        weight_decay=0.0,
        warmup_steps=0,
        seed=seed,
        threads=threads,
        progress=progress,
    )


def _degrade_image_side(
    model,
    train_imgs: np.ndarray,
    variant: str,
    maps: np.ndarray | None,
    roar_cfg: Mapping[str, Any],
    fraction: float,
    seed: int,
) -> np.ndarray:
    """The training images with the top ``roar.top_fraction`` of each map's pixels removed (``random``: the
    smooth random control maps)."""
    if variant == "random":
        maps = random_control_maps(model, roar_cfg, len(train_imgs), train_imgs.shape[1], seed)
    if maps is None or maps.shape != train_imgs.shape:
        raise ValueError(f"ROAR+ {variant}: need one map per training pair of shape {train_imgs.shape[1:]}")
    fill = FillSpec.from_config(roar_cfg, grey=float(train_imgs.mean()))
    return degrade_images(train_imgs, maps, fraction, fill, seed)


def _degrade_text_side(
    model, train_texts: list[str], variant: str, maps: Sequence[np.ndarray] | None, fraction: float, seed: int
):
    """The training texts' token ids with the top ``fraction`` of each text's word tokens removed
    (``random``: random token maps)."""
    tokens = model.tokenizer(train_texts)
    if variant == "random":
        maps = random_token_maps(tokens, seed)
    if maps is None or len(maps) != len(train_texts):
        raise ValueError(
            f"ROAR+ text {variant}: need one token map per training pair ({len(train_texts)}), "
            f"got {'none' if maps is None else len(maps)}"
        )
    return degrade_tokens(tokens, maps, fraction)


def random_control_maps(model, roar_cfg: Mapping[str, Any], n: int, size: int, seed: int) -> np.ndarray:
    """ROAR+'s image random control: the smooth random maps of ROAR (patch-grid noise upsampled like
    the methods' maps, grid ``roar.retrain.random_grid`` or the model's), so the control removes
    blobs as the methods do instead of scattered pixels."""
    from .retrain import patch_grid, smooth_random_maps

    grid = (roar_cfg.get("retrain") or {}).get("random_grid") or patch_grid(model)
    return smooth_random_maps(n, size, int(grid), seed)


def with_modality(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with a filled ``modality`` column: runs recorded before text ROAR+ existed have none
    and are image runs (``both`` for the clean run)."""
    default = runs["variant"].map(lambda v: "both" if v == "clean" else "image")
    return runs.assign(modality=runs["modality"].fillna(default) if "modality" in runs else default)


def summarise_roar(runs: pd.DataFrame) -> pd.DataFrame:
    """ROAR+ per (modality, variant): mean and sd over seeds of 100 (L_deg - L_clean)/L_clean,
    seed-paired. Image and text runs are both compared with the one clean run of their seed."""
    from .degrade import roar_plus

    runs = with_modality(runs)
    repeated = runs[runs.duplicated(["modality", "variant", "seed"], keep=False)]
    if len(repeated):
        raise ValueError(
            "ROAR+: more than one run per (modality, variant, seed): "
            f"{sorted(set(map(tuple, repeated[['modality', 'variant', 'seed']].astype(str).values)))}; "
            "each fine-tuning run must record its own seed"
        )
    clean = runs[runs["variant"] == "clean"].set_index("seed")["val_loss"]
    degraded = runs[runs["variant"] != "clean"]
    unpaired = sorted(set(degraded["seed"]) - set(clean.index))
    if unpaired:
        raise ValueError(f"ROAR+: no clean run for seed(s) {unpaired}; every seed needs one")
    rows = []
    for (modality, variant), grp in degraded.groupby(["modality", "variant"], sort=True):
        vals = np.array([roar_plus(r.val_loss, clean.loc[r.seed]) for r in grp.itertuples()])
        rows.append(
            {
                "modality": modality,
                "method": variant,
                "roar_plus_mean": float(vals.mean()),
                "roar_plus_sd": float(vals.std(ddof=1)) if len(vals) > 1 else float("nan"),
                "n_seeds": int(len(vals)),
            }
        )
    return pd.DataFrame(rows, columns=["modality", "method", "roar_plus_mean", "roar_plus_sd", "n_seeds"])
