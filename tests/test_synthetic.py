"""The synthetic MS-CXR stand-in: file contract, determinism, boxes on the drawn findings,
radiological laterality, and MS-CXR-like category frequencies."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from matex.data.synthetic import (
    CATEGORY_COUNTS,
    CSV_COLUMNS,
    SyntheticSpec,
    generate_synthetic,
    render_case,
    sample_findings,
)
from matex.errors import ConfigError

SMALL = {"n_images": 40, "width": (96, 128), "height": (112, 144), "progress": False}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("syn")
    csv = generate_synthetic(out, seed=3, **SMALL)
    return out, csv, pd.read_csv(csv)


def test_csv_has_mscxr_columns_in_order_and_mimic_layout(dataset):
    out, csv, df = dataset
    assert csv == out / "MS_CXR_Local_Alignment_v1.0.0.csv"
    assert tuple(df.columns) == CSV_COLUMNS
    assert df["dicom_id"].nunique() == 40
    pattern = re.compile(r"^files/p1\d/p1\d{7}/s5\d{7}/[0-9a-f]{8}(-[0-9a-f]{8}){4}\.jpg$")
    for _, row in df.drop_duplicates("dicom_id").iterrows():
        assert pattern.match(row["path"]), row["path"]
        assert row["path"].split("/")[2][:3] == row["path"].split("/")[1]
        assert row["path"].endswith(f"/{row['dicom_id']}.jpg")
        with Image.open(out / row["path"]) as im:
            assert im.mode == "L"
            assert im.size == (row["image_width"], row["image_height"])
    patients = df.drop_duplicates("dicom_id")["path"].str.split("/").str[2]
    assert patients.nunique() < 40  # several images per patient: a patient split matters
    assert set(df["category_name"]) <= set(CATEGORY_COUNTS)
    assert df["label_text"].map(lambda t: isinstance(t, str) and t.strip() != "" and t.isascii()).all()
    sizes = df.drop_duplicates("dicom_id")
    assert sizes["image_width"].between(96, 128).all() and sizes["image_height"].between(112, 144).all()
    assert sizes["image_width"].nunique() > 1


def test_boxes_lie_within_the_image(dataset):
    _, _, df = dataset
    assert (df[["x", "y"]] >= 0).all().all()
    assert (df[["w", "h"]] >= 1).all().all()
    assert (df["x"] + df["w"] <= df["image_width"]).all()
    assert (df["y"] + df["h"] <= df["image_height"]).all()


def test_truth_table_matches_the_csv(dataset):
    out, _, df = dataset
    truth = pd.read_parquet(out / "synthetic_truth.parquet")
    assert set(truth["side"]) <= {"right", "left", "bilateral", "none"}
    boxes_per_finding = df.groupby(["dicom_id", "label_text"]).size()
    for _, t in truth.iterrows():
        assert boxes_per_finding[(t["dicom_id"], t["label_text"])] >= t["n_boxes"] >= 1
    two_boxes = truth[truth["n_boxes"] == 2]
    assert (two_boxes["side"] == "bilateral").all()


def test_same_seed_gives_identical_bytes(dataset, tmp_path):
    out, csv, df = dataset
    csv2 = generate_synthetic(tmp_path, seed=3, **SMALL)
    assert csv.read_bytes() == csv2.read_bytes()
    rel = df["path"].iloc[0]
    assert (out / rel).read_bytes() == (tmp_path / rel).read_bytes()
    other = pd.read_csv(generate_synthetic(tmp_path / "other", seed=4, **{**SMALL, "n_images": 5}))
    assert not set(other["dicom_id"]) & set(df["dicom_id"])


def test_parallel_generation_writes_the_same_bytes(dataset, tmp_path):
    """workers > 1 (the pipeline's make_synthetic threads) renders in processes, same files."""
    out, csv, df = dataset
    generate_synthetic(tmp_path, seed=3, workers=2, **SMALL)
    written = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert written == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert all((out / rel).read_bytes() == (tmp_path / rel).read_bytes() for rel in written)


def _cases_with(category: str, spec: SyntheticSpec, n: int, seed: int = 11) -> list[int]:
    hits, i = [], 0
    while len(hits) < n and i < 2000:
        if any(f.category_name == category for f in sample_findings(seed, i, spec)):
            hits.append(i)
        i += 1
    return hits


@pytest.mark.parametrize("category", sorted(CATEGORY_COUNTS))
def test_boxes_lie_on_the_drawn_findings(category):
    """Render the same case with and without its findings: the change is concentrated in the boxes."""
    spec = SyntheticSpec(second_finding_fraction=0.0)
    for index in _cases_with(category, spec, 2):
        with_f, findings = render_case(11, index, spec)
        without, _ = render_case(11, index, spec, with_findings=False)
        diff = np.abs(with_f.astype(np.float32) - without.astype(np.float32))
        inside = np.zeros(diff.shape, dtype=bool)
        (finding,) = findings
        assert finding.boxes, (category, index)
        for x, y, w, h in finding.boxes:
            inside[y : y + h, x : x + w] = True
            assert diff[y : y + h, x : x + w].mean() > 4.0, (category, index)  # grey levels: visible
        assert inside.mean() < 0.35  # a box, not the whole image
        assert diff[inside].mean() > 8 * diff[~inside].mean(), (category, index)


def test_laterality_follows_the_radiological_convention():
    """'right' (patient) findings lie in the image's LEFT half, 'left' ones in the right half."""
    spec = SyntheticSpec(second_finding_fraction=0.0, no_location_fraction=0.0)
    checked = Counter()
    for index in range(60):
        image, (finding,) = render_case(5, index, spec)
        words = set(re.findall(r"[a-z]+", finding.label_text.lower()))
        if finding.category_name == "Cardiomegaly":
            (box,) = finding.boxes
            assert box[0] + box[2] / 2 > image.shape[1] / 2  # the heart bulges to the image right
            continue
        for x, _y, w, _h in finding.boxes:
            centre = (x + w / 2) / image.shape[1]
            if "right" in words and "left" not in words:
                assert centre < 0.5, finding
                checked["right"] += 1
            elif "left" in words and "right" not in words:
                assert centre > 0.5, finding
                checked["left"] += 1
    assert checked["right"] >= 5 and checked["left"] >= 5


def test_heart_is_denser_on_the_image_right():
    """Without findings, the lower chest is brighter right of the midline (heart) than left of it."""
    spec = SyntheticSpec()
    for index in range(5):
        image, _ = render_case(2, index, spec, with_findings=False)
        h, w = image.shape
        band = image[int(0.5 * h) : int(0.62 * h)].astype(float)
        left_half = band[:, int(0.15 * w) : int(0.45 * w)].mean()
        right_half = band[:, int(0.55 * w) : int(0.85 * w)].mean()
        assert right_half > left_half + 10


def test_category_frequencies_follow_mscxr():
    spec = SyntheticSpec(second_finding_fraction=0.0)
    counts = Counter(sample_findings(0, i, spec)[0].category_name for i in range(3000))
    total = sum(CATEGORY_COUNTS.values())
    for category, n in CATEGORY_COUNTS.items():
        expected = 3000 * n / total
        assert abs(counts[category] - expected) < 4 * np.sqrt(expected) + 5, (category, counts[category], expected)


def test_location_and_second_finding_fractions():
    spec = SyntheticSpec(no_location_fraction=0.3, second_finding_fraction=0.2)
    cases = [sample_findings(1, i, spec) for i in range(1000)]
    second = np.mean([len(c) == 2 for c in cases])
    unnamed = np.mean([f.location_named is False for c in cases for f in c])
    assert 0.16 < second < 0.24 and 0.25 < unnamed < 0.35
    assert all(c[0].category_name != c[1].category_name for c in cases if len(c) == 2)
    for c in cases:
        for f in c:
            if not f.location_named:
                assert not re.search(
                    r"\b(right|left|bilateral|bibasilar|apical|apex|base|basilar|lobe)\b", f.label_text.lower()
                ), f.label_text


def test_bad_settings_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="width"):
        generate_synthetic(tmp_path, n_images=2, width=(200, 100), progress=False)
    with pytest.raises(ConfigError, match="no_location_fraction"):
        generate_synthetic(tmp_path, n_images=2, no_location_fraction=1.5, progress=False)


def test_generator_data_files_are_declared_for_the_wheel():
    """The generator's data files (its vocabulary) must match a package-data pattern, or a built
    wheel would lack them."""
    import fnmatch
    import tomllib
    from pathlib import Path

    import matex

    root = Path(matex.__file__).parent
    patterns = tomllib.loads((root.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "matex"
    ]
    data_files = [
        p.relative_to(root).as_posix()
        for p in (root / "data" / "synthetic").rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    ]
    assert "data/synthetic/phrases.yaml" in data_files
    missing = [f for f in data_files if not any(fnmatch.fnmatch(f, pat) for pat in patterns)]
    assert not missing, f"not in [tool.setuptools.package-data]: {missing}"
