"""Step of workflow/rules/seed_agreement.smk: the seed-to-seed agreement of one stochastic method
(docs/fidelity.md), summarised by the ``aggregate`` step into ``tables/seed_agreement``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .core import base_meta, load_step_inputs, method_params, recorded_settings, step


def seed_agreement_methods(config: Mapping[str, Any]) -> list[str]:
    """The run's methods that draw random numbers (``STOCHASTIC_METHODS``), in the config's order: one
    ``seed_agreement`` job each. Torch-free: the workflow calls it while it is parsed."""
    from ..metrics.seed_agreement import STOCHASTIC_METHODS

    return [m for m in config["attribution"]["methods"] if m in STOCHASTIC_METHODS]


def seed_agreement_settings(cfg: Mapping[str, Any]) -> tuple[list[int], int | None]:
    """(seeds, max_pairs) of ``evaluation.seed_agreement`` (defaults: seeds 0 and 1, 32 pairs); two equal
    seeds are refused before any model is loaded."""
    from ..errors import ConfigError

    sa = (cfg.get("evaluation") or {}).get("seed_agreement") or {}
    seeds = [int(s) for s in sa.get("seeds", [0, 1])]
    if len(seeds) != 2 or seeds[0] == seeds[1]:
        raise ConfigError(f"config key evaluation.seed_agreement.seeds: two different seeds needed, got {seeds}")
    return seeds, sa.get("max_pairs", 32)


@step
def seed_agreement(cfg, input, output, params, wildcards, threads):
    """Per pair: Spearman ρ between the method's maps under two seeds, with the run's parameters, on
    the first ``max_pairs`` evaluation pairs (the pairs every step explains, ``evaluation_rows``)."""
    from ..io import write_parquet
    from ..maps.store import evaluation_rows
    from ..metrics.seed_agreement import seed_agreement_rows

    seeds, cap = seed_agreement_settings(cfg)
    pairs, images, model = load_step_inputs(cfg, input, threads)
    rows = evaluation_rows(cfg, pairs)
    rows = rows[: int(cap)] if cap else rows
    method = wildcards.method
    df = seed_agreement_rows(
        model, method, method_params(cfg, method), pairs, images, rows, int(cfg["attribution"]["batch_size"]), seeds
    )
    meta = base_meta(cfg, "data", "input", "model", "attribution", "evaluation")
    meta.update(method=method, seeds=seeds, settings=recorded_settings(cfg, "seed_agreement", wildcards))
    write_parquet(output.table, df, meta)


def seed_agreement_summary(cfg: Mapping[str, Any], input, output, meta: dict, n: int, ci: float, seed: int) -> str:
    """The ``aggregate`` step's part: the per-method table of the ``seed_agreement`` jobs' results
    (``output.seed_agreement`` and ``output.seed_agreement_md``) and its Markdown for tables/results.md;
    "" when the rule declares no such outputs. A run without a stochastic method gets a table that says so."""
    import pandas as pd

    from ..io import write_parquet, write_text
    from ..metrics.seed_agreement import seed_agreement_markdown, seed_agreement_table, settings_text

    if not hasattr(output, "seed_agreement"):
        return ""
    frames = [pd.read_parquet(p) for p in getattr(input, "seed_agreement", [])]
    per_pair = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["method", "patient", "rho"])
    methods = list(dict.fromkeys(per_pair["method"]))
    settings = {m: settings_text(m, method_params(dict(cfg), m)) for m in methods}
    table = seed_agreement_table(per_pair, settings, cfg["attribution"]["methods"], n, ci, seed)
    seeds, _ = seed_agreement_settings(cfg)
    n_pairs = int(per_pair.groupby("method").size().max()) if len(per_pair) else 0
    text = seed_agreement_markdown(table, seeds, n_pairs, ci)
    write_parquet(output.seed_agreement, table, meta)
    write_text(output.seed_agreement_md, text)
    return text
