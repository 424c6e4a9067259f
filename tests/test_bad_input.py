"""Bad input through the Python API and the pipeline steps: each gets a clear error naming the
file, image, pair or config key (never a traceback from inside torch), and leaves no artifact.

Bad CSV rows (missing/truncated/corrupt JPGs, boxes outside or partly outside the image, zero-area
boxes, empty phrases, missing columns) are covered row by row in test_mscxr.py; bad configs through
``load_config`` in test_project.py. This file covers the rest of the list in the reliability issue."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from matex.attribution import explain
from matex.config import deep_update, load_config
from matex.errors import DataError, MapError
from matex.io import read_npz, write_npz
from matex.models.loading import demo_model_cfg, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model(make_tiny_model):
    return make_tiny_model(layers=1)  # tests/conftest.py: the tiny demo model, one vision layer


@pytest.fixture(scope="module")
def image_u8():
    return np.random.default_rng(0).integers(0, 256, (2, 224, 224), dtype=np.uint8)


# ------------------------------------------------------------------------------- API: images
def test_missing_image_file_is_named(model, tmp_path):
    with pytest.raises(DataError, match=r"image 0: file not found.*nope\.jpg"):
        explain(model, [tmp_path / "nope.jpg"], ["left effusion"], "matex")


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_image_file_is_named(model, tmp_path, damage):
    good = tmp_path / "good.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 260), dtype=np.uint8)).save(good, quality=90)
    bad = tmp_path / "bad.jpg"
    data = good.read_bytes()
    bad.write_bytes(data[: len(data) // 3] if damage == "truncated" else b"\xff\xd8\xff\xe0 not a jpeg" * 8)
    with pytest.raises(DataError, match=r"image 1: cannot be decoded.*bad\.jpg"):
        explain(model, [good, bad], ["left effusion", "cardiomegaly"], "matex")
    out = explain(model, [good], ["left effusion"], "matex")  # the good file alone works, any size
    assert out.image.shape == (1, 224, 224)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_image_tensor_is_refused_naming_the_image(model, value):
    x = torch.zeros(3, 3, 224, 224)
    x[2, 0, 5, 5] = value
    with pytest.raises(DataError, match=r"images \[2\] contain NaN or Inf"):
        explain(model, x, ["a", "b", "c"], "gradcam")


@pytest.mark.parametrize("shape", [(2, 3, 100, 100), (2, 1, 224, 224), (3, 224, 224)])
def test_wrong_tensor_shape_names_the_expected_input(model, shape):
    with pytest.raises(DataError, match=r"\(B, 3, 224, 224\).*input.size 224"):
        explain(model, torch.zeros(shape), ["a", "b"], "matex")


def test_wrong_array_and_object_types(model):
    with pytest.raises(DataError, match="uint8 \\(B, 224, 224\\)"):
        explain(model, np.zeros((2, 100, 100), np.uint8), ["a", "b"], "matex")
    with pytest.raises(DataError, match="image 0 is a int"):
        explain(model, [3], ["a"], "matex")
    with pytest.raises(DataError, match="no images"):
        explain(model, [], [], "matex")


# -------------------------------------------------------------------------------- API: texts
@pytest.mark.parametrize(
    "texts, match",
    [
        (["left effusion", "  "], r"texts \[1\] are empty"),
        (["", ""], r"texts \[0, 1\] are empty"),
        ("left effusion", "list of strings"),
        (["ok", None], "list of strings"),
        (42, "list of strings"),  # not a sequence at all: a DataError, not a TypeError from iterating it
    ],
)
def test_bad_texts_are_named(model, image_u8, texts, match):
    with pytest.raises(DataError, match=match):
        explain(model, image_u8, texts, "matex")


@pytest.mark.parametrize("method", ["matex", "chefer", "saliency"])
def test_very_long_and_non_ascii_phrases_give_finite_maps(model, image_u8, method):
    long = "small left basal effusion with adjacent atelectasis " * 200  # far beyond the context length
    odd = "Épanchement pleural gauche — ∅ 肺 opacité « basale »"
    out = explain(model, image_u8, [long, odd], method)
    assert out.image.shape == (2, 224, 224) and torch.isfinite(out.image).all()
    if out.text is not None:
        assert all(np.isfinite(t).all() and len(t) <= 16 for t in out.text)


# --------------------------------------------------------------------------- NaN/Inf and damaged maps
def _run_evaluate_step(tmp_path, model_ckpt, cfg, npz):
    """Call the ``evaluate`` pipeline step as Snakemake would."""
    from matex.pipeline import run_step

    pairs_path = tmp_path / "pairs.parquet"
    out = tmp_path / "metrics" / "m.parquet"
    smk = SimpleNamespace(
        rule="evaluate",
        config=cfg,
        log=[str(tmp_path / "evaluate.log")],
        threads=1,
        params=SimpleNamespace(),
        wildcards=SimpleNamespace(method="matex"),
        input=SimpleNamespace(
            pairs=str(pairs_path),
            images=str(tmp_path / "images.npy"),
            npz=str(npz),
            runtime=str(tmp_path / "runtime.parquet"),
            checkpoint=str(model_ckpt),
        ),
        output=SimpleNamespace(metrics=str(out)),
    )
    run_step(smk)
    return out


@pytest.fixture
def step_env(tmp_path, model, image_u8, make_tiny_demo):
    demo = make_tiny_demo(layers=1)
    cfg = deep_update(
        load_config(ROOT / "config" / "config.yaml"), {"results_dir": str(tmp_path), "model": {"demo": demo}}
    )
    ckpt = tmp_path / "synthetic" / "demo" / "model.pt"
    save_checkpoint(model, ckpt, demo_model_cfg(demo, 224), {"seed": 0})
    pairs = pd.DataFrame(
        {
            "pair_id": ["p0", "p1"],
            "phrase": ["left effusion", "cardiomegaly"],
            "category": ["Pleural Effusion", "Cardiomegaly"],
            "split": ["val", "val"],
            "boxes": [[[10.0, 10.0, 60.0, 60.0]], [[100.0, 100.0, 180.0, 200.0]]],
        }
    )
    pairs.to_parquet(tmp_path / "pairs.parquet")
    np.save(tmp_path / "images.npy", image_u8)
    pd.DataFrame({"pair_id": ["p0", "p1"], "runtime_s": [0.1, 0.1]}).to_parquet(tmp_path / "runtime.parquet")
    return cfg, ckpt


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_cached_map_names_file_and_pair_and_writes_nothing(tmp_path, step_env, value):
    cfg, ckpt = step_env
    maps = {"p0": np.full((224, 224), 0.5, np.float32), "p1": np.full((224, 224), 0.5, np.float32)}
    maps["p1"][3, 4] = value
    npz = tmp_path / "maps" / "matex.npz"
    write_npz(npz, maps, {"config_hash": "x"})
    with pytest.raises(MapError, match=r"matex\.npz: map of pair p1 has 1 NaN/Inf values"):
        _run_evaluate_step(tmp_path, ckpt, cfg, npz)
    assert not (tmp_path / "metrics").exists() or list((tmp_path / "metrics").iterdir()) == []
    # the rule's own log (where Snakemake points) holds the error message and its traceback
    logged = (tmp_path / "evaluate.log").read_text()
    assert "step evaluate failed: MapError" in logged and "matex.npz: map of pair p1" in logged
    assert "Traceback (most recent call last)" in logged


def test_wrong_shape_cached_map_is_named(tmp_path, step_env):
    cfg, ckpt = step_env
    npz = tmp_path / "maps" / "matex.npz"
    write_npz(npz, {"p0": np.zeros((7, 7), np.float32)}, {})
    with pytest.raises(MapError, match=r"map of pair p0 has shape \(7, 7\), expected \(224, 224\)"):
        _run_evaluate_step(tmp_path, ckpt, cfg, npz)


def test_good_cached_maps_evaluate(tmp_path, step_env):
    cfg, ckpt = step_env
    npz = tmp_path / "maps" / "matex.npz"
    write_npz(npz, {p: np.random.default_rng(0).random((224, 224)).astype(np.float32) for p in ("p0", "p1")}, {})
    out = _run_evaluate_step(tmp_path, ckpt, cfg, npz)
    assert pd.read_parquet(out)["pair_id"].tolist() == ["p0", "p1"]


@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_damaged_or_missing_npz_is_named(tmp_path, damage):
    path = tmp_path / "maps.npz"
    write_npz(path, {"p0": np.zeros((4, 4), np.float32)}, {"config_hash": "x"})
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:40])
    else:
        path.unlink()
    with pytest.raises(MapError, match="maps.npz"):
        read_npz(path)


# -------------------------------------------------------------------------------- bad configs
@pytest.mark.parametrize(
    "override, words",
    [
        ({"attribution": {"batch_sise": 8}}, ["batch_sise"]),
        ({"roar": {"epochs": "three"}}, ["epochs", "three"]),
        ({"colour": "red"}, ["colour"]),
    ],
)
def test_snakemake_refuses_a_bad_config_naming_the_key(tmp_path, override, words):
    cfg = deep_update(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()), override)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--configfile", str(path), "--cores", "1", "-d", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert all(w in out for w in words), out[-2000:]
    assert not (tmp_path / "results").exists()
