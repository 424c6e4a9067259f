"""Compute attribution maps for a dataset and cache them: ``{method}.npz`` (maps keyed by pair id,
at the model input size, float32 by default: ``attribution.store_dtype``; float16 halves the size
but creates ties at the maximum) and ``{method}.parquet`` (per pair: runtime, map statistics,
config hash). Shards split a method's pairs so a cluster runs them in parallel; merging the shards
gives exactly the unsharded artifacts."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..errors import MapError
from ..io import (
    checksums_of,
    npz_entries,
    read_npz,
    read_npz_members,
    read_npz_meta,
    read_parquet,
    write_npz,
    write_parquet,
)

log = logging.getLogger(__name__)


def select_pairs(
    pairs: pd.DataFrame,
    split: str,
    max_pairs: int | None,
    priority: np.ndarray | None = None,
    quota: int = 0,
) -> np.ndarray:
    """Row indices (into pairs.parquet / images.npy) of the pairs to explain, in pair order.

    With ``max_pairs``, the first ``max_pairs`` of the split; with a boolean ``priority`` per row of
    ``pairs`` and a ``quota``, a stratified choice instead: the first ``quota`` priority rows of the
    split (fewer if the split has fewer), then the split's other rows in pair order up to ``max_pairs``
    (a stratum that is rare in pair order, such as the shortcut study's films, is then represented
    within the budget). The result is sorted (pair order) and deterministic."""
    rows = np.arange(len(pairs)) if split == "all" else np.flatnonzero(pairs["split"].to_numpy() == split)
    if not max_pairs or len(rows) <= max_pairs:
        return rows
    if priority is None or quota <= 0:
        return rows[:max_pairs]
    priority = np.asarray(priority, dtype=bool)
    if priority.shape != (len(pairs),):
        raise ValueError(f"priority has shape {priority.shape}, expected ({len(pairs)},): one flag per pair")
    first = rows[priority[rows]][: min(int(quota), int(max_pairs))]
    rest = rows[~np.isin(rows, first)][: int(max_pairs) - len(first)]
    return np.sort(np.concatenate([first, rest]))


# the class the synthetic training films pair with a chest drain (the generator's shortcut)
SHORTCUT_CATEGORY = "Pneumothorax"


def shortcut_priority(cfg: Mapping[str, Any], pairs: pd.DataFrame) -> np.ndarray:
    """Per row of ``pairs``: the phrase is of the shortcut's class and its film has a chest drain, read
    from the generator's elements table (``{results_dir}/{dataset}/raw/synthetic_elements.parquet``,
    written before the pairs table)."""
    path = Path(cfg["results_dir"]) / str(cfg["dataset"]) / "raw" / "synthetic_elements.parquet"
    if not path.exists():
        raise MapError(f"attribution.shortcut_pairs needs the synthetic generator's elements table {path}")
    elements = pd.read_parquet(path, columns=["dicom_id", "drain"])
    drained = set(elements.loc[elements["drain"].astype(bool), "dicom_id"])
    return (pairs["category"].to_numpy() == SHORTCUT_CATEGORY) & pairs["dicom_id"].isin(drained).to_numpy()


def evaluation_rows(cfg: Mapping[str, Any], pairs: pd.DataFrame) -> np.ndarray:
    """The evaluation pairs every step explains (``attribution.split``, ``max_pairs``; on synthetic
    data, ``attribution.shortcut_pairs`` of them drawn first from the shortcut study's pairs: phrases
    of the shortcut's class on films with a drain), as :func:`select_pairs` chooses them."""
    att = cfg["attribution"]
    quota = int(att.get("shortcut_pairs") or 0)
    synthetic = cfg.get("data", {}).get("source") == "synthetic"
    priority = shortcut_priority(cfg, pairs) if quota and synthetic and att.get("max_pairs") else None
    return select_pairs(
        pairs, att.get("split", "val"), att.get("max_pairs"), priority, quota if priority is not None else 0
    )


def shard_rows(rows: np.ndarray, shard: int, n_shards: int) -> np.ndarray:
    """Contiguous, near-equal chunks: shard i of n (0-based)."""
    return np.array_split(rows, n_shards)[shard]


def training_boxes_of(pairs: pd.DataFrame, size: int):
    """The train split's aligned boxes, which the bias controls (mean_box, category_box) read; None
    when the table lacks the columns. Masks are only computed when a method asks for them."""
    from ..attribution.mean_box import TrainingBoxes

    if not {"split", "boxes", "category"} <= set(pairs.columns):
        return None
    return TrainingBoxes.from_pairs(pairs, size)


def explain_batch(model, method: str, params: Mapping[str, Any], batch: pd.DataFrame, images, training_boxes):
    """Explain one batch of pairs as every step does: the phrases, each film's original size (so the
    prior is laid through the same geometry as the boxes), the training boxes and categories (read by
    the bias controls)."""
    from ..attribution import explain

    sizes = (
        list(zip(batch["image_height"], batch["image_width"]))
        if {"image_height", "image_width"} <= set(batch.columns)
        else None
    )
    categories = batch["category"].astype(str).tolist() if "category" in batch.columns else None
    return explain(
        model,
        images,
        batch["phrase"].tolist(),
        method=method,
        image_sizes=sizes,
        training_boxes=training_boxes,
        categories=categories,
        **dict(params),
    )


# 64 lines: one batched loop; 30 of them are its signature, docstring and the per-pair record literal.
def attribute_rows(
    model,
    method: str,
    params: Mapping[str, Any],
    pairs: pd.DataFrame,
    images_u8: np.ndarray,
    rows: Sequence[int],
    batch_size: int,
    store_dtype: str = "float32",
    progress: bool = True,
    audit: dict[str, np.ndarray] | None = None,
) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """Explain the given rows in batches; return ``{pair_id: map}`` (plus ``text/<pair_id>`` token
    maps where the method has a text side) and a per-pair statistics table.

    ``audit``: a dict to fill with what an auditor reads beside the maps: each component map the
    method fused (``components/<name>/<pair_id>``, float16) and the token strings a text map scores
    (``tokens/<pair_id>``)."""
    import torch

    maps: dict[str, np.ndarray] = {}
    records: list[dict[str, Any]] = []
    rows = np.asarray(rows, dtype=np.int64)
    training_boxes = training_boxes_of(pairs, model.geometry.size)
    for start in tqdm(range(0, len(rows), batch_size), desc=f"attribute {method}", disable=not progress, unit="batch"):
        idx = rows[start : start + batch_size]
        batch = pairs.iloc[idx]
        images = model.preprocess(np.ascontiguousarray(images_u8[idx]))
        texts = batch["phrase"].tolist()
        t0 = time.perf_counter()
        out = explain_batch(model, method, params, batch, images, training_boxes)
        if images.is_cuda:
            torch.cuda.synchronize()
        per_pair = (time.perf_counter() - t0) / len(idx)
        image_maps = out.image.detach().float().cpu().numpy()
        for j, pair_id in enumerate(batch["pair_id"]):
            m = image_maps[j]
            if not np.isfinite(m).all():
                raise MapError(f"method {method} produced a non-finite map for pair {pair_id} (row {int(idx[j])})")
            maps[pair_id] = m.astype(store_dtype)
            if out.text is not None:
                maps[f"text/{pair_id}"] = np.asarray(out.text[j], dtype=np.float32)
            if audit is not None:
                for name, comp in out.components.items():
                    audit[f"components/{name}/{pair_id}"] = comp[j].detach().float().cpu().numpy().astype(np.float16)
            records.append(
                {
                    "pair_id": pair_id,
                    "row": int(idx[j]),
                    "method": method,
                    "category": batch["category"].iloc[j],
                    "runtime_s": per_pair,
                    "map_min": float(m.min()),
                    "map_max": float(m.max()),
                    "map_mean": float(m.mean()),
                    "map_std": float(m.std()),
                }
            )
        if audit is not None and out.text is not None:
            from ..models.tokens import token_strings

            for pair_id, toks in zip(batch["pair_id"], token_strings(model, texts, [len(t) for t in out.text])):
                audit[f"tokens/{pair_id}"] = np.array(toks, dtype=str)
    return maps, pd.DataFrame.from_records(records)


def write_attribution(
    maps: Mapping[str, np.ndarray],
    table: pd.DataFrame,
    meta: Mapping[str, Any],
    out_npz: str | Path,
    out_parquet: str | Path,
    audit: Mapping[str, np.ndarray] | None = None,
    out_audit: str | Path | None = None,
) -> None:
    """The maps NPZ, its index table (with the NPZ's sha256, verified whenever the maps are read:
    ``io.verify_checksum``) and, when asked, the audit NPZ."""
    table = table.assign(config_hash=meta.get("config_hash", ""))
    write_npz(out_npz, maps, meta)
    write_parquet(out_parquet, table, meta, checksums=checksums_of(out_npz))
    if out_audit is not None:
        write_npz(out_audit, dict(audit or {}), meta)


def _merge_npz(npz_paths: Sequence[str | Path]) -> tuple[dict[str, np.ndarray], dict]:
    maps: dict[str, np.ndarray] = {}
    metas = []
    for p in npz_paths:
        arrays, meta = read_npz(p)
        maps.update(arrays)
        metas.append({k: v for k, v in meta.items() if k != "shard"})
    if any(m != metas[0] for m in metas):
        raise MapError(f"shards were made with different settings: {list(map(str, npz_paths))}")
    return maps, dict(metas[0])


def merge_shards(
    npz_paths: Sequence[str | Path],
    parquet_paths: Sequence[str | Path],
    out_npz: str | Path,
    out_parquet: str | Path,
    audit_paths: Sequence[str | Path] = (),
    out_audit: str | Path | None = None,
) -> None:
    """Concatenate shard artifacts (in shard order) into the method's artifacts."""
    maps, meta = _merge_npz(npz_paths)
    table = pd.concat([read_parquet(p) for p in parquet_paths], ignore_index=True)
    write_npz(out_npz, maps, meta)
    write_parquet(out_parquet, table, meta, checksums=checksums_of(out_npz))
    if out_audit is not None:
        audit, audit_meta = _merge_npz(audit_paths)
        write_npz(out_audit, audit, audit_meta)


def load_maps(npz_path: str | Path, pair_ids: Sequence[str] | None = None) -> tuple[np.ndarray, list[str], dict]:
    """Image maps stacked as float32 (B, H, W) in the order of ``pair_ids`` (default: file order).
    Only the requested maps are decompressed."""
    meta = read_npz_meta(npz_path)
    entries = npz_entries(npz_path)
    present = set(entries)
    if pair_ids is None:
        pair_ids = [k for k in entries if not k.startswith("text/")]
    ids = list(pair_ids)
    missing = [p for p in ids if p not in present]
    if missing:
        raise MapError(f"{npz_path} has no map for pairs {missing[:5]}")
    arrays = read_npz_members(npz_path, ids)
    return np.stack([arrays[p].astype(np.float32) for p in ids]), ids, meta


def load_token_maps(npz_path: str | Path, pair_ids: Sequence[str]) -> list[np.ndarray] | None:
    """Token maps (keys ``text/<pair_id>``) as float32 arrays in the order of ``pair_ids``; None when
    the file holds no token map at all (the method has no text side). Only those maps are read."""
    entries = set(npz_entries(npz_path))
    if not any(k.startswith("text/") for k in entries):
        return None
    missing = [p for p in pair_ids if f"text/{p}" not in entries]
    if missing:
        raise MapError(f"{npz_path} has no token map for pairs {missing[:5]}")
    arrays = read_npz_members(npz_path, [f"text/{p}" for p in pair_ids])
    return [arrays[f"text/{p}"].astype(np.float32) for p in pair_ids]
