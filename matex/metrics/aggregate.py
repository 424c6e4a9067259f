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

# (column, label, scale): confidence metrics are reported x100 as in M2IB and MATEX.
METRICS: list[tuple[str, str, float]] = [
    ("img_conf_drop", "Img conf. drop ↓", 100.0),
    ("img_conf_increase", "Img conf. incr. ↑", 100.0),
    ("txt_conf_drop", "Txt conf. drop ↓", 100.0),
    ("txt_conf_increase", "Txt conf. incr. ↑", 100.0),
    # equal mass: the same protocol on the rank-normalised map and at fixed top-k % (metrics/equal_mass.py)
    ("img_conf_drop_rank", "Img conf. drop, ranks ↓", 100.0),
    ("img_conf_increase_rank", "Img conf. incr., ranks ↑", 100.0),
    *[
        (f"img_conf_{kind}_top{k}", f"Img conf. {short}, top {k} % {arrow}", 100.0)
        for k in (5, 10, 25, 50)
        for kind, short, arrow in (("drop", "drop", "↓"), ("increase", "incr.", "↑"))
    ],
    ("deletion_auc", "Deletion AUC ↓", 100.0),
    ("insertion_auc", "Insertion AUC ↑", 100.0),
    # ROAD (Rong et al. 2022; metrics/road.py): similarity drop, most / least relevant pixels imputed first
    ("road_morf", "ROAD MoRF drop ↑", 100.0),
    ("road_lerf", "ROAD LeRF drop ↓", 100.0),
    ("road_gap", "ROAD MoRF − LeRF ↑", 100.0),
    ("pointing_game", "Pointing ↑", 100.0),
    ("pointing_game_tol15", "Pointing, 15 px ↑", 100.0),
    ("energy_in_box", "Energy in box ↑", 100.0),
    ("iou_top5", "IoU@5% ↑", 100.0),
    ("auroc", "AUROC ↑", 100.0),
    # MS-CXR's grounding metrics (Boecking et al. 2022), unscaled as the papers print them
    ("cnr", "CNR ↑", 1.0),
    ("miou", "mIoU ↑", 1.0),
    ("box_recall", "Box recall ↑", 100.0),
    ("sanity_abs_spearman", "Sanity abs ρ ↓", 1.0),
    ("sanity_ssim", "Sanity SSIM ↓", 1.0),
    # counterfactual ground truth (synthetic data only; metrics/counterfactual.py)
    ("lesion_share", "Lesion share ↑", 100.0),
    ("drain_share", "Drain share", 100.0),
    ("counterfactual_agreement", "CF concordance ↑", 1.0),
    ("counterfactual_agreement_nonlesion", "CF concordance, non-lesion ↑", 1.0),
    ("shortcut_test", "Shortcut test ↑", 100.0),
    ("runtime_ms", "ms / pair", 1.0),
]
# Which overall table a metric column belongs to when TABLE_GROUPS does not name it (new metrics
# only need a line here): its family, by the title of the table.
_EQUAL_MASS = "All findings: faithfulness at equal mass (pixel order only)"
_LOCALISATION = "All findings: localisation against the boxes"
_COUNTERFACTUAL = "All findings: counterfactual ground truth (synthetic films)"
METRIC_GROUP: dict[str, str] = {
    **{c: _EQUAL_MASS for c in ("img_conf_drop_rank", "img_conf_increase_rank", "road_morf", "road_lerf", "road_gap")},
    **{f"img_conf_{kind}_top{k}": _EQUAL_MASS for k in (5, 10, 25, 50) for kind in ("drop", "increase")},
    "deletion_auc": _EQUAL_MASS,
    "insertion_auc": _EQUAL_MASS,
    "pointing_game": _LOCALISATION,
    "energy_in_box": _LOCALISATION,
    "iou_top5": _LOCALISATION,
    "auroc": _LOCALISATION,
    "pointing_game_tol15": _LOCALISATION,
    "cnr": _LOCALISATION,
    "miou": _LOCALISATION,
    "box_recall": _LOCALISATION,
    "lesion_share": _COUNTERFACTUAL,
    "drain_share": _COUNTERFACTUAL,
    "counterfactual_agreement": _COUNTERFACTUAL,
    "counterfactual_agreement_nonlesion": _COUNTERFACTUAL,
    "shortcut_test": _COUNTERFACTUAL,
}
# Faithfulness scores: also reported relative to the random map on the same pairs.
FAITHFULNESS = [
    "img_conf_drop",
    "img_conf_increase",
    "txt_conf_drop",
    "txt_conf_increase",
    "deletion_auc",
    "insertion_auc",
    *[c for c, g in METRIC_GROUP.items() if g == _EQUAL_MASS and c not in ("deletion_auc", "insertion_auc")],
]
# Localisation scores: also reported per phrase subset and as the gain over prior_only.
LOCALISATION = ["pointing_game", "energy_in_box", "iou_top5", "auroc", "cnr", "miou"]
# Paired references: name -> the metrics compared against it (None = every metric).
REFERENCES: dict[str, list[str] | None] = {
    "matex": None,
    "random": FAITHFULNESS,
    "prior_only": [c for c, g in METRIC_GROUP.items() if g == _LOCALISATION],
}
# Per-finding cells resting on fewer pairs than this are marked with a dagger.
MIN_CELL_PAIRS = 20
# Below this many pairs a cell shows its value and n without an interval, and no sentence ranks it.
MIN_INTERVAL_PAIRS = 10
DAGGER = "†"
DAGGER_NOTE = f"{DAGGER} fewer than {MIN_CELL_PAIRS} pairs in the cell: its interval is unreliable."
# Sanity table column -> tidy metric name (the measures with every block randomised).
SANITY_COLUMNS = {"spearman": "sanity_spearman", "abs_spearman": "sanity_abs_spearman", "ssim": "sanity_ssim"}
SUBSETS = {"all": "All pairs", "location": "Phrase names a location", "no_location": "Phrase names no location"}


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


