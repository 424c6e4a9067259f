"""The catalogue of attribution methods and their parameters, as data: ``matex/methods.yaml``.

Generated from the method registry (each method's keyword-only arguments, their types and defaults:
one source of defaults) by ``python -m matex.methods_catalog``; a test fails when it is out of date.
Config validation reads this file, not the registry, so ``matex check-config`` and Snakemake's DAG
build check method names and parameters in a fraction of a second, without importing torch.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .io import write_generated

CATALOG_PATH = Path(__file__).with_name("methods.yaml")
_SCALARS = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


def _plain(value: Any) -> Any:
    """A default as YAML can hold it (tuples become lists)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def generate_catalog() -> dict[str, Any]:
    """{method: {reference, params: {name: {type, default}}}} from the registry (imports torch)."""
    from .attribution.registry import available_methods, get_method

    out: dict[str, Any] = {}
    for name in available_methods():
        spec = get_method(name)
        out[name] = {
            "reference": spec.reference,
            "params": {
                k: {"type": spec.annotations.get(k, ""), "default": _plain(v)} for k, v in spec.defaults.items()
            },
        }
    return out


def load_catalog() -> dict[str, Any]:
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


def main(argv: list[str] | None = None) -> int:
    """Write (default) or ``--check`` the catalogue file."""
    argv = sys.argv[1:] if argv is None else argv
    text = "# Generated by `python -m matex.methods_catalog` from the method registry: do not edit.\n" + yaml.safe_dump(
        generate_catalog(), sort_keys=True, allow_unicode=True
    )
    return write_generated(CATALOG_PATH, text, "python -m matex.methods_catalog", "--check" in argv)


if __name__ == "__main__":
    sys.exit(main())
