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
    names = said.splitlines()[0].split("components: ")[1].rstrip(")").split(", ")
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


def test_missing_demo_model_says_where_it_looked(tmp_path, monkeypatch, capsys):
    proj = tmp_path / "proj"
    (proj / "config").mkdir(parents=True)
    shutil.copy(ROOT / "config" / "config.yaml", proj / "config" / "config.yaml")
    monkeypatch.chdir(tmp_path)
    shutil.copy(EXAMPLE, tmp_path / "scan.jpg")
    assert main(["explain", "scan.jpg", "cardiomegaly", "--config", "proj/config/config.yaml"]) == 1
    err = capsys.readouterr().err
    assert f"no demo model: looked at {proj / 'results' / 'synthetic' / 'demo' / 'model.pt'}" in err
    assert "./run.sh pipeline" in err
    assert main(["explain", "missing.jpg", "cardiomegaly"]) == 1
    assert "image file not found: missing.jpg" in capsys.readouterr().err
    assert main(["explain", "scan.jpg", "cardiomegaly", "--model", "nothere.pt"]) == 1
    assert "checkpoint file not found: nothere.pt" in capsys.readouterr().err


def test_demo_model_is_found_from_another_folder_through_its_config(project, tmp_path, monkeypatch, capsys):
    """results_dir is read from the config's checkout, not from the working directory."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    shutil.copy(EXAMPLE, elsewhere / "scan.jpg")
    config = str(project / "config" / "config.yaml")
    assert main(["explain", "scan.jpg", "cardiomegaly", "--method", "gradcam", "--config", config, "-o", "m.png"]) == 0
    assert (elsewhere / "m.png").is_file() and "wrote m.png" in capsys.readouterr().out


def test_typos_are_caught_before_the_model_loads_with_a_suggestion(project, monkeypatch, capsys):
    import matex.cli.explain as ce

    def no_model(*a, **k):
        raise AssertionError("the model was loaded before the request was validated")

    monkeypatch.chdir(project)
    monkeypatch.setattr(ce, "load_cli_model", no_model)
    assert main(["explain", "scan.jpg", "cardiomegaly", "--method", "gradcma"]) == 1
    assert "unknown attribution method 'gradcma' (did you mean `gradcam`?)" in capsys.readouterr().err
    assert main(["explain", "scan.jpg", "cardiomegaly", "--param", "alpah=0.6"]) == 1
    assert "attribution.params.matex.alpah (did you mean `alpha`?)" in capsys.readouterr().err
    assert main(["explain", "scan.jpg", "cardiomegaly", "--method", "gradcam", "--param", "layer=top"]) == 1
    assert "attribution.params.gradcam.layer: expected int" in capsys.readouterr().err
    assert main(["explain", "scan.jpg", "   "]) == 1
    assert "the phrase is empty" in capsys.readouterr().err


def test_methods_and_help_do_not_import_torch():
    code = (
        "import sys, contextlib, io\n"
        "import matex.cli\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    assert matex.cli.main(['methods']) == 0\n"
        "    try:\n"
        "        matex.cli.main(['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "assert 'gradcam' in out.getvalue() and 'usage: matex' in out.getvalue()\n"
        "print(sorted(m for m in ('torch', 'open_clip', 'torchvision') if m in sys.modules))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_dicom_and_16bit_round_trips_through_the_cli(project, monkeypatch, capsys):
    """A 16-bit PNG and a DICOM (written here with pydicom) of the same film give the map of the
    film's 8-bit export; the DICOM's pixel spacing is reported."""
    pytest.importorskip("pydicom")
    from test_image_formats import film, rescale_8bit, write_dicom

    monkeypatch.chdir(project)
    stored = np.rint(film(50, 4000, shape=(260, 240))).astype(np.uint16)
    Image.fromarray(stored * 16).save("film16.png")  # 12-bit values in the high bits of 16
    Image.fromarray(rescale_8bit(stored)).save("film8.png")
    write_dicom(project / "film.dcm", stored, PixelSpacing=[0.143, 0.143])
    maps = {}
    for name in ("film8.png", "film16.png", "film.dcm"):
        args = ["explain", name, "right lower zone opacity", "--method", "gradcam", "-o", f"{name}.png"]
        assert main([*args, "--npy", f"{name}.npy"]) == 0
        maps[name] = np.load(f"{name}.npy")
    said = capsys.readouterr().out
    assert "read film.dcm: DICOM 240x260, intensities: minmax" in said and "pixel spacing 0.143 x 0.143 mm" in said
    assert "read film16.png: PNG 240x260, intensities: minmax" in said
    assert np.abs(maps["film16.png"] - maps["film8.png"]).max() < 1e-3
    assert np.abs(maps["film.dcm"] - maps["film8.png"]).max() < 1e-3


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


def test_a_reader_that_stops_early_gets_no_traceback():
    """`matex methods | head -1`: the pipe closes while matex still writes; it exits quietly (141,
    as a shell reports a closed pipe), without a BrokenPipeError traceback."""
    import os

    proc = subprocess.Popen(
        [sys.executable, "-m", "matex.cli", "methods"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout.read(20)  # the first bytes of the list
    proc.stdout.close()  # the reader goes away, as head does
    _, err = proc.communicate(timeout=60)
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err.decode()
    assert proc.returncode == 141