def _cell(r, prefix: str = "mean", min_pairs: int | None = MIN_CELL_PAIRS, show_n: bool = False) -> str:
    """'value [low, high]' from the columns ``prefix`` (mean | vs_<ref>); a dagger when the cell
    rests on fewer than ``min_pairs`` pairs; no interval below ``MIN_INTERVAL_PAIRS`` pairs (the
    value alone, with its n); ``show_n`` appends the cell's own n (when the column's n varies)."""
    value, low, high = (
        (r["mean"], r["ci_low"], r["ci_high"])
        if prefix == "mean"
        else (r[prefix], r[f"{prefix}_low"], r[f"{prefix}_high"])
    )
    if not np.isfinite(value):
        return "–"
    n = int(r["n"] if prefix == "mean" else r[f"{prefix}_n"])
    mark = DAGGER if min_pairs is not None and n < min_pairs else ""
    fmt = "{:+.2f}" if prefix != "mean" else "{:.2f}"
    if n < MIN_INTERVAL_PAIRS:
        return f"{fmt.format(value)} (n={n}, no interval){mark}"
    tail = f" (n={n})" if show_n else ""
    return f"{fmt.format(value)} [{fmt.format(low)}, {fmt.format(high)}]{tail}{mark}"


def _column_n(summary: pd.DataFrame, column: str, prefix: str) -> dict:
    """Per column value: its n when every method's cell rests on the same number of pairs, else None."""
    ncol = "n" if prefix == "mean" else f"{prefix}_n"
    finite = summary[np.isfinite(summary["mean" if prefix == "mean" else prefix].astype(float))]
    return {k: (int(g.iloc[0]) if g.nunique() == 1 else None) for k, g in finite.groupby(column)[ncol]}


