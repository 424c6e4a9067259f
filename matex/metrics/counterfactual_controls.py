"""Controls of the counterfactual study (synthetic films only): the study's own floor and ceiling,
map-free rankings, and the intervention that shows what the model's score follows.

- Oracle maps ``lesion_mask`` and ``drain_mask``: maps equal to the pair's lesion mask / the film's
  drain mask, scored with every counterfactual metric. On the pairs where the model relies more on
  the drain than on the lesion, ``drain_mask`` is the shortcut test's ceiling (100) and, because the
  generator keeps the drain a patch away from every lesion, ``lesion_mask`` its floor (0).
- Map-free rankings ``fixed_order`` (the pair's lesion first, then the drain, other findings, ribs,
  clavicles; it never looks at a map or at the model) and ``area_order`` (elements ranked by their
  exclusive area): what counterfactual agreement a method gets without explaining anything.
- :func:`shortcut_intervention`: on films with a drain, ΔS when the drain is erased against ΔS when
  the lesion is erased (the exact re-renderings of the truth), with patient-bootstrap intervals: the
  evidence that the shortcut test's pairs are ones where the model's score follows the drain.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from .counterfactual import (
    PairCounterfactual,
    counterfactual_metrics,
    exclusive_masks,
    noise_threshold,
    rank_concordance,
)

ORACLES = ("lesion_mask", "drain_mask")
BASELINES = ("fixed_order", "area_order")
# fixed_order's rank of each kind of element (higher = ranked as more relied upon)
FIXED_ORDER = {"lesion": 4, "drain": 3, "other_lesion": 2, "ribs": 1, "clavicles": 0}
SHORTCUT_CATEGORY = "Pneumothorax"  # the class the training films pair with a drain
# below this many pairs a group gets no interval and no verdict (as the tables: aggregate.MIN_INTERVAL_PAIRS)
MIN_INTERVAL_PAIRS = 10


def fixed_order_scores(t: PairCounterfactual) -> np.ndarray:
    """fixed_order's score per element of ``t``: lesion > drain > other findings > ribs > clavicles."""
    kind = {t.lesion: "lesion"}
    return np.array(
        [FIXED_ORDER[kind.get(n, "other_lesion" if n.startswith("lesion") else n)] for n in t.names], dtype=float
    )


def area_order_scores(t: PairCounterfactual) -> np.ndarray:
    """area_order's score per element: its exclusive area at the model input (pixels)."""
    return exclusive_masks(t.masks).reshape(len(t.names), -1).sum(1).astype(float)


