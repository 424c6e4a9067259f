"""The MS-CXR loader: one row per box in the CSV becomes one image-phrase *pair* with its boxes
aligned to the model's input (docs/evaluation.md).

Steps (``build_pairs``): read the CSV (MS-CXR's exact columns, the synthetic generator writes the
same), check every row (path inside the image root, one film per ``dicom_id`` and one ``dicom_id`` per
film, image present and decodable at the size the CSV states, box inside the image, phrase not
empty), group rows by ``(dicom_id, phrase)``, map every box through the same
affine map as the image (``InputGeometry.map_box``), and split by *patient* so no patient's images
leak from training into validation (ROAR+ fine-tunes on the train split, section 5).

Bad rows either stop the run with an error naming the CSV file, the row and the image
(``on_bad_row="error"``) or are dropped and recorded in the alignment report (``"skip"``).
A box only partly outside the image is clipped, recorded, and kept. Phrases are whitespace-normalised
(runs of spaces/newlines become one space) before grouping, so the same phrase typed twice is one pair.

``prepare_dataset`` writes the three artifacts of the ``prepare`` rule: the pairs table, the
alignment report and the model-input images (decoded once per image, even when pairs share it).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from ..errors import DataError
from ..io import atomic_path, write_json, write_parquet
from .mscxr_rows import (
    BAD_ROW_POLICIES as BAD_ROW_POLICIES,  # the on_bad_row choices, importable from here
)
from .mscxr_rows import (
    PATIENT_RE,
    STUDY_RE,
    BadRows,
    Identity,
    check_image,
    drop_reason,
    fields_problem,
    float_or_nan,
    positive_int,
)
from .transforms import InputGeometry

REQUIRED_COLUMNS = [
    "dicom_id",
    "category_name",
    "label_text",
    "path",
    "x",
    "y",
    "w",
    "h",
    "image_width",
    "image_height",
]
PAIR_COLUMNS = [
    "pair_id",
    "dicom_id",
    "patient_id",
    "study_id",
    "category",
    "phrase",
    "image_path",
    "image_width",
    "image_height",
    "boxes_orig",
    "boxes",
    "box_status",
    "split",
]


# ------------------------------------------------------------------------------------ reading
def read_mscxr_csv(path: str | Path) -> pd.DataFrame:
    """Read an MS-CXR-format CSV with every column as text (numbers are parsed later, per row, so a
    bad value becomes a bad row rather than a crash). Adds ``_line``: the 1-based line on which
    each data row starts (the header is line 1), so errors can point at the file line."""
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=True)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise DataError(f"cannot read the MS-CXR CSV: {type(e).__name__}: {e}", file=str(path)) from e
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"the MS-CXR CSV lacks required column(s) {missing}; it has {list(df.columns)}", file=str(path))
    lines = _record_start_lines(path)
    df["_line"] = lines[: len(df)] if len(lines) >= len(df) else np.arange(len(df)) + 2
    return df.reset_index(drop=True)


def _record_start_lines(path: Path) -> list[int]:
    """Start line of every non-blank data record (quoted fields may span lines)."""
    starts, prev_end = [], 1
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        next(reader, None)
        prev_end = reader.line_num
        for record in reader:
            if record and not (len(record) == 1 and not record[0].strip()):
                starts.append(prev_end + 1)
            prev_end = reader.line_num
    return starts


# --------------------------------------------------------------------------------------- pairs
def pair_id_for(dicom_id: str, phrase: str, category: str) -> str:
    """Deterministic, readable pair id: the image id plus 8 hex digits of the sha1 of the phrase and
    its category. One pair is one (image, phrase, category) triple: MS-CXR files a few phrases of
    one image under two categories, each with its own boxes (1162 pairs, not 1160)."""
    key = f"{phrase}\x1f{category}"
    return f"{dicom_id}-{hashlib.sha1(key.encode('utf-8')).hexdigest()[:8]}"


def split_patients(patients: list[str], val_fraction: float, seed: int) -> set[str]:
    """The validation patients: rank patients by ``sha1(f"{seed}:{patient}")`` and take the first
    ``round(val_fraction * n)`` (at least one and at most n - 1 when 0 < val_fraction < 1 and n >= 2),
    so the split depends only on the seed and the patient ids, not on row order."""
    if not 0.0 <= val_fraction <= 1.0:
        raise DataError(f"val_fraction must lie in [0, 1], got {val_fraction}")
    unique = sorted(set(patients))
    ranked = sorted(unique, key=lambda p: hashlib.sha1(f"{seed}:{p}".encode()).hexdigest())
    n_val = int(round(val_fraction * len(ranked)))
    if 0.0 < val_fraction < 1.0 and len(ranked) >= 2:
        n_val = min(max(n_val, 1), len(ranked) - 1)
    return set(ranked[:n_val])


def build_pairs(
    csv_path: str | Path,
    image_root: str | Path,
    geometry: InputGeometry,
    val_fraction: float,
    seed: int,
    on_bad_row: str = "error",
    *,
    on_image: Callable[[str, Image.Image], None] | None = None,
    progress: bool = False,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Group the CSV's box rows into image-phrase pairs with boxes aligned to the model input.

    Returns ``(pairs, report)``: ``pairs`` has ``PAIR_COLUMNS`` sorted by ``pair_id``; ``report`` is
    JSON-able (counts, clipped/dropped boxes, skipped rows, per split and per category counts).
    ``on_image(image_path, img)`` is called once per usable image (keyed by the CSV's path, as the
    pairs table's ``image_path``) while it is decoded for the check, so a caller can keep what it needs
    without decoding twice. A path that leaves ``image_root`` and a row whose dicom_id and path
    contradict an earlier row are bad rows (naming the CSV line).
    """
    csv_path, image_root = Path(csv_path), Path(image_root)
    bad = BadRows(csv_path, on_bad_row)
    df = read_mscxr_csv(csv_path)
    kept, n_clipped, n_dropped = _check_rows(df, image_root, geometry, bad, on_image, progress)
    records = _group_pairs(kept, bad)
    out = _pairs_table(records, val_fraction, seed, csv_path)
    return out, _report(df, out, bad.skipped, n_clipped, n_dropped, geometry)


