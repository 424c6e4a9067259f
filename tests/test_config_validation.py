"""Fail early: method names and method parameters are checked against the registry's catalogue by
``matex check-config`` and at Snakemake's DAG build, with one line naming the key path."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from matex.catalog import CATALOG_PATH, load_catalog, method_problems
from matex.cli import main as cli_main
from matex.config import deep_update, load_config
from matex.docgen.methods_catalog import generate_catalog
from matex.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]

BAD = {
    "unknown method": (
        {"attribution": {"methods": ["matex", "gradcam_pp"]}},
        r"attribution\.methods\[1\]: unknown attribution method 'gradcam_pp'",
    ),
    "misspelt parameter": (
        {"attribution": {"params": {"matex": {"alpah": 0.5}}}},
        r"attribution\.params\.matex\.alpah: unknown parameter of 'matex'",
    ),
    "wrong type": (
        {"attribution": {"params": {"matex": {"alpha": "abc"}}}},
        r"attribution\.params\.matex\.alpha: expected float, got 'abc'",
    ),
    "unknown method in sanity list": (
        {"evaluation": {"sanity": {"methods": ["chefr"]}}},
        r"evaluation\.sanity\.methods\[0\]: unknown attribution method 'chefr'",
    ),
}


def test_catalogue_matches_the_registry():
    """matex/methods.yaml is generated from the methods' signatures: regenerate it after adding a method
    or changing a parameter (python -m matex.docgen.methods_catalog)."""
    assert load_catalog() == yaml.safe_load(yaml.safe_dump(generate_catalog())), (
        f"{CATALOG_PATH} is out of date: run python -m matex.docgen.methods_catalog"
    )


def test_shipped_configs_are_valid():
    for name in ("config.yaml", "mscxr.yaml"):
        assert method_problems(load_config(ROOT / "config" / name)) == []


@pytest.mark.parametrize("case", sorted(BAD))
def test_check_config_names_the_bad_key(tmp_path, capsys, case):
    overlay, message = BAD[case]
    overlay_path = tmp_path / "bad.yaml"  # an overlay, merged onto the default config
    overlay_path.write_text(yaml.safe_dump(overlay))
    with pytest.raises(ConfigError, match=message):
        load_config(overlay_path, base=ROOT / "config" / "config.yaml")
    full = tmp_path / "full.yaml"
    full.write_text(yaml.safe_dump(deep_update(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()), overlay)))
    assert cli_main(["check-config", str(full)]) == 1
    err = capsys.readouterr().err
    assert re.search(message, err), err


@pytest.mark.parametrize("case", ["unknown method", "wrong type"])
def test_snakemake_dry_run_fails_at_dag_build(tmp_path, case):
    overlay, message = BAD[case]
    cfg = tmp_path / "overlay.yaml"
    cfg.write_text(yaml.safe_dump({**overlay, "results_dir": str(tmp_path / "results")}))
    res = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", str(cfg)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode != 0
    assert re.search(message, res.stdout + res.stderr), res.stderr[-2000:]


def test_config_readme_is_current():
    """config/README.md documents every key; regenerate it with python -m matex.docgen.config_doc."""
    from matex.docgen.config_doc import render

    assert (ROOT / "config" / "README.md").read_text() == render(ROOT), (
        "config/README.md is out of date: run python -m matex.docgen.config_doc"
    )
