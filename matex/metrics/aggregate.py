"""Aggregate per-pair metrics of every method into one tidy table and summary tables, overall and
per finding category (Markdown, HTML and LaTeX; docs/evaluation.md).

Every interval is a percentile bootstrap that resamples *patients* (``stats.PatientBootstrap``);
within one group of pairs (all pairs, one finding, one phrase subset) every method, metric and
paired difference is computed on the same resamples. Paired differences are taken per pair and
then averaged: each method against MATEX (every metric), against ``random`` (faithfulness) and
against ``prior_only`` (localisation: what the model adds to the phrase's words).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .columns import (
    DAGGER,
    DAGGER_NOTE,
    FAITHFULNESS,
    LOCALISATION,
    METRIC_GROUP,
    METRICS,
    MIN_CELL_PAIRS,
    MIN_INTERVAL_PAIRS,
    REFERENCES,
    SANITY_COLUMNS,
    SUBSETS,
)
from .report_tables import NOTES, TABLE_GROUPS, localisation_tables, result_tables, with_published_anchors
from .table_format import to_html, to_latex, to_markdown, wide_table, with_roar

# Every public name of the split stays importable from here (the pipeline and the tests use this module).
__all__ = [
    "DAGGER",
    "DAGGER_NOTE",
    "FAITHFULNESS",
    "LOCALISATION",
    "METRICS",
    "METRIC_GROUP",
    "MIN_CELL_PAIRS",
    "MIN_INTERVAL_PAIRS",
    "NOTES",
    "REFERENCES",
    "SANITY_COLUMNS",
    "SUBSETS",
    "TABLE_GROUPS",
    "attach_pair_info",
    "localisation_by_phrase",
    "localisation_tables",
    "pair_info",
    "result_tables",
    "summarise_tidy",
    "tidy_metrics",
    "to_html",
    "to_latex",
    "to_markdown",
    "wide_table",
    "with_published_anchors",
    "with_roar",
]


def pair_info(pairs: pd.DataFrame) -> pd.DataFrame:
    """pair_id, patient_id (the bootstrap's cluster; the pair itself when the table has no patient
    column) and has_location: the phrase parser finds a region in the phrase, so the text prior
    carries location information (``matex.priors.parse_phrase``)."""
    from ..priors import parse_phrase

    patients = pairs["patient_id"].astype(str) if "patient_id" in pairs else pairs["pair_id"].astype(str)
    return pd.DataFrame(
        {
            "pair_id": pairs["pair_id"].to_numpy(),
            "patient_id": patients.to_numpy(),
            "has_location": [parse_phrase(str(p)).has_location for p in pairs["phrase"]],
        }
    )


def tidy_metrics(per_method: Sequence[pd.DataFrame], info: pd.DataFrame | None = None) -> pd.DataFrame:
    """Long format: pair_id, method, category, metric, value (plus patient_id and has_location
    when ``info`` from :func:`pair_info` is given)."""
    wide = pd.concat(per_method, ignore_index=True)
    value_cols = [c for c, _, _ in METRICS if c in wide.columns]
    tidy = wide.melt(
        id_vars=["pair_id", "method", "category"], value_vars=value_cols, var_name="metric", value_name="value"
    )
    return attach_pair_info(tidy, info)


def attach_pair_info(tidy: pd.DataFrame, info: pd.DataFrame | None) -> pd.DataFrame:
    """Add patient_id and has_location by pair_id (a pair missing from ``info`` is an error)."""
    if info is None:
        return tidy
    tidy = tidy.drop(columns=[c for c in ("patient_id", "has_location") if c in tidy.columns])
    out = tidy.merge(info, on="pair_id", how="left", validate="many_to_one")
    missing = out["patient_id"].isna()
    if missing.any():
        raise KeyError(f"pairs {out.loc[missing, 'pair_id'].unique()[:5].tolist()} are not in the pairs table")
    return out


def summarise_tidy(
    tidy: pd.DataFrame,
    by: Sequence[str],
    n_resamples: int,
    ci: float,
    seed: int,
    references: Mapping[str, Sequence[str] | None] = REFERENCES,
) -> pd.DataFrame:
    """One row per (by..., metric): mean, ci_low, ci_high, n (pairs), n_patients, and for each
    reference r present: vs_r, vs_r_low, vs_r_high, vs_r_n (the per-pair difference method - r,
    averaged over the pairs both score, with its interval), scaled for reporting.

    ``by`` must contain "method"; the other columns define the groups, and each group draws its
    patient resamples once (clusters: ``patient_id`` when present, else ``pair_id``)."""
    from .stats import PatientBootstrap, paired_difference

    scale = {c: s for c, _, s in METRICS}
    cluster = "patient_id" if "patient_id" in tidy.columns else "pair_id"
    outer = [c for c in by if c != "method"]
    groups = tidy.groupby(outer, sort=True) if outer else [((), tidy)]
    rows = []
    for key, grp in groups:
        key = key if isinstance(key, tuple) else (key,)
        boot = PatientBootstrap(grp[cluster].unique(), n_resamples, ci, seed)
        for metric, mg in grp.groupby("metric", sort=True):
            wide = mg.pivot(index="pair_id", columns="method", values="value").astype(float)
            patients = mg.drop_duplicates("pair_id").set_index("pair_id")[cluster].reindex(wide.index)
            k = scale.get(metric, 1.0)
            for method in wide.columns:
                est, lo, hi, n, n_pat = boot.mean_ci(wide[method], patients)
                row = {
                    **dict(zip(outer, key)),
                    "method": method,
                    "metric": metric,
                    "mean": est * k,
                    "ci_low": lo * k,
                    "ci_high": hi * k,
                    "n": n,
                    "n_patients": n_pat,
                }
                for ref, applies in references.items():
                    d = (np.nan,) * 3 + (0,)
                    if ref in wide.columns and (applies is None or metric in applies):
                        d = boot.mean_ci(paired_difference(wide[method], wide[ref]), patients)[:4]
                    row.update(
                        {
                            f"vs_{ref}": d[0] * k,
                            f"vs_{ref}_low": d[1] * k,
                            f"vs_{ref}_high": d[2] * k,
                            f"vs_{ref}_n": d[3],
                        }
                    )
                rows.append(row)
    return pd.DataFrame(rows)


def localisation_by_phrase(tidy: pd.DataFrame, n_resamples: int, ci: float, seed: int) -> pd.DataFrame:
    """Localisation summaries for all pairs, pairs whose phrase names a location and pairs whose
    phrase names none (``subset`` column), each with its paired gain over prior_only."""
    loc = tidy[tidy["metric"].isin(LOCALISATION)]
    parts = [
        loc.assign(subset="all"),
        loc[loc["has_location"]].assign(subset="location"),
        loc[~loc["has_location"].astype(bool)].assign(subset="no_location"),
    ]
    parts = [p for p in parts if len(p)]
    refs = {"matex": LOCALISATION, "prior_only": LOCALISATION}
    return summarise_tidy(pd.concat(parts, ignore_index=True), ["subset", "method"], n_resamples, ci, seed, refs)