def _check_rows(
    df: pd.DataFrame,
    image_root: Path,
    geometry: InputGeometry,
    bad: BadRows,
    on_image: Callable[[str, Image.Image], None] | None,
    progress: bool,
) -> tuple[list[dict[str, Any]], int, int]:
    """Check every CSV row in order; the usable box rows (box mapped to the model input, a dropped box
    recorded as a bad row but kept) and the numbers of clipped and dropped boxes."""
    image_reason: dict[tuple[str, int, int], str | None] = {}  # images: decode each distinct (path, size) once
    rows_iter = range(len(df))
    if progress:
        from tqdm import tqdm

        rows_iter = tqdm(rows_iter, desc="checking MS-CXR rows", unit="row")

    kept: list[dict[str, Any]] = []
    identity = Identity()
    n_clipped = n_dropped = 0
    for i in rows_iter:
        row = _check_row(i, df.iloc[i], image_root, geometry, bad, identity, image_reason, on_image)
        if row is None:
            continue
        if row["status"] == "dropped":
            x, y, w, h = row["box_orig"]
            reason = drop_reason(x, y, w, h, row["image_width"], row["image_height"], geometry)
            bad(i, row["line"], row["dicom_id"], row["image_path"], reason)
            n_dropped += 1
        elif row["status"] == "clipped":
            n_clipped += 1
        kept.append(row)
    return kept, n_clipped, n_dropped


def _check_row(
    i: int,
    r: pd.Series,
    image_root: Path,
    geometry: InputGeometry,
    bad: BadRows,
    identity: Identity,
    image_reason: dict[tuple[str, int, int], str | None],
    on_image: Callable[[str, Image.Image], None] | None,
) -> dict[str, Any] | None:
    """One CSV row: its first problem (fields, then image) goes to ``bad`` and gives None; else the
    row with its box mapped to the model input."""
    line, dicom_id, rel = int(r["_line"]), str(r["dicom_id"]).strip(), str(r["path"]).strip()
    phrase = " ".join(str(r["label_text"]).split())
    problem = fields_problem(r, line, dicom_id, rel, phrase, identity)
    if problem is None:
        width, height = positive_int(r["image_width"]), positive_int(r["image_height"])
        key = (rel, width, height)
        if key not in image_reason:
            callback = (lambda img, p=rel: on_image(p, img)) if on_image is not None else None
            image_reason[key] = check_image(image_root / rel, width, height, geometry, callback)
        problem = image_reason[key]
    if problem is not None:
        bad(i, line, dicom_id, rel, problem)
        return None
    x, y, w, h = (float_or_nan(r[c]) for c in ("x", "y", "w", "h"))
    box, status = geometry.map_box(x, y, w, h, width, height)
    return {
        "row": i,
        "line": line,
        "dicom_id": dicom_id,
        "phrase": phrase,
        "category": str(r["category_name"]).strip(),
        "image_path": rel,
        "patient_id": PATIENT_RE.search(rel).group(1),
        "study_id": STUDY_RE.search(rel).group(1),
        "image_width": width,
        "image_height": height,
        "box_orig": [x, y, w, h],
        "box": None if box is None else [float(v) for v in box],
        "status": status,
    }


