"""Load and validate a pipeline config; derive the hashes that artifacts carry.

The schema lives in ``matex/schema.yaml`` (shipped in the wheel; ``workflow/schemas/config.schema.yaml``
links to it); Snakemake checks it with ``validate()`` and Python users with :func:`load_config`, so
both see the same rules. :func:`validate_config` also checks the attribution methods and their
parameters against the method registry (names, types), which a static schema cannot know.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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
    from .catalog import method_problems

    problems = method_problems(cfg)
    if problems:
        raise ConfigError("invalid config:\n" + "\n".join(f"  {p}" for p in problems))


def default_config_for(path: str | Path) -> Path | None:
    """The default ``config/config.yaml`` an overlay file is merged onto: the nearest one found in
    the overlay's folder or its parents (``config/mscxr.yaml`` -> ``config/config.yaml``,
    ``.test/config/config.yaml`` -> ``config/config.yaml``), or None."""
    path = Path(path).resolve()
    for folder in path.parents:
        candidate = folder / "config" / "config.yaml"
        if candidate.is_file() and candidate.resolve() != path:
            return candidate
    return None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        cfg = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if cfg is None:
        return {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, got {type(cfg).__name__}")
    return cfg


def load_config(
    path: str | Path, overrides: Mapping[str, Any] | None = None, base: str | Path | None | bool = True
) -> dict[str, Any]:
    """Read a YAML config, merge it onto the default config, apply nested ``overrides``, validate.

    As Snakemake does with ``--configfile``, a file that sets only some keys (an overlay such as
    ``config/mscxr.yaml``) is merged onto the default ``config/config.yaml`` (found next to it or in
    a parent folder; ``base`` names another file, ``base=False`` validates the file alone).

    >>> cfg = load_config("config/mscxr.yaml")       # doctest: +SKIP
    >>> cfg["dataset"], cfg["input"]["size"]         # doctest: +SKIP
    ('mscxr', 224)
    """
    path = Path(path)
    cfg = _read_yaml(path)
    base_path = default_config_for(path) if base is True else (Path(base) if base else None)
    if base_path is not None and base_path.resolve() != path.resolve():
        cfg = deep_update(_read_yaml(base_path), cfg)
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
