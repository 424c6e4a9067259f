"""Project-level checks: environment.yml mirrors pyproject.toml, configs validate, bad configs are named."""

import re
import tomllib
from pathlib import Path

import pytest
import yaml

from matex.config import deep_update, load_config, validate_config
from matex.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _names(reqs):
    return {re.split(r"[<>=!~ \[]", r, maxsplit=1)[0].lower().replace("_", "-"): r.replace(" ", "") for r in reqs}


def test_environment_yml_matches_pyproject():
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = _names(py["dependencies"] + py["optional-dependencies"]["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_block = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    have = _names([r for r in pip_block if not r.startswith("-e")])
    assert have == wanted


@pytest.mark.parametrize("name", ["config.yaml", "mscxr.yaml"])
def test_shipped_configs_validate(name):
    cfg = load_config(ROOT / "config" / name)
    assert cfg["input"]["size"] == 224


def test_unknown_key_is_named():
    cfg = load_config(ROOT / "config" / "config.yaml")
    bad = deep_update(cfg, {"attribution": {"batchsize": 3}})
    with pytest.raises(ConfigError, match=r"attribution.*batchsize"):
        validate_config(bad)


def test_wrong_type_is_named():
    cfg = load_config(ROOT / "config" / "config.yaml")
    bad = deep_update(cfg, {"input": {"size": "big"}})
    with pytest.raises(ConfigError, match=r"input\.size"):
        validate_config(bad)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")
