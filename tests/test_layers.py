"""The package's layering (pyproject.toml, [tool.importlinter]) holds, and breaking it fails.

``lint-imports`` reads every import of ``matex`` (module-level and function-level alike) and checks that
no module imports from a layer above its own: data -> priors -> attribution -> models -> maps -> metrics -> roar
-> figures -> pipeline, with the API and the command line on top. A second test plants upward imports
in a copy of the package and shows that the same command then fails, naming the import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess:
    if not LINT_IMPORTS.is_file():
        pytest.fail(f"{LINT_IMPORTS} not found: install the dev extras (pip install -e '.[dev]')")
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_layer_contract_is_kept():
    res = _lint_imports(ROOT, ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 broken" in res.stdout


def _copy_package(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "matex", tmp_path / "matex", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


@pytest.mark.parametrize(
    ("module", "planted", "reported"),
    [
        # a data module reaching up to the figures (module level)
        (
            "data/transforms.py",
            "from ..figures import style  # planted\n",
            "matex.data.transforms -> matex.figures.style",
        ),
        # the circle this contract replaced: the explain command calling back into the parser (inside a function)
        (
            "cli/explain.py",
            "def _planted():\n    from .parser import default_config_path\n\n    return default_config_path\n",
            "matex.cli.explain -> matex.cli.parser",
        ),
        # the other old circle: the registry importing the catalogue generator (inside a function)
        (
            "attribution/registry.py",
            "def _planted():\n    from ..docgen.methods_catalog import generate_catalog\n\n    return generate_catalog\n",
            "matex.attribution.registry -> matex.docgen.methods_catalog",
        ),
        # checkpoint reading calling back into model loading (the second contract)
        (
            "models/checkpoints.py",
            "def _planted():\n    from .loading import load_model\n\n    return load_model\n",
            "matex.models.checkpoints -> matex.models.loading",
        ),
    ],
)
def test_a_planted_upward_import_breaks_the_contract(tmp_path, module, planted, reported):
    root = _copy_package(tmp_path)
    target = root / "matex" / module
    target.write_text(target.read_text() + "\n\n" + planted)
    res = _lint_imports(root, root)
    assert res.returncode != 0, res.stdout
    assert "BROKEN" in res.stdout
    assert reported in res.stdout, res.stdout
    # the untouched copy is kept: what broke it is the planted line, not the copying
    target.write_text(target.read_text().replace(planted, ""))
    assert _lint_imports(root, root).returncode == 0
