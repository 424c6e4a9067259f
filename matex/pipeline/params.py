"""The part of the config each rule depends on, passed to the rule as ``params: config=...``.

Snakemake reruns a job when its ``params`` change (the ``params`` rerun trigger), so a step that reads
only ``params.config`` is rerun exactly when a setting it uses changes: changing MATEX's ``alpha``
reruns MATEX's attribute job (and, through its new output, MATEX's evaluation and the tables), not
the other methods' jobs; changing a figure option reruns only figures. The steps never read the
global config (``matex.pipeline.core.run_step`` hands them this subset).

Each entry lists dotted config paths. ``attribution.params`` is narrowed to the job's own method
(the ``method`` or ``variant`` wildcard). A rule without an entry gets the whole config (it reruns on
any change: never stale, only slower).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

# Keys every step may read (paths, seed, names).
ALWAYS = ("seed", "dataset", "results_dir", "model.name")

# Which pairs are explained, by which model, on which device: what any per-pair model output depends on.
_PAIRS_AND_MODEL = (
    "data",
    "input",
    "model",
    "attribution.split",
    "attribution.max_pairs",
    "attribution.shortcut_pairs",
    "attribution.batch_size",
    "attribution.device",
)

# What a method's maps depend on: the pairs and the model, how maps are stored, the method's settings.
_MAPS = (
    *_PAIRS_AND_MODEL,
    "attribution.store_dtype",
    "attribution.shards",
    "attribution.save_components",
    "attribution.params",
)

# What every figure depends on: its file formats and the figure style (size, fonts).
_FIGURE = ("figures.formats", "figures.style")

RULE_SECTIONS: dict[str, tuple[str, ...]] = {
    "make_synthetic": ("data.synthetic", "data.val_fraction"),
    "download_mscxr": ("data.mscxr",),
    "prepare": ("data", "input"),
    "parse_phrases": ("data",),
    "figure_prior": ("input", "attribution.params", *_FIGURE, "report"),
    "train_demo_model": ("data", "input", "model"),
    "attribute": _MAPS,
    "merge_attribution": (),
    "evaluate": (*_MAPS, "evaluation", "roar.retrain.fractions", "roar.imputation_noise", "roar.road_fraction"),  # ROAD
    "counterfactual_truth": (*_PAIRS_AND_MODEL, "evaluation"),
    "counterfactual": (*_MAPS, "evaluation"),
    "counterfactual_controls": (*_PAIRS_AND_MODEL, "evaluation"),
    "sanity": (*_MAPS, "evaluation"),
    "seed_agreement": (*_PAIRS_AND_MODEL, "attribution.params", "evaluation.seed_agreement"),
    "ablation": (*_MAPS, "evaluation", "figures.ablation_pairs", "figures.lambda_sweep"),
    "aggregate": ("data", "input", "model", "attribution", "evaluation", "roar"),
    "attribute_roar_train": (*_MAPS, "roar"),
    "roar_finetune": (*_MAPS, "roar"),
    "roar_finetune_text": (*_MAPS, "roar"),
    "roar_summary": ("data", "input", "model", "attribution", "roar"),
    "roar_retrain": (*_MAPS, "roar"),
    "roar_curve": ("data", "input", "model", "attribution", "roar"),
    "figure_roar": ("roar.retrain", *_FIGURE),
    "pipeline_runtime": ("data", "input", "model", "attribution", "evaluation", "roar"),
    "figure_qualitative": (
        "attribution.methods",
        "figures.qualitative_per_category",
        "figures.qualitative_pairs",
        *_FIGURE,
        "report",
    ),
    "figure_metrics": ("attribution.methods", *_FIGURE),
    "figure_ablation": _FIGURE,
    "figure_sanity": ("attribution.methods", "evaluation.sanity", *_FIGURE),
    "figure_runtime": ("attribution.methods", *_FIGURE),
    "figure_training": _FIGURE,
    "figure_counterfactual": ("attribution.methods", *_FIGURE),
}


# Rules without a method wildcard that explain with one fixed method.
RULE_METHOD = {"ablation": "matex", "figure_prior": "matex"}


def _get(cfg: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    node: Any = cfg
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _put(out: dict, path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = out
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = copy.deepcopy(value)


def _canonical(node: Any) -> Any:
    """Keys sorted at every level: Snakemake compares params by their repr, which must not depend on
    the order keys were written in a config file."""
    if isinstance(node, Mapping):
        return {k: _canonical(node[k]) for k in sorted(node)}
    if isinstance(node, (list, tuple)):
        return [_canonical(v) for v in node]
    return node


def rule_config(config: Mapping[str, Any], rule: str, wildcards: Any = None) -> dict[str, Any]:
    """The settings ``rule`` depends on, as a nested dict shaped like the config.

    With a ``method`` (or ROAR ``variant``) wildcard, ``attribution.params`` keeps only that method's
    entry, so one method's settings never rerun another method's jobs."""
    sections = RULE_SECTIONS.get(rule)
    if sections is None:
        return _canonical(config)
    out: dict[str, Any] = {}
    for path in (*ALWAYS, *sections):
        found, value = _get(config, path)
        if found:
            _put(out, path, value)
    method = getattr(wildcards, "method", None) or getattr(wildcards, "variant", None) or RULE_METHOD.get(rule)
    params = out.get("attribution", {}).get("params")
    if method and isinstance(params, Mapping) and rule not in ("aggregate", "roar_summary", "pipeline_runtime"):
        out["attribution"]["params"] = {method: copy.deepcopy(params[method])} if method in params else {}
    return _canonical(out)