def _group_pairs(kept: list[dict[str, Any]], bad: BadRows) -> list[dict[str, Any]]:
    """One pair record per (image, phrase, category), in first-seen order; a pair whose every box was
    dropped is a bad row (only reachable with ``on_bad_row="skip"``)."""
    pairs: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in kept:  # one pair per (image, phrase, category)
        pairs.setdefault((row["dicom_id"], row["phrase"], row["category"]), []).append(row)

    records = []
    for (dicom_id, phrase, category), rows in pairs.items():
        first = rows[0]
        boxes = [row["box"] for row in rows if row["box"] is not None]
        if not boxes:  # only reachable with on_bad_row="skip": every box of the pair was dropped
            bad(
                first["row"],
                first["line"],
                dicom_id,
                first["image_path"],
                f"pair left with no box (rows {[row['row'] for row in rows]})",
            )
            continue
        records.append(
            {
                "pair_id": pair_id_for(dicom_id, phrase, category),
                "dicom_id": dicom_id,
                "patient_id": first["patient_id"],
                "study_id": first["study_id"],
                "category": category,
                "phrase": phrase,
                "image_path": first["image_path"],
                "image_width": first["image_width"],
                "image_height": first["image_height"],
                "boxes_orig": [row["box_orig"] for row in rows],
                "boxes": boxes,
                "box_status": [row["status"] for row in rows],
            }
        )
    return records


def _pairs_table(records: list[dict[str, Any]], val_fraction: float, seed: int, csv_path: Path) -> pd.DataFrame:
    """The pairs table: each record's patient split (train/val), ``PAIR_COLUMNS``, sorted by pair id;
    a pair-id collision within one image is an error, never a silent merge."""
    val_patients = split_patients([rec["patient_id"] for rec in records], val_fraction, seed)
    for rec in records:
        rec["split"] = "val" if rec["patient_id"] in val_patients else "train"
    out = pd.DataFrame.from_records(records, columns=PAIR_COLUMNS)
    out = out.sort_values("pair_id", kind="stable").reset_index(drop=True)
    if out["pair_id"].duplicated().any():  # a sha1 prefix collision within one image: never silently merge
        dup = out.loc[out["pair_id"].duplicated(), "pair_id"].iloc[0]
        raise DataError(f"two (phrase, category) pairs of one image share pair id {dup}", file=str(csv_path))
    return out


def _report(
    df: pd.DataFrame, pairs: pd.DataFrame, skipped: list[dict], n_clipped: int, n_dropped: int, geometry: InputGeometry
) -> dict[str, Any]:
    per_split = {}
    for split in ("train", "val"):
        sub = pairs[pairs["split"] == split]
        per_split[split] = {"pairs": int(len(sub)), "patients": int(sub["patient_id"].nunique())}
    per_category = {}
    for cat, sub in pairs.groupby("category", sort=True):
        per_category[str(cat)] = {"pairs": int(len(sub)), "boxes": int(sum(len(b) for b in sub["boxes"]))}
    status_counts = Counter(s for statuses in pairs["box_status"] for s in statuses)
    return {
        "n_rows": int(len(df)),
        "n_pairs": int(len(pairs)),
        "n_images": int(pairs["dicom_id"].nunique()),
        "n_patients": int(pairs["patient_id"].nunique()),
        "n_boxes": int(sum(len(b) for b in pairs["boxes"])),
        "n_boxes_clipped": int(n_clipped),
        "n_boxes_clipped_in_pairs": int(status_counts.get("clipped", 0)),
        "n_boxes_dropped": int(n_dropped),
        "skipped": skipped,
        "per_split": per_split,
        "per_category": per_category,
        "geometry": {"size": int(geometry.size), "mode": geometry.mode},
    }


# ------------------------------------------------------------------------------------- prepare
def prepare_dataset(
    csv_path: str | Path,
    image_root: str | Path,
    geometry: InputGeometry,
    val_fraction: float,
    seed: int,
    on_bad_row: str,
    out_pairs: str | Path,
    out_report: str | Path,
    out_images: str | Path,
    meta: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Build the pairs and write ``out_pairs`` (Parquet), ``out_report`` (JSON) and ``out_images``
    (uint8 ``.npy`` of shape (n_pairs, S, S), the model inputs in pairs row order). Each image is
    decoded once, however many pairs share it. All three files appear together or not at all."""
    inputs: dict[str, np.ndarray] = {}

    def keep_input(image_path: str, img: Image.Image) -> None:
        inputs[image_path] = geometry.image_to_input(img)

    pairs, report = build_pairs(
        csv_path, image_root, geometry, val_fraction, seed, on_bad_row, on_image=keep_input, progress=progress
    )
    size = geometry.size
    images = np.zeros((len(pairs), size, size), dtype=np.uint8)
    for k, image_path in enumerate(pairs["image_path"]):
        images[k] = inputs[image_path]
    full_meta = {**dict(meta or {}), "geometry": report["geometry"], "n_pairs": report["n_pairs"]}
    with contextlib.ExitStack() as stack:
        tmp_pairs = stack.enter_context(atomic_path(out_pairs, suffix=".parquet"))
        tmp_report = stack.enter_context(atomic_path(out_report, suffix=".json"))
        tmp_images = stack.enter_context(atomic_path(out_images, suffix=".npy"))
        write_parquet(tmp_pairs, pairs, full_meta)
        write_json(tmp_report, report)
        np.save(tmp_images, images)
    return pairs
