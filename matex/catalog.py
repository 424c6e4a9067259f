"""The method catalogue ``matex/methods.yaml`` read as data: method names, their parameters, types and
defaults, without importing torch.

Config validation, ``matex check-config``, ``matex methods`` and Snakemake's DAG build read this file,
so they answer in a fraction of a second. The file is written from the method registry by
``python -m matex.docgen.methods_catalog`` (a test fails when it is out of date). This module sits below
every other layer of the package (it needs only :mod:`matex.errors`), so the attribution registry and
the config checks share its parameter check without importing each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

CATALOG_PATH = Path(__file__).with_name("methods.yaml")
_SCALARS = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


def load_catalog() -> dict[str, Any]:
    """{method: {reference, params: {name: {type, default}}}} as ``matex/methods.yaml`` holds it."""
    return yaml.safe_load(CATALOG_PATH.read_text())


def check_param_type(method: str, key: str, value: Any, annotation: str) -> None:
    """Raise a ConfigError naming ``attribution.params.<method>.<key>`` when ``value`` does not fit the
    parameter's annotation (``int``, ``float``, ``str``, ``bool``, ``X | None``, ``list[X]`` and unions of
    these); other annotations are not checked."""

    def fits(v: Any, ann: str) -> bool | None:
        ann = ann.strip()
        if ann == "None":
            return v is None
        if ann in _SCALARS:
            if isinstance(v, bool) and ann != "bool":
                return False
            return isinstance(v, _SCALARS[ann])
        if ann.startswith("list[") and ann.endswith("]"):
            return isinstance(v, (list, tuple)) and all(fits(x, ann[5:-1]) is not False for x in v)
        return None  # unknown annotation: not checked

    results = [fits(value, a) for a in annotation.split("|")]
    if any(r is True for r in results) or all(r is None for r in results):
        return
    raise ConfigError(
        f"attribution.params.{method}.{key}: expected {annotation}, got {value!r} ({type(value).__name__})"
    )


def method_problems(cfg: Mapping[str, Any], catalog: Mapping[str, Any] | None = None) -> list[str]:
    """Every unknown method name and every unknown or wrong-typed method parameter in ``cfg``, one line
    each, naming the config key path."""
    catalog = load_catalog() if catalog is None else catalog
    known = sorted(catalog)
    problems: list[str] = []
    att = cfg.get("attribution") or {}
    lists = [
        ("attribution.methods", att.get("methods")),
        ("evaluation.sanity.methods", ((cfg.get("evaluation") or {}).get("sanity") or {}).get("methods")),
        ("roar.methods", (cfg.get("roar") or {}).get("methods")),
        ("roar.text_methods", (cfg.get("roar") or {}).get("text_methods")),
        ("roar.retrain.methods", ((cfg.get("roar") or {}).get("retrain") or {}).get("methods")),
    ]
    for path, names in lists:
        for i, name in enumerate(names or []):
            if name not in catalog:
                problems.append(f"config key {path}[{i}]: unknown attribution method {name!r}; known: {known}")
    for method, params in (att.get("params") or {}).items():
        if method not in catalog:
            problems.append(
                f"config key attribution.params.{method}: unknown attribution method {method!r}; known: {known}"
            )
            continue
        declared = catalog[method]["params"]
        if params is not None and not isinstance(params, Mapping):
            problems.append(f"config key attribution.params.{method}: expected a mapping of parameters, got {params!r}")
            continue
        for key, value in (params or {}).items():
            if key not in declared:
                problems.append(
                    f"config key attribution.params.{method}.{key}: unknown parameter of {method!r}; "
                    f"known: {sorted(declared)}"
                )
                continue
            try:
                check_param_type(method, key, value, declared[key]["type"])
            except ConfigError as e:
                problems.append(f"config key {e}")
    return problems
