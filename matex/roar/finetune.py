"""One ROAR+ run: fine-tune the explained CLIP on (possibly degraded) training pairs and measure the
contrastive loss on the untouched validation pairs."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from .degrade import degrade_images, random_maps


def roar_run(model, pairs: pd.DataFrame, images_u8: np.ndarray, train_rows: np.ndarray, val_rows: np.ndarray,
             variant: str, maps: np.ndarray | None, roar_cfg: Mapping[str, Any], seed: int,
             threads: int | None = None, progress: bool = True) -> dict[str, Any]:
    """``variant``: a method name (``maps`` are its maps for ``train_rows``), ``clean`` (no removal)
    or ``random`` (random removal). Returns losses before and after fine-tuning."""
    from ..models.train import train_clip, validation_loss

    train_imgs = np.ascontiguousarray(images_u8[train_rows])
    if variant == "clean":
        degraded = train_imgs
    else:
        if variant == "random":
            maps = random_maps(train_imgs.shape, seed)
        if maps is None or maps.shape != train_imgs.shape:
            raise ValueError(f"ROAR+ {variant}: need one map per training pair of shape {train_imgs.shape[1:]}")
        degraded = degrade_images(train_imgs, maps, float(roar_cfg["top_fraction"]), float(train_imgs.mean()))
    train_texts = pairs["phrase"].iloc[train_rows].tolist()
    val_imgs = np.ascontiguousarray(images_u8[val_rows])
    val_texts = pairs["phrase"].iloc[val_rows].tolist()
    bs = int(roar_cfg["batch_size"])
    # the explained model's own loss is the same for every variant and seed: measured once, with the clean run
    loss_before = validation_loss(model, val_imgs, val_texts, batch_size=bs, seed=0) if variant == "clean" else None
    history = train_clip(model, degraded, train_texts, epochs=int(roar_cfg["epochs"]), batch_size=bs,
                         lr=float(roar_cfg["lr"]), weight_decay=0.0, warmup_steps=0, seed=seed,
                         threads=threads, progress=progress)
    loss_after = validation_loss(model, val_imgs, val_texts, batch_size=bs, seed=0)
    return {"variant": variant, "seed": seed,
            "val_loss_before": float(loss_before) if loss_before is not None else None,
            "val_loss": float(loss_after), "n_train": int(len(train_rows)), "n_val": int(len(val_rows)),
            "removed_fraction": 0.0 if variant == "clean" else float(roar_cfg["top_fraction"]),
            "history": history}


def summarise_roar(runs: pd.DataFrame) -> pd.DataFrame:
    """ROAR+ per variant: mean and sd over seeds of 100 (L_deg - L_clean)/L_clean, seed-paired."""
    from .degrade import roar_plus

    clean = runs[runs["variant"] == "clean"].set_index("seed")["val_loss"]
    rows = []
    for variant, grp in runs[runs["variant"] != "clean"].groupby("variant", sort=True):
        vals = np.array([roar_plus(r.val_loss, clean.loc[r.seed]) for r in grp.itertuples()])
        rows.append({"method": variant, "roar_plus_mean": float(vals.mean()),
                     "roar_plus_sd": float(vals.std(ddof=1)) if len(vals) > 1 else float("nan"),
                     "n_seeds": int(len(vals))})
    return pd.DataFrame(rows)
