"""MS-CXR loader: box alignment, grouping, bad rows, patient-level split, atomic artifacts.

Every image and CSV here is made in tmp_path (no MIMIC-derived data)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from matex.data.mscxr import REQUIRED_COLUMNS, build_pairs, pair_id_for, prepare_dataset, read_mscxr_csv
from matex.data.transforms import InputGeometry, box_mask
from matex.errors import DataError
from matex.io import read_parquet_meta

CSV_NAME = "MS_CXR_Local_Alignment_v1.0.0.csv"


def rel_path(patient: int, study: int, dicom_id: str) -> str:
    p = f"p{patient:08d}"
    return f"files/{p[:3]}/{p}/s{study:08d}/{dicom_id}.jpg"


def save_image(root: Path, rel: str, width: int, height: int, box=None, fmt="JPEG") -> None:
    """A dark image with noise-free texture; ``box`` (x, y, w, h) painted bright."""
    arr = np.full((height, width), 30, np.uint8)
    if box is not None:
        x, y, w, h = box
        arr[y : y + h, x : x + w] = 230
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))


def row(dicom_id, rel, box, size, phrase="right lower lobe opacity", category="Lung Opacity"):
    x, y, w, h = box
    return {
        "dicom_id": dicom_id,
        "category_name": category,
        "label_text": phrase,
        "path": rel,
        "x": x,
        "y": y,
        "w": w,
        "h": h,
        "image_width": size[0],
        "image_height": size[1],
    }


def write_csv(path: Path, rows: list[dict], columns=REQUIRED_COLUMNS) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def small_dataset(root: Path, n_patients: int = 3) -> Path:
    """One image per patient (64x48), one box each; patient 1's image has two phrases, one of them
    with two boxes."""
    rows = []
    for p in range(1, n_patients + 1):
        dicom = f"img{p:03d}"
        rel = rel_path(p, 50000000 + p, dicom)
        save_image(root, rel, 64, 48, box=(10, 10, 20, 15))
        rows.append(row(dicom, rel, (10, 10, 20, 15), (64, 48)))
        if p == 1:
            rows.append(row(dicom, rel, (40, 20, 10, 10), (64, 48)))
            rows.append(row(dicom, rel, (5, 5, 10, 10), (64, 48), phrase="cardiomegaly", category="Cardiomegaly"))
    return write_csv(root / CSV_NAME, rows)


GEOM = InputGeometry(32, "center_crop")


# -------------------------------------------------------------------------------- alignment
@pytest.mark.parametrize("mode", ["center_crop", "letterbox"])
@pytest.mark.parametrize(
    "size_wh,box",
    [
        ((160, 120), (100, 30, 40, 50)),  # landscape, box right of centre
        ((120, 170), (20, 100, 50, 40)),  # portrait, box low left
        ((150, 150), (5, 5, 60, 30)),
    ],
)  # square, near a corner
def test_painted_box_lands_on_mapped_box(tmp_path, mode, size_wh, box):
    """A bright rectangle drawn at the box in the original lands exactly where the mapped box says."""
    rel = rel_path(1, 1, "painted")
    save_image(tmp_path, rel, *size_wh, box=box, fmt="PNG")
    csv_path = write_csv(tmp_path / CSV_NAME, [row("painted", rel, box, size_wh)])
    geom = InputGeometry(64, mode)
    pairs = prepare_dataset(
        csv_path,
        tmp_path,
        geom,
        0.0,
        0,
        "error",
        tmp_path / "pairs.parquet",
        tmp_path / "report.json",
        tmp_path / "images.npy",
        progress=False,
    )
    images = np.load(tmp_path / "images.npy")
    assert images.shape == (1, 64, 64) and images.dtype == np.uint8
    bright = images[0] > 130
    mask = box_mask(pairs["boxes"].iloc[0], 64)
    iou = (bright & mask).sum() / (bright | mask).sum()
    assert iou > 0.9, iou
    assert pairs["box_status"].iloc[0] == ["ok"]


def test_box_partly_outside_is_clipped_and_recorded(tmp_path):
    rel = rel_path(1, 1, "clip")
    save_image(tmp_path, rel, 64, 64)
    # half of the box hangs over the right edge of the image
    csv_path = write_csv(tmp_path / CSV_NAME, [row("clip", rel, (48, 10, 32, 20), (64, 64))])
    pairs, report = build_pairs(csv_path, tmp_path, InputGeometry(32, "letterbox"), 0.0, 0)
    assert pairs["box_status"].iloc[0] == ["clipped"]
    assert report["n_boxes_clipped"] == 1 and report["n_boxes_dropped"] == 0 and report["skipped"] == []
    x0, y0, x1, y1 = pairs["boxes"].iloc[0][0]
    assert (x0, y0, x1, y1) == pytest.approx((24.0, 5.0, 32.0, 15.0))
    assert pairs["boxes_orig"].iloc[0] == [[48.0, 10.0, 32.0, 20.0]]


def test_center_crop_clips_box_in_cropped_margin(tmp_path):
    """Centre-cropping a wide image cuts its sides: a box straddling the crop edge is clipped."""
    rel = rel_path(1, 1, "wide")
    save_image(tmp_path, rel, 128, 64)
    csv_path = write_csv(tmp_path / CSV_NAME, [row("wide", rel, (16, 10, 32, 20), (128, 64))])
    pairs, report = build_pairs(csv_path, tmp_path, InputGeometry(64, "center_crop"), 0.0, 0)
    assert pairs["box_status"].iloc[0] == ["clipped"]
    assert pairs["boxes"].iloc[0][0] == pytest.approx([0.0, 10.0, 16.0, 30.0])


# --------------------------------------------------------------------------------- grouping
def test_rows_grouped_into_pairs(tmp_path):
    csv_path = small_dataset(tmp_path)
    pairs, report = build_pairs(csv_path, tmp_path, GEOM, 0.0, 0)
    assert list(pairs.columns) == [
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
    assert len(pairs) == 4 and report["n_rows"] == 5 and report["n_pairs"] == 4 and report["n_boxes"] == 5
    assert list(pairs["pair_id"]) == sorted(pairs["pair_id"])
    two = pairs[pairs["pair_id"] == pair_id_for("img001", "right lower lobe opacity", "Lung Opacity")].iloc[0]
    assert len(two["boxes"]) == 2 and two["box_status"] == ["ok", "ok"]
    assert two["patient_id"] == "p00000001" and two["study_id"] == "s50000001"
    assert two["image_path"] == rel_path(1, 50000001, "img001")
    assert report["per_category"] == {
        "Cardiomegaly": {"pairs": 1, "boxes": 1},
        "Lung Opacity": {"pairs": 3, "boxes": 4},
    }
    json.dumps(report)  # JSON-able


def test_prepare_decodes_each_image_once_and_writes_artifacts(tmp_path):
    csv_path = small_dataset(tmp_path)
    calls = []

    class CountingGeometry(InputGeometry):
        def image_to_input(self, img):
            calls.append(img.size)
            return super().image_to_input(img)

    out = tmp_path / "out"
    pairs = prepare_dataset(
        csv_path,
        tmp_path,
        CountingGeometry(32, "center_crop"),
        0.0,
        0,
        "error",
        out / "pairs.parquet",
        out / "report.json",
        out / "images.npy",
        meta={"config_hash": "abc"},
        progress=False,
    )
    assert len(calls) == 3  # 3 images, 4 pairs
    images = np.load(out / "images.npy")
    assert images.shape == (4, 32, 32)
    same = np.flatnonzero(pairs["dicom_id"].to_numpy() == "img001")
    assert len(same) == 2 and np.array_equal(images[same[0]], images[same[1]])
    back = pd.read_parquet(out / "pairs.parquet")
    assert list(back["pair_id"]) == list(pairs["pair_id"])
    assert [list(map(list, b)) for b in back["boxes"]] == [list(map(list, b)) for b in pairs["boxes"]]
    assert read_parquet_meta(out / "pairs.parquet")["config_hash"] == "abc"
    assert json.loads((out / "report.json").read_text())["n_pairs"] == 4
    assert sorted(p.name for p in out.iterdir()) == ["images.npy", "pairs.parquet", "report.json"]


# --------------------------------------------------------------------------------- bad rows
def _break_missing(root, rel):
    (root / rel).unlink()


def _break_truncated(root, rel):
    data = (root / rel).read_bytes()
    (root / rel).write_bytes(data[: len(data) // 2])


def _break_garbage(root, rel):
    (root / rel).write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg at all" * 4)


def _plant_outside(root, rel):
    """The file the escaping path names exists (outside the root): only containment refuses it."""
    save_image(root, rel, 64, 48)


BAD_KINDS = {
    # kind: (row overrides, file breaker, expected words in the reason)
    "missing_image": ({}, _break_missing, "not found"),
    "truncated_jpg": ({}, _break_truncated, "cannot be decoded"),
    "corrupt_jpg": ({}, _break_garbage, "cannot be decoded"),
    "box_outside": ({"x": 100, "y": 10}, None, "entirely outside"),
    "zero_area": ({"w": 0}, None, "zero or negative area"),
    "nan_coord": ({"y": ""}, None, "non-numeric"),
    "empty_phrase": ({"label_text": "   "}, None, "empty phrase"),
    "size_mismatch": ({"image_width": 65}, None, "image is 64x48"),
    "leaves_root": ({"path": "../outside/p00000004/s00000004/img4.jpg"}, _plant_outside, "leaves the image root"),
    "absolute_path": ({"path": "/etc/p00000004/s00000004/img4.jpg"}, None, "is absolute"),
}


def _bad_dataset(root: Path, kind: str) -> tuple[Path, str]:
    """Three good pairs (patients 1-3) and, as data row 3 (line 5), the bad pair of patient 4."""
    overrides, breaker, _ = BAD_KINDS[kind]
    rows = []
    for p in range(1, 5):
        dicom, rel = f"img{p}", rel_path(p, p, f"img{p}")
        save_image(root, rel, 64, 48, box=(10, 10, 20, 15))
        rows.append(row(dicom, rel, (10, 10, 20, 15), (64, 48)))
    rows[3].update(overrides)
    if breaker is not None:
        breaker(root, rows[3]["path"])
    return write_csv(root / "bad.csv", rows), rows[3]["path"]


@pytest.mark.parametrize("kind", list(BAD_KINDS))
def test_bad_row_error_names_file_row_line_and_image(tmp_path, kind):
    csv_path, rel = _bad_dataset(tmp_path, kind)
    with pytest.raises(DataError) as e:
        build_pairs(csv_path, tmp_path, GEOM, 0.0, 0, on_bad_row="error")
    msg = str(e.value)
    assert str(csv_path) in msg and "row 3" in msg and "line 5" in msg and rel in msg
    assert BAD_KINDS[kind][2] in msg
    assert e.value.row == 3


@pytest.mark.parametrize("kind", list(BAD_KINDS))
def test_bad_row_skip_records_it(tmp_path, kind):
    csv_path, rel = _bad_dataset(tmp_path, kind)
    pairs, report = build_pairs(csv_path, tmp_path, GEOM, 0.0, 0, on_bad_row="skip")
    assert sorted(pairs["dicom_id"]) == ["img1", "img2", "img3"]  # the bad pair had one box: gone
    rows_skipped = [s for s in report["skipped"] if s["row"] == 3]
    assert rows_skipped and rows_skipped[0]["line"] == 5 and rows_skipped[0]["path"] == rel
    assert rows_skipped[0]["dicom_id"] == "img4"
    assert any(BAD_KINDS[kind][2] in s["reason"] for s in rows_skipped)
    assert report["n_pairs"] == 3 and report["n_rows"] == 4


def test_skip_keeps_pair_with_one_good_box_and_drops_pair_without_box(tmp_path):
    rel = rel_path(1, 1, "a")
    save_image(tmp_path, rel, 64, 48)
    rows = [
        row("a", rel, (10, 10, 20, 15), (64, 48)),
        row("a", rel, (500, 10, 20, 15), (64, 48)),
        row("a", rel, (500, 10, 20, 15), (64, 48), phrase="left effusion"),
    ]
    csv_path = write_csv(tmp_path / CSV_NAME, rows)
    pairs, report = build_pairs(csv_path, tmp_path, GEOM, 0.0, 0, on_bad_row="skip")
    assert len(pairs) == 1 and pairs["box_status"].iloc[0] == ["ok", "dropped"]
    assert len(pairs["boxes"].iloc[0]) == 1 and len(pairs["boxes_orig"].iloc[0]) == 2
    reasons = [s["reason"] for s in report["skipped"]]
    assert report["n_boxes_dropped"] == 2 and any("pair left with no box" in r for r in reasons)


def test_missing_columns_and_unreadable_file(tmp_path):
    path = write_csv(tmp_path / "cols.csv", [], columns=[c for c in REQUIRED_COLUMNS if c not in ("w", "h")])
    with pytest.raises(DataError) as e:
        read_mscxr_csv(path)
    assert str(path) in str(e.value) and "'w'" in str(e.value) and "'h'" in str(e.value)
    with pytest.raises(DataError, match="nope.csv"):
        read_mscxr_csv(tmp_path / "nope.csv")


def test_error_leaves_no_artifacts(tmp_path):
    csv_path, _ = _bad_dataset(tmp_path, "corrupt_jpg")
    out = tmp_path / "out"
    with pytest.raises(DataError):
        prepare_dataset(
            csv_path,
            tmp_path,
            GEOM,
            0.2,
            0,
            "error",
            out / "pairs.parquet",
            out / "report.json",
            out / "images.npy",
            progress=False,
        )
    assert not out.exists() or list(out.iterdir()) == []


# ------------------------------------------------------------------------------------ split
def _many_patients(root: Path, n_patients: int = 40) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for p in range(1, n_patients + 1):
        for s in range(int(rng.integers(1, 4))):  # 1-3 studies per patient, one image each
            dicom = f"d{p:03d}_{s}"
            rel = rel_path(10000000 + p, 50000000 + 10 * p + s, dicom)
            save_image(root, rel, 24, 20)
            rows.append(row(dicom, rel, (2, 2, 8, 8), (24, 20)))
            rows.append(row(dicom, rel, (12, 2, 8, 8), (24, 20), phrase="cardiomegaly"))
    return write_csv(root / CSV_NAME, rows)


def test_patient_level_split_and_determinism(tmp_path):
    csv_path = _many_patients(tmp_path)
    geom = InputGeometry(16, "center_crop")
    pairs, report = build_pairs(csv_path, tmp_path, geom, 0.2, seed=3)
    by_patient = pairs.groupby("patient_id")["split"].nunique()
    assert (by_patient == 1).all()  # no patient in both splits
    val_patients = pairs.loc[pairs["split"] == "val", "patient_id"].nunique()
    assert val_patients == 8  # round(0.2 * 40)
    assert report["per_split"]["val"]["patients"] == 8 and report["per_split"]["train"]["patients"] == 32
    assert report["per_split"]["val"]["pairs"] + report["per_split"]["train"]["pairs"] == len(pairs)
    again, _ = build_pairs(csv_path, tmp_path, geom, 0.2, seed=3)
    pd.testing.assert_frame_equal(pairs, again)
    other, _ = build_pairs(csv_path, tmp_path, geom, 0.2, seed=4)
    assert set(other.loc[other["split"] == "val", "patient_id"]) != set(
        pairs.loc[pairs["split"] == "val", "patient_id"]
    )
    # row order of the CSV does not matter
    df = pd.read_csv(csv_path, dtype=str, keep_default_na=False).iloc[::-1]
    df.to_csv(tmp_path / "reversed.csv", index=False)
    rev, _ = build_pairs(tmp_path / "reversed.csv", tmp_path, geom, 0.2, seed=3)
    assert list(rev["pair_id"]) == list(pairs["pair_id"])
    assert list(rev["split"]) == list(pairs["split"])


# ------------------------------------------------------------------- pair key (issue 13)
def test_one_phrase_under_two_categories_gives_two_pairs_with_their_own_boxes(tmp_path):
    rel = rel_path(1, 50000001, "img001")
    save_image(tmp_path, rel, 64, 48)
    phrase = "patchy right lower lobe opacity"
    rows = [
        row("img001", rel, (4, 6, 10, 10), (64, 48), phrase=phrase, category="Pneumonia"),
        row("img001", rel, (30, 20, 12, 8), (64, 48), phrase=phrase, category="Consolidation"),
        row("img001", rel, (40, 10, 6, 6), (64, 48), phrase=phrase, category="Consolidation"),
    ]
    pairs, report = build_pairs(write_csv(tmp_path / CSV_NAME, rows), tmp_path, GEOM, 0.0, 0)
    assert len(pairs) == 2 and report["n_pairs"] == 2
    by_cat = {r.category: r for r in pairs.itertuples()}
    assert [list(b) for b in by_cat["Pneumonia"].boxes_orig] == [[4, 6, 10, 10]]
    assert [list(b) for b in by_cat["Consolidation"].boxes_orig] == [[30, 20, 12, 8], [40, 10, 6, 6]]
    assert by_cat["Pneumonia"].pair_id != by_cat["Consolidation"].pair_id
    assert by_cat["Pneumonia"].pair_id == pair_id_for("img001", phrase, "Pneumonia")


MSCXR_COUNTS = {
    "Atelectasis": 61,
    "Cardiomegaly": 333,
    "Consolidation": 117,
    "Edema": 46,
    "Lung Opacity": 82,
    "Pleural Effusion": 96,
    "Pneumonia": 182,
    "Pneumothorax": 245,
}


def test_mscxr_shaped_csv_gives_1162_pairs_with_the_published_counts(tmp_path):
    """A generated CSV with MS-CXR's per-category pair counts, two phrases of one image filed under
    two categories (as in MS-CXR) and some pairs with two boxes: 1162 pairs, each count intact
    (keying pairs on (image, phrase) alone would merge the two and give 1160)."""
    n_images = 60
    rels = [rel_path(k + 1, 50000000 + k, f"img{k:03d}") for k in range(n_images)]
    for rel in rels:
        save_image(tmp_path, rel, 40, 48)
    slots = [(cat, j) for cat, count in MSCXR_COUNTS.items() for j in range(count)]
    image_of = {slot: n % n_images for n, slot in enumerate(slots)}
    rows = []
    for cat, j in slots:
        k, phrase = image_of[(cat, j)], f"{cat.lower()} finding number {j}"
        if cat == "Consolidation" and j < 2:  # the same phrase of the same image as a Pneumonia pair
            k, phrase = image_of[("Pneumonia", j)], f"pneumonia finding number {j}"
        rows.append(row(f"img{k:03d}", rels[k], (2 + j % 5, 3, 10, 12), (40, 48), phrase=phrase, category=cat))
        if j % 7 == 0:  # a second box for the same pair
            rows.append(row(f"img{k:03d}", rels[k], (20, 20, 8, 8), (40, 48), phrase=phrase, category=cat))
    pairs, report = build_pairs(write_csv(tmp_path / CSV_NAME, rows), tmp_path, GEOM, 0.2, 0)
    assert len(pairs) == 1162 == report["n_pairs"]
    assert {c: v["pairs"] for c, v in report["per_category"].items()} == MSCXR_COUNTS
    assert pairs["pair_id"].is_unique
    assert len(pairs[["dicom_id", "phrase"]].drop_duplicates()) == 1160


# ----------------------------------------------------------------------- one film per dicom_id
def _two_films(root: Path) -> tuple[str, str, str]:
    """Three distinct films of patient 1 (different bright boxes)."""
    rels = [rel_path(1, 1, f"f{k}") for k in range(3)]
    for k, rel in enumerate(rels):
        save_image(root, rel, 64, 48, box=(5 + 15 * k, 5, 10, 10))
    return tuple(rels)


def test_one_dicom_id_with_two_paths_is_refused_naming_both_lines(tmp_path):
    a, b, _ = _two_films(tmp_path)
    rows = [
        row("img1", a, (10, 10, 20, 15), (64, 48)),
        row("img9", rel_path(9, 9, "other"), (10, 10, 20, 15), (64, 48)),
        row("img1", b, (10, 10, 20, 15), (64, 48), phrase="left effusion"),  # same id, another film
    ]
    save_image(tmp_path, rows[1]["path"], 64, 48)
    csv_path = write_csv(tmp_path / CSV_NAME, rows)
    with pytest.raises(DataError) as e:
        build_pairs(csv_path, tmp_path, GEOM, 0.0, 0, on_bad_row="error")
    msg = str(e.value)
    assert "line 4" in msg and "CSV line 2" in msg and a in msg and b in msg and "dicom_id img1" in msg
    out = tmp_path / "out"
    pairs = prepare_dataset(
        csv_path, tmp_path, GEOM, 0.0, 0, "skip", out / "p.parquet", out / "r.json", out / "i.npy", progress=False
    )
    assert list(pairs["image_path"][pairs["dicom_id"] == "img1"]) == [a]  # the film of its first row only
    images = np.load(out / "i.npy")
    k = int(np.flatnonzero(pairs["dicom_id"].to_numpy() == "img1")[0])
    with Image.open(tmp_path / a) as im:
        assert np.array_equal(images[k], GEOM.image_to_input(im))


def test_one_path_with_two_dicom_ids_is_refused(tmp_path):
    a, _, _ = _two_films(tmp_path)
    rows = [row("img1", a, (10, 10, 20, 15), (64, 48)), row("img2", a, (10, 10, 20, 15), (64, 48), phrase="x")]
    csv_path = write_csv(tmp_path / CSV_NAME, rows)
    with pytest.raises(DataError, match=r"line 3.*path .* is dicom_id img1 on CSV line 2 and img2 here"):
        build_pairs(csv_path, tmp_path, GEOM, 0.0, 0, on_bad_row="error")


def test_images_are_keyed_by_path_so_pairs_never_swap_films(tmp_path):
    """Pairs of different films sharing nothing but row order each get their own film."""
    rels = _two_films(tmp_path)
    rows = [row(f"img{k}", rel, (10, 10, 20, 15), (64, 48)) for k, rel in enumerate(rels)]
    csv_path = write_csv(tmp_path / CSV_NAME, rows[::-1])
    out = tmp_path / "out"
    pairs = prepare_dataset(
        csv_path, tmp_path, GEOM, 0.0, 0, "error", out / "p.parquet", out / "r.json", out / "i.npy", progress=False
    )
    images = np.load(out / "i.npy")
    for k, rel in enumerate(pairs["image_path"]):
        with Image.open(tmp_path / rel) as im:
            assert np.array_equal(images[k], GEOM.image_to_input(im))


def test_dicom_and_16bit_films_are_read_by_the_loader(tmp_path):
    pytest.importorskip("pydicom")
    from test_image_formats import film, rescale_8bit, write_dicom

    stored = np.rint(film(80, 3900, shape=(48, 64))).astype(np.uint16)
    rels = [rel_path(1, 1, "a").replace(".jpg", ".dcm"), rel_path(2, 2, "b").replace(".jpg", ".png")]
    rels.append(rel_path(3, 3, "c").replace(".jpg", ".png"))
    for rel in rels:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
    write_dicom(tmp_path / rels[0], stored, PixelSpacing=[0.2, 0.2])
    Image.fromarray(stored * 16).save(tmp_path / rels[1])
    Image.fromarray(rescale_8bit(stored)).save(tmp_path / rels[2])
    rows = [row(f"img{k}", rel, (10, 10, 20, 15), (64, 48)) for k, rel in enumerate(rels)]
    csv_path = write_csv(tmp_path / CSV_NAME, rows)
    out = tmp_path / "out"
    pairs = prepare_dataset(
        csv_path, tmp_path, GEOM, 0.0, 0, "error", out / "p.parquet", out / "r.json", out / "i.npy", progress=False
    )
    images = {d: im for d, im in zip(pairs["dicom_id"], np.load(out / "i.npy"))}
    for d in ("img0", "img1"):
        assert np.abs(images[d].astype(int) - images["img2"].astype(int)).max() <= 1
