"""The results tables of a run, one per question (TABLE_GROUPS), the paired differences, localisation
by phrase subset and one per finding, with their notes (docs/evaluation.md)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .columns import _LOCALISATION, DAGGER_NOTE, LOCALISATION, METRIC_GROUP, METRICS, MIN_CELL_PAIRS, SUBSETS
from .table_format import _pivot, wide_table, with_roar


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
