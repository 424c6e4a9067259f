"""The package as users get it from an index: a built wheel carries every data file it reads, and a
non-editable install of it in a fresh virtual environment validates a config and explains an image."""

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _package_data_files() -> set[str]:
    """Every non-Python file under matex/ that the package reads (YAML/JSON), as wheel paths."""
    return {
        str(p.relative_to(ROOT))
        for p in (ROOT / "matex").rglob("*")
        if p.suffix in (".yaml", ".json") and "__pycache__" not in p.parts
    }


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    [whl] = out.glob("matex-*.whl")
    return whl


@pytest.mark.slow
def test_wheel_carries_every_data_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = _package_data_files()
    assert expected and {"matex/schema.yaml", "matex/methods.yaml", "matex/priors/regions.yaml"} <= expected
    assert expected - names == set(), f"missing from the wheel: {sorted(expected - names)}"


@pytest.mark.slow
def test_wheel_installs_and_runs_in_a_fresh_environment(wheel, tmp_path):
    """A fresh venv with the wheel installed non-editable; its third-party dependencies are borrowed from
    the test environment's site-packages through a .pth path entry (no network, no 5 GB reinstall), which
    does not activate the editable install of the checkout."""
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # never the checkout
    env = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=300)
    py = env / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site / "_borrowed_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    res = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
        env=clean,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    work = tmp_path / "elsewhere"  # not the checkout: the import must come from the installed wheel
    work.mkdir()
    where = subprocess.run(
        [str(py), "-c", "import matex; print(matex.__file__)"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
        env=clean,
    )
    assert where.returncode == 0 and str(site) in where.stdout, where.stdout + where.stderr
    check = subprocess.run(
        [str(py), "-m", "matex.cli", "check-config", str(ROOT / "config" / "mscxr.yaml")],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
        env=clean,
    )
    assert check.returncode == 0 and "valid" in check.stdout, check.stdout + check.stderr
    script = (
        "import numpy as np, matex\n"
        "from matex.data.transforms import InputGeometry\n"
        "demo = {'embed_dim': 32, 'vision': {'layers': 2, 'width': 32, 'heads': 2, 'patch_size': 32},\n"
        "        'text': {'layers': 1, 'width': 32, 'heads': 2, 'context_length': 16}}\n"
        "model = matex.load_model('demo', demo=demo, geometry=InputGeometry(224, 'center_crop'), seed=0)\n"
        "img = np.random.default_rng(0).integers(0, 255, (1, 224, 224), dtype=np.uint8)\n"
        "out = matex.explain(model, img, ['left lower lobe consolidation'], method='matex')\n"
        "assert out.image.shape == (1, 224, 224), out.image.shape\n"
        "print('explained', float(out.image.max()))\n"
    )
    run = subprocess.run([str(py), "-c", script], cwd=work, capture_output=True, text=True, timeout=600, env=clean)
    assert run.returncode == 0 and "explained" in run.stdout, run.stdout + run.stderr[-3000:]
