"""``matex explain``, ``matex methods`` and ``matex check-config`` (override files merged onto the
default config, as Snakemake merges ``--configfile``), on a tiny demo checkpoint the test writes where
``./run.sh pipeline`` would."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from matex.cli import main
from matex.config import deep_update, load_config
from matex.models.loading import demo_model_cfg, load_model, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "img" / "example_chest.jpg"
TINY_DEMO = {
    "embed_dim": 32,
    "vision": {"layers": 3, "width": 32, "heads": 2, "patch_size": 32, "mlp_ratio": 2.0, "stem_channels": 0},
    "text": {"layers": 1, "width": 32, "heads": 2, "context_length": 16},
}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A folder laid out like a checkout after ``./run.sh pipeline``: config/config.yaml (with the tiny
    demo architecture) and results/synthetic/demo/model.pt."""
    root = tmp_path_factory.mktemp("project")
    cfg = deep_update(
        load_config(ROOT / "config" / "config.yaml"), {"results_dir": "results", "model": {"demo": TINY_DEMO}}
    )
    (root / "config").mkdir()
    (root / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    model = load_model("demo", demo=TINY_DEMO, seed=0)
    save_checkpoint(
        model, root / "results" / "synthetic" / "demo" / "model.pt", demo_model_cfg(TINY_DEMO, 224), {"seed": 0}
    )
    shutil.copy(EXAMPLE, root / "scan.jpg")
    return root


def test_explain_on_the_demo_checkpoint_writes_the_overlay(project, monkeypatch, capsys):
    monkeypatch.chdir(project)
    assert (
        main(
            [
                "explain",
                "scan.jpg",
                "focal consolidation in the left mid zone",
                "-o",
                "out.png",
                "--npy",
                "out.npy",
                "--box",
                "221",
                "143",
                "61",
                "44",
            ]
        )
        == 0
    )
    said = capsys.readouterr().out
    assert "wrote out.png (matex on demo" in said and "map maximum at" in said
    with Image.open(project / "out.png") as im:
        assert im.format == "PNG" and im.size == (448, 448)
        rgb = np.asarray(im.convert("RGB"))
    assert (rgb == (0, 220, 0)).all(axis=2).sum() > 100  # the box outline is drawn
    heat = np.load(project / "out.npy")
    assert heat.shape == (224, 224) and heat.dtype == np.float32 and 0 <= heat.min() and heat.max() <= 1
    assert heat.max() > heat.min()  # not a blank map


def test_components_are_drawn_side_by_side(project, monkeypatch, capsys):
    monkeypatch.chdir(project)
    assert main(["explain", "scan.jpg", "cardiomegaly", "--components", "-o", "parts.png"]) == 0
    said = capsys.readouterr().out
    names = said.split("components: ")[1].rstrip(")\n").split(", ")
    assert len(names) >= 4
    with Image.open(project / "parts.png") as im:
        assert im.width == 448 * (2 + len(names))  # input, fused map, each component


def test_other_methods_params_and_a_checkpoint_path(project, monkeypatch, capsys):
    monkeypatch.chdir(project)
    ckpt = str(project / "results" / "synthetic" / "demo" / "model.pt")
    assert (
        main(["explain", "scan.jpg", "left effusion", "--method", "gradcam", "--model", ckpt, "--param", "layer=-2"])
        == 0
    )
    assert (project / "scan_gradcam.png").is_file()
    assert main(["explain", "scan.jpg", "left effusion", "--param", "nope=1"]) == 1
    assert "attribution.params.matex" in capsys.readouterr().err


def test_missing_demo_model_says_how_to_get_one(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    shutil.copy(EXAMPLE, tmp_path / "scan.jpg")
    assert main(["explain", "scan.jpg", "cardiomegaly", "--config", str(ROOT / "config" / "config.yaml")]) == 1
    err = capsys.readouterr().err
    assert "no demo model at results/synthetic/demo/model.pt" in err and "./run.sh pipeline" in err
    assert main(["explain", "missing.jpg", "cardiomegaly"]) == 1
    assert "image file not found: missing.jpg" in capsys.readouterr().err
    assert main(["explain", "scan.jpg", "cardiomegaly", "--model", "nothere.pt"]) == 1
    assert "checkpoint file not found: nothere.pt" in capsys.readouterr().err


def test_methods_lists_every_method(capsys):
    from matex.attribution import available_methods

    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert all(any(line.startswith(f"{m} ") for line in out.splitlines()) for m in available_methods())
    assert "parameters: alpha=0.5" in out


def test_check_config_merges_an_override_file_like_snakemake(tmp_path, capsys):
    override = tmp_path / "mine.yaml"
    override.write_text("attribution:\n  batch_size: 8\nroar:\n  seeds: [0, 1, 2]\n")
    assert main(["check-config", str(override)]) == 0
    assert "valid (merged onto" in capsys.readouterr().out
    assert main(["check-config", "--no-base", str(override)]) == 1  # alone it lacks required keys
    assert "'dataset' is a required property" in capsys.readouterr().err
    override.write_text("attribution:\n  batch_sise: 8\n")
    assert main(["check-config", str(override)]) == 1
    assert "attribution" in (err := capsys.readouterr().err) and "batch_sise" in err
    override.write_text("attribution:\n  batch_size: three\n")
    assert main(["check-config", str(override)]) == 1
    assert "batch_size" in capsys.readouterr().err


def test_console_script_runs(project):
    """The installed entry point (``python -m matex.cli``) end to end, as a user types it."""
    res = subprocess.run(
        [sys.executable, "-m", "matex.cli", "explain", "scan.jpg", "left apical pneumothorax", "-o", "cli.png"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
    )
    assert res.returncode == 0, res.stderr
    assert (project / "cli.png").is_file() and "wrote cli.png" in res.stdout