def ranking_agreement(
    truths: Sequence[PairCounterfactual], scorer: Callable[[PairCounterfactual], np.ndarray], threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """(counterfactual_agreement, counterfactual_agreement_nonlesion) per pair of a map-free ranking."""
    every, nonlesion = [], []
    for t in truths:
        scores, d = scorer(t), np.asarray(t.deltas, np.float64)
        keep = np.array([n != t.lesion for n in t.names])
        every.append(rank_concordance(scores, d, threshold) if len(d) >= 2 else np.nan)
        nonlesion.append(rank_concordance(scores[keep], d[keep], threshold) if keep.sum() >= 2 else np.nan)
    return np.array(every, dtype=float), np.array(nonlesion, dtype=float)


def _rows(method: str, ids: list[str], pairs: pd.DataFrame, truths: Sequence[PairCounterfactual], rec) -> pd.DataFrame:
    by_pair = pairs.set_index("pair_id")
    return pd.DataFrame(
        {
            "pair_id": ids,
            "method": method,
            "category": [by_pair.loc[p, "category"] for p in ids],
            "has_drain": ["drain" in t.names for t in truths],
            "n_elements": [len(t.names) for t in truths],
            **rec,
        }
    )


def counterfactual_controls(pairs: pd.DataFrame, truths: Mapping[str, PairCounterfactual]) -> pd.DataFrame:
    """Rows shaped as :func:`~matex.metrics.counterfactual.evaluate_counterfactual`'s, one per pair
    and control: the oracle maps with every metric, the map-free rankings with the two agreement
    columns (the other columns NaN: a ranking has no map)."""
    ids = list(truths)
    ts = [truths[p] for p in ids]
    if not ts:
        return pd.DataFrame(columns=["pair_id", "method", "category", "has_drain", "n_elements"])
    threshold = noise_threshold(ts)
    out = []
    has_drain = np.array(["drain" in t.names for t in ts])
    for method, name in zip(ORACLES, ("lesion", "drain")):
        maps = np.stack([t.mask(t.lesion if name == "lesion" else "drain") for t in ts]).astype(np.float32)
        rec = dict(counterfactual_metrics(maps, ts, threshold=threshold))
        if name == "drain":  # no drain, no drain_mask: its zero map would score as a uniform one
            rec = {k: v if k.startswith("delta_s") else np.where(has_drain, v, np.nan) for k, v in rec.items()}
        out.append(_rows(method, ids, pairs, ts, rec))
    empty = counterfactual_metrics(np.zeros((len(ts), *ts[0].masks.shape[1:]), np.float32), ts, threshold=threshold)
    for method, scorer in zip(BASELINES, (fixed_order_scores, area_order_scores)):
        every, nonlesion = ranking_agreement(ts, scorer, threshold)
        rec = {k: np.full(len(ts), np.nan) for k in empty}
        rec.update(
            counterfactual_agreement=every,
            counterfactual_agreement_nonlesion=nonlesion,
            delta_s_lesion=empty["delta_s_lesion"],
            delta_s_drain=empty["delta_s_drain"],
        )
        out.append(_rows(method, ids, pairs, ts, rec))
    return pd.concat(out, ignore_index=True)


# ------------------------------------------------------------------------------------- the intervention
INTERVENTION_MEASURES = {
    "delta_s_drain": "ΔS, drain erased",
    "delta_s_lesion": "ΔS, lesion erased",
    "drain_minus_lesion": "ΔS drain − ΔS lesion",
    "drain_over_lesion": "share of pairs with ΔS drain > ΔS lesion",
}


def shortcut_intervention(
    pairs: pd.DataFrame,
    truths: Mapping[str, PairCounterfactual],
    n_resamples: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """On the films with a drain: the similarity drop when the drain is erased and when the pair's
    lesion is erased (ΔS = S(x) − S(x without e), the truth's exact re-renderings), their per-pair
    difference and the share of pairs where the drain's is larger, with patient-bootstrap intervals.

    Groups: ``shortcut`` (phrases of the class the training films paired with a drain, on films with
    one) and ``other`` (the other phrases on films with a drain). One row per (group, measure):
    mean, ci_low, ci_high (NaN below MIN_INTERVAL_PAIRS pairs), n, n_patients, and the run's noise
    threshold (:func:`~matex.metrics.counterfactual.noise_threshold`) for scale."""
    from .stats import PatientBootstrap

    by_pair = pairs.set_index("pair_id")
    ids = [p for p, t in truths.items() if "drain" in t.names]
    cluster = "patient_id" if "patient_id" in pairs.columns else "pair_id"
    df = pd.DataFrame(
        {
            "pair_id": ids,
            "patient": [str(by_pair.loc[p, cluster]) if cluster != "pair_id" else p for p in ids],
            "shortcut": [by_pair.loc[p, "category"] == SHORTCUT_CATEGORY for p in ids],
            "delta_s_drain": [truths[p].delta("drain") for p in ids],
            "delta_s_lesion": [truths[p].delta(truths[p].lesion) for p in ids],
        }
    )
    df["drain_minus_lesion"] = df["delta_s_drain"] - df["delta_s_lesion"]
    df["drain_over_lesion"] = (df["drain_minus_lesion"] > 0).astype(float).where(df["drain_minus_lesion"].notna())
    threshold = noise_threshold(list(truths.values()))
    rows = []
    for group, sub in (("shortcut", df[df["shortcut"]]), ("other", df[~df["shortcut"]])):
        boot = PatientBootstrap(sub["patient"].unique(), n_resamples, ci, seed) if len(sub) else None
        for measure in INTERVENTION_MEASURES:
            mean, low, high, n, n_pat = (
                boot.mean_ci(sub[measure], sub["patient"]) if boot else (np.nan, np.nan, np.nan, 0, 0)
            )
            if n < MIN_INTERVAL_PAIRS:
                low = high = np.nan
            rows.append(
                {
                    "group": group,
                    "measure": measure,
                    "mean": mean,
                    "ci_low": low,
                    "ci_high": high,
                    "n": n,
                    "n_patients": n_pat,
                    "noise_threshold": threshold,
                }
            )
    return pd.DataFrame(rows)


def _cell(r: pd.Series, scale: float) -> str:
    if not np.isfinite(r["mean"]):
        return "–"
    if not np.isfinite(r["ci_low"]):
        return f"{scale * r['mean']:.2f} (n = {int(r['n'])}, no interval)"
    return f"{scale * r['mean']:.2f} [{scale * r['ci_low']:.2f}, {scale * r['ci_high']:.2f}]"


def intervention_verdict(table: pd.DataFrame, group: str = "shortcut") -> str:
    """One sentence on what the score follows in ``group``, generated from the paired interval of
    ΔS drain − ΔS lesion: "the drain more than the lesion" only where the interval lies above 0, "the
    lesion more than the drain" only where it lies below 0, "not separable" otherwise; no verdict
    below MIN_INTERVAL_PAIRS pairs."""
    r = table[(table["group"] == group) & (table["measure"] == "drain_minus_lesion")].iloc[0]
    n = int(r["n"])
    if n < MIN_INTERVAL_PAIRS:
        return f"{n} pairs: too few for an interval (at least {MIN_INTERVAL_PAIRS}); no verdict."
    if r["ci_low"] > 0:
        return f"On these {n} pairs the similarity follows the drain more than the lesion (the interval lies above 0)."
    if r["ci_high"] < 0:
        return f"On these {n} pairs the similarity follows the lesion more than the drain (the interval lies below 0)."
    return f"On these {n} pairs the drain's and the lesion's effects are not separable (the interval holds 0)."


def intervention_markdown(table: pd.DataFrame, ci: float = 0.95) -> str:
    """The intervention table as Markdown (ΔS × 100; the share × 100), with its verdicts."""
    lines = [
        "# Intervention: does the similarity follow the drain or the lesion?\n",
        f"Films with a drain, re-rendered without the drain and without the pair's lesion; mean [{round(100 * ci)} % "
        "patient-bootstrap interval] of ΔS = S(x) − S(x without e), × 100. `shortcut`: "
        f"{SHORTCUT_CATEGORY.lower()} phrases (the class the training films paired with a drain); `other`: every "
        f"other phrase. No interval below {MIN_INTERVAL_PAIRS} pairs. Noise threshold (the least ΔS difference that "
        f"ranks two elements): {100 * float(table['noise_threshold'].iloc[0]):.3f}.\n",
        "| measure | shortcut | other |",
        "|---|---|---|",
    ]
    for measure, label in INTERVENTION_MEASURES.items():
        cells = [
            _cell(table[(table["group"] == g) & (table["measure"] == measure)].iloc[0], 100.0)
            for g in ("shortcut", "other")
        ]
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    n = {g: int(table[(table["group"] == g)]["n"].max()) for g in ("shortcut", "other")}
    lines += ["", f"Pairs: shortcut {n['shortcut']}, other {n['other']}.", ""]
    lines += [
        f"- shortcut: {intervention_verdict(table, 'shortcut')}",
        f"- other: {intervention_verdict(table, 'other')}",
        "",
    ]
    return "\n".join(lines)
