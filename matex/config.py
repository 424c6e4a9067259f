"""Load and validate a pipeline config; derive the hashes that artifacts carry.

The schema lives in ``matex/schema.yaml`` (``config/schema.yaml`` links to it); Snakemake checks it
with ``validate()`` and Python users with :func:`load_config`, so both see the same rules.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping

import yaml

from .errors import ConfigError
from .io import config_hash

SCHEMA_PATH = Path(__file__).with_name("schema.yaml")


def validate_config(cfg: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` naming the offending key when ``cfg`` breaks the schema."""
    import jsonschema

    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for e in errors:
            key = ".".join(str(p) for p in e.absolute_path) or "<top level>"
            lines.append(f"  config key {key}: {e.message}")
        raise ConfigError("invalid config:\n" + "\n".join(lines))


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read a YAML config, apply nested ``overrides``, validate, return a plain dict."""
    path = Path(path)
    try:
        cfg = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if overrides:
        cfg = deep_update(cfg, overrides)
    validate_config(cfg)
    return cfg


def deep_update(base: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for k, v in new.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_update(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def section_hash(cfg: Mapping[str, Any], *keys: str) -> str:
    """Hash of the named top-level config sections plus the seed (what made an artifact)."""
    return config_hash({"seed": cfg.get("seed")}, *[{k: cfg.get(k)} for k in keys])


def dataset_dir(cfg: Mapping[str, Any]) -> Path:
    return Path(cfg["results_dir"]) / cfg["dataset"]


def model_dir(cfg: Mapping[str, Any]) -> Path:
    return dataset_dir(cfg) / cfg["model"]["name"]