def _pivot(
    summary: pd.DataFrame,
    column: str,
    method_order: Sequence[str],
    metrics: Sequence[str],
    prefix: str,
    min_pairs: int | None,
    labels: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Methods x ``column`` values; every header says its n ("Label (n=128)") when the column's
    cells share one n, otherwise each cell says its own."""
    common = _column_n(summary, column, prefix) if len(summary) else {}
    cells = (
        summary.apply(lambda r: _cell(r, prefix, min_pairs, show_n=common.get(r[column]) is None), axis=1)
        if len(summary)
        else []
    )
    table = summary.assign(cell=cells).pivot(index="method", columns=column, values="cell")
    order = [m for m in method_order if m in table.index] + [m for m in table.index if m not in method_order]
    table = table.reindex(index=order, columns=list(metrics)).fillna("–")
    labels = labels or {}
    return table.rename(
        columns={c: labels.get(c, c) + (f" (n={common[c]})" if common.get(c) is not None else "") for c in metrics}
    )


def wide_table(
    summary: pd.DataFrame,
    method_order: Sequence[str],
    value: str = "mean",
    min_pairs: int | None = MIN_CELL_PAIRS,
    metrics: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Methods (rows) x metrics (columns), paper's column order (or ``metrics``' order). ``value`` =
    "mean" gives cells 'mean [low, high]'; "vs_<ref>" gives the paired difference to <ref>, its
    interval, and only the metrics compared with <ref> (the reference's own row is dropped). Cells
    resting on fewer than ``min_pairs`` pairs carry a dagger; headers (or cells) give n."""
    labels = {c: label for c, label, _ in METRICS}
    wanted = list(metrics) if metrics is not None else [c for c, _, _ in METRICS]
    present = [c for c in wanted if c in set(summary["metric"])]
    if value != "mean":
        present = [c for c in present if np.isfinite(summary.loc[summary["metric"] == c, value]).any()]
        summary = summary[summary["method"] != value[len("vs_") :]]
    summary = summary[summary["metric"].isin(present)]
    return _pivot(summary, "metric", method_order, present, value, min_pairs, labels)


def localisation_tables(by_phrase: pd.DataFrame, method_order: Sequence[str]) -> list[tuple[str, pd.DataFrame]]:
    """One table per localisation metric: rows = methods; columns = the metric on all pairs, on
    pairs whose phrase names a location and on those whose phrase names none, then the paired gain
    over prior_only on each of the three subsets."""
    labels = {c: label for c, label, _ in METRICS}
    out = []
    for metric in [m for m in LOCALISATION if m in set(by_phrase["metric"])]:
        sub = by_phrase[by_phrase["metric"] == metric]
        subsets = [s for s in SUBSETS if s in set(sub["subset"])]
        parts = [_pivot(sub, "subset", method_order, subsets, "mean", MIN_CELL_PAIRS, SUBSETS)]
        if np.isfinite(sub["vs_prior_only"]).any():
            gain_labels = {s: f"Gain over prior_only: {SUBSETS[s].lower()}" for s in subsets}
            rest = sub[sub["method"] != "prior_only"]
            parts.append(_pivot(rest, "subset", method_order, subsets, "vs_prior_only", MIN_CELL_PAIRS, gain_labels))
        out.append((labels.get(metric, metric), pd.concat(parts, axis=1).fillna("–")))
    return out


_PAIRED = (
    "per pair, then averaged over the pairs both score; the interval uses the same patient resamples "
    "for both, so an interval that excludes 0 is a difference beyond resampling noise. The arrow of a "
    "column says which sign is better."
)
NOTES = {
    "vs_matex": f"Method − MATEX, {_PAIRED}",
    "vs_random": f"Method − random, {_PAIRED} Confidence drop/increase follow the map's mean value; this "
    "table says what a map adds over a random map on the same pairs.",
    "by_phrase": "Phrase names a location: the phrase parser (matex.priors) finds an anatomical region in it, so "
    "the text prior alone carries location information. Gain over prior_only: method − prior_only, "
    f"{_PAIRED} It is what the model adds beyond the phrase's words.",
}


# The overall results, one table per question (the first one takes the ROAR+ and ROAR columns).
# A metric of METRICS that no group names lands in the last table, so no column is ever dropped.
TABLE_GROUPS: list[tuple[str, list[str], str]] = [
    (
        "All findings: faithfulness, M2IB protocol (contrast-sensitive)",
        ["img_conf_drop", "img_conf_increase", "txt_conf_drop", "txt_conf_increase"],
        "The protocol of M2IB and MATEX's headline numbers: the image is multiplied by the map, so the scores "
        "follow the map's contrast as well as its pixel order (a strictly increasing transform of the map, "
        "such as map^0.25, changes them). The equal-mass table below depends on the pixel order only.",
    ),
    ("All findings: faithfulness at equal mass (pixel order only)", [], ""),
    ("All findings: localisation against the boxes", [], ""),
    (
        "All findings: sanity (cascading randomisation)",
        ["sanity_abs_spearman", "sanity_ssim"],
        "Measured with every parameter randomised (the last step of the cascade); lower = the map depends on "
        "the weights.",
    ),
    ("All findings: counterfactual ground truth (synthetic films)", [], ""),
    ("All findings: cost", ["runtime_ms"], ""),
]


def _grouped_metrics(present: set[str]) -> list[tuple[str, list[str], str]]:
    """TABLE_GROUPS with the metrics present in this run, FAITHFULNESS-like leftovers appended to the
    group that names their family (see ``METRIC_GROUP``), others to the last group."""
    named = {m for _, ms, _ in TABLE_GROUPS for m in ms}
    out = []
    for title, ms, note in TABLE_GROUPS:
        family = [c for c, _, _ in METRICS if METRIC_GROUP.get(c) == title and c not in named]
        out.append((title, [m for m in [*ms, *family] if m in present], note))
    leftovers = [c for c, _, _ in METRICS if c in present and not any(c in ms for _, ms, _ in out)]
    if leftovers:
        out[-1] = (out[-1][0], out[-1][1] + leftovers, out[-1][2])
    return out


def with_published_anchors(table: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The localisation table with one row per published MS-CXR result (``GROUNDING_ANCHORS``): CNR and
    mIoU as the papers print them, no interval, every other cell "–"; and the note that says what they are."""
    from .localisation import GROUNDING_ANCHORS

    cols = {c: next((k for k, lab, _ in METRICS if c.startswith(lab)), None) for c in table.columns}
    rows = {
        f"{name} (published)": [
            f"{anchor[cols[c]]:.3g}" if cols[c] in ("cnr", "miou") and cols[c] in anchor else "–" for c in table.columns
        ]
        for name, anchor in GROUNDING_ANCHORS.items()
    }
    out = pd.concat([table, pd.DataFrame.from_dict(rows, orient="index", columns=table.columns)])
    sources = sorted({str(a["source"]) for a in GROUNDING_ANCHORS.values()})
    note = (
        "Rows '(published)': the CNR and mIoU that the MS-CXR literature reports for its own models' "
        f"similarity maps ({'; '.join(sources)}), printed for orientation, not re-run here; their mIoU "
        "thresholds a cosine-similarity map where ours thresholds the min-max normalised map (docs/evaluation.md)."
    )
    return out, note


def result_tables(
    overall: pd.DataFrame,
    per_cat: pd.DataFrame,
    by_phrase: pd.DataFrame,
    roar: pd.DataFrame | None,
    method_order: Sequence[str],
    published_anchors: bool = False,
) -> list[tuple[str, pd.DataFrame, str]]:
    """(title, table, note) of every results table: the overall tables one per question (TABLE_GROUPS;
    the first with ROAR+ when ``roar`` is given; the localisation one with the published MS-CXR
    results when ``published_anchors``), the paired differences to MATEX and to random,
    localisation by phrase subset with the gain over prior_only, and one table per finding. Every
    cell under MIN_CELL_PAIRS pairs carries a dagger and every column its n. A table without columns
    (e.g. no MATEX or random run) is left out."""
    tables = []
    for k, (title, metrics, note) in enumerate(_grouped_metrics(set(overall["metric"]))):
        t = wide_table(overall, method_order, metrics=metrics)
        if k == 0 and roar is not None:
            t = with_roar(t, roar)
        if published_anchors and title == _LOCALISATION and t.shape[1]:
            t, anchor_note = with_published_anchors(t)
            note = " ".join(x for x in (note, anchor_note) if x)
        tables.append((title, t, " ".join(x for x in (note, DAGGER_NOTE) if x)))
    tables += [
        ("Δ vs MATEX (paired)", wide_table(overall, method_order, "vs_matex"), NOTES["vs_matex"]),
        (
            "Faithfulness relative to random (paired)",
            wide_table(overall, method_order, "vs_random"),
            NOTES["vs_random"],
        ),
    ]
    tables += [(f"{name} by phrase", t, NOTES["by_phrase"]) for name, t in localisation_tables(by_phrase, method_order)]
    tables += [(str(cat), wide_table(grp, method_order), DAGGER_NOTE) for cat, grp in per_cat.groupby("category")]
    return [t for t in tables if t[1].shape[1]]


def to_markdown(table: pd.DataFrame, title: str, note: str = "") -> str:
    cols = ["method"] + list(table.columns)
    lines = [f"### {title}", ""] + ([note, ""] if note else [])
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for method, row in table.iterrows():
        lines.append("| " + " | ".join([str(method)] + [str(v) for v in row]) + " |")
    return "\n".join(lines) + "\n"


def to_latex(table: pd.DataFrame, caption: str) -> str:
    def esc(s) -> str:
        for old, tex in (
            ("%", r"\%"),
            ("_", r"\_"),
            ("↑", r"$\uparrow$"),
            ("↓", r"$\downarrow$"),
            ("†", r"$^\dagger$"),
            ("Δ", r"$\Delta$"),
            ("ρ", r"$\rho$"),
            ("±", r"$\pm$"),
            ("−", "$-$"),
        ):
            s = str(s).replace(old, tex)
        return s

    cols = ["Method"] + [esc(c) for c in table.columns]
    body = [" & ".join([esc(m)] + [esc(v) for v in row]) + r" \\" for m, row in table.iterrows()]
    return (
        "\n".join(
            [
                r"\begin{table}[t]",
                r"\centering\small",
                f"\\caption{{{esc(caption)}}}",
                r"\begin{tabular}{l" + "c" * len(table.columns) + "}",
                r"\toprule",
                " & ".join(cols) + r" \\",
                r"\midrule",
                *body,
                r"\bottomrule",
                r"\end{tabular}",
                r"\end{table}",
            ]
        )
        + "\n"
    )


def to_html(tables: Sequence[tuple], title: str, notes: Sequence[str] = ()) -> str:
    """A standalone HTML page of the given (title, table) or (title, table, note) tuples, for the
    Snakemake report."""
    import html

    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;font-size:13px}table{border-collapse:collapse;margin-bottom:1.5em}"
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}th:first-child,td:first-child"
        "{text-align:left}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    parts += [f"<p>{html.escape(n)}</p>" for n in notes]
    for name, table, *note in tables:
        parts.append(f"<h3>{html.escape(name)}</h3>")
        parts += [f"<p><small>{html.escape(n)}</small></p>" for n in note if n]
        parts.append(table.rename_axis("method").to_html(escape=True, border=0))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def with_roar(table, roar):
    """Insert the image and text ROAR+ columns (mean ± sd over seeds), paper order: each after its
    side's confidence columns (Img conf. drop, Img conf. incr., Img ROAR+, Txt conf. ..., Txt ROAR+).
    A method without a run on a side shows "–"."""
    table = table.copy()
    pos = 0
    for modality, prefix in (("image", "Img"), ("text", "Txt")):
        side = roar[roar["modality"] == modality].set_index("method")
        col = [_roar_cell(side.loc[m]) if m in side.index else "–" for m in table.index]
        last = [i for i, c in enumerate(table.columns) if c.startswith(f"{prefix} conf.")]
        pos = last[-1] + 1 if last else pos
        table.insert(pos, f"{prefix} ROAR+ ↑", col)
        pos += 1
    return table


def _roar_cell(r) -> str:
    """'mean ± sd' over seeds; the mean alone when the sd is undefined (one seed)."""
    import numpy as np

    if np.isfinite(r["roar_plus_sd"]):
        return f"{r['roar_plus_mean']:.2f} ± {r['roar_plus_sd']:.2f}"
    return f"{r['roar_plus_mean']:.2f}"
