"""Sentences that rank methods, generated from paired intervals so that the text cannot say more
than the tables.

A ranking statement ("A is better than B on metric m") is made only when the patient-bootstrap
interval of the per-pair difference A − B excludes 0 in the metric's better direction; otherwise the
two are "not separable". The differences are taken on the same pairs and the same patient resamples
as the tables' paired columns (:func:`matex.metrics.aggregate.summarise_tidy`), so a sentence about
MATEX quotes exactly the Δ-vs-MATEX cell of the table. Below ``MIN_INTERVAL_PAIRS`` pairs no interval
is given and no ranking is made.

:func:`claim` is the only way to phrase a comparison: asked for a verdict that the interval does
not support, it raises :class:`UnsupportedClaim`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .aggregate import METRICS, MIN_INTERVAL_PAIRS

BETTER, WORSE, HIGHER, LOWER = "better", "worse", "higher", "lower"
NOT_SEPARABLE, TOO_FEW = "not separable", "too few pairs"


class UnsupportedClaim(ValueError):
    """A ranking sentence that the paired interval does not support."""


def direction(metric: str) -> int:
    """+1 when higher is better (the table's label ends in ↑), −1 when lower is better (↓), 0 when
    the metric has no better side (e.g. drain share: it describes, it does not rank)."""
    for col, label, _ in METRICS:
        if col == metric:
            return 1 if label.endswith("↑") else -1 if label.endswith("↓") else 0
    return 0


def label(metric: str) -> str:
    """The metric's table label without its arrow."""
    for col, lab, _ in METRICS:
        if col == metric:
            return lab.rstrip(" ↑↓")
    return metric


def scale(metric: str) -> float:
    return next((s for col, _, s in METRICS if col == metric), 1.0)


@dataclass(frozen=True)
class Comparison:
    """The paired difference ``a − b`` on ``metric`` (scaled as in the tables), its interval and
    the number of pairs and patients both methods score."""

    metric: str
    a: str
    b: str
    diff: float
    low: float
    high: float
    n: int
    n_patients: int

    @property
    def verdict(self) -> str:
        """What the interval supports about ``a`` against ``b``: better / worse (metrics with a
        better side), higher / lower (metrics without one), not separable, or too few pairs."""
        if self.n < MIN_INTERVAL_PAIRS or not np.isfinite(self.low):
            return TOO_FEW
        d = direction(self.metric)
        if self.low > 0:
            return {1: BETTER, -1: WORSE}.get(d, HIGHER)
        if self.high < 0:
            return {1: WORSE, -1: BETTER}.get(d, LOWER)
        return NOT_SEPARABLE

    def interval(self) -> str:
        return f"{self.diff:+.2f} [{self.low:+.2f}, {self.high:+.2f}], n = {self.n}"


def _patient_bootstrap(tidy: pd.DataFrame, n_resamples: int, ci: float, seed: int):
    """The resamples the tables use for the whole group (every patient in ``tidy``)."""
    from .stats import PatientBootstrap

    cluster = "patient_id" if "patient_id" in tidy.columns else "pair_id"
    return PatientBootstrap(tidy[cluster].unique(), n_resamples, ci, seed), cluster


class Comparer:
    """Paired comparisons on one group of pairs (``tidy``: long rows pair_id, method, metric,
    value[, patient_id]), all on the same patient resamples, built once."""

    def __init__(self, tidy: pd.DataFrame, n_resamples: int = 1000, ci: float = 0.95, seed: int = 0):
        self.tidy = tidy
        self.boot, self.cluster = _patient_bootstrap(tidy, n_resamples, ci, seed)
        self._wide: dict[str, tuple[pd.DataFrame, pd.Series]] = {}

    def wide(self, metric: str) -> tuple[pd.DataFrame, pd.Series]:
        """(pairs x methods values, the patient of each pair) for one metric."""
        if metric not in self._wide:
            mg = self.tidy[self.tidy["metric"] == metric]
            wide = mg.pivot(index="pair_id", columns="method", values="value").astype(float)
            patients = mg.drop_duplicates("pair_id").set_index("pair_id")[self.cluster].reindex(wide.index)
            self._wide[metric] = (wide, patients)
        return self._wide[metric]

    def methods(self, metric: str) -> list[str]:
        return list(self.wide(metric)[0].columns)

    def compare(self, metric: str, a: str, b: str) -> Comparison:
        """Paired difference a − b over the pairs both score (scaled like the tables)."""
        from .stats import paired_difference

        wide, patients = self.wide(metric)
        for m in (a, b):
            if m not in wide.columns:
                raise KeyError(f"method {m!r} has no {metric!r} values (has {list(wide.columns)})")
        est, lo, hi, n, n_pat = self.boot.mean_ci(paired_difference(wide[a], wide[b]), patients)
        k = scale(metric)
        return Comparison(metric, a, b, est * k, lo * k, hi * k, n, n_pat)

    def means(self, metric: str) -> pd.Series:
        return self.wide(metric)[0].mean() * scale(metric)


def claim(comparison: Comparison, verdict: str) -> str:
    """The sentence "a is <verdict> than b on <metric> (difference [interval], n)"; raises
    :class:`UnsupportedClaim` unless the interval supports exactly that verdict."""
    if verdict != comparison.verdict:
        raise UnsupportedClaim(
            f"{comparison.a} is not '{verdict}' than {comparison.b} on {comparison.metric}: the paired "
            f"difference is {comparison.interval()} (the interval supports: {comparison.verdict})"
        )
    c = comparison
    if verdict == NOT_SEPARABLE:
        return f"{c.a} and {c.b} are not separable on {label(c.metric)} ({c.interval()})"
    if verdict == TOO_FEW:
        return f"{c.a} and {c.b} are not compared on {label(c.metric)}: {c.n} pairs (fewer than {MIN_INTERVAL_PAIRS})"
    return f"{c.a} is {verdict} than {c.b} on {label(c.metric)} ({c.interval()})"


def _join(names: Sequence[str]) -> str:
    names = [f"`{n}`" for n in names]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def reference_sentence(comparer: Comparer, metric: str, reference: str, methods: Sequence[str]) -> str:
    """One sentence: how ``reference`` stands against every other method on ``metric``, grouped by
    verdict. Every group is phrased through :func:`claim`, so it cannot state an unsupported verdict."""
    groups: dict[str, list[str]] = {}
    for m in methods:
        if m == reference:
            continue
        c = comparer.compare(metric, reference, m)
        claim(c, c.verdict)  # the verdict of each named method is the interval's own
        groups.setdefault(c.verdict, []).append(m)
    if not groups:
        return ""
    order = [BETTER, HIGHER, WORSE, LOWER, NOT_SEPARABLE, TOO_FEW]
    phrases = {
        BETTER: "better than {}",
        WORSE: "worse than {}",
        HIGHER: "higher than {}",
        LOWER: "lower than {}",
        NOT_SEPARABLE: "not separable from {}",
        TOO_FEW: "not compared with {} (fewer than " + str(MIN_INTERVAL_PAIRS) + " pairs)",
    }
    parts = [phrases[v].format(_join(groups[v])) for v in order if v in groups]
    return f"**{label(metric)}**: `{reference}` is " + "; ".join(parts) + "."


def leader_sentence(comparer: Comparer, metric: str, methods: Sequence[str]) -> str:
    """Whether one method is better than every other on ``metric``: the method with the best mean
    is called best only if its paired interval against each other method excludes 0; otherwise the
    sentence names the methods it cannot be separated from."""
    d = direction(metric)
    means = comparer.means(metric).reindex([m for m in methods if m in comparer.methods(metric)]).dropna()
    if d == 0 or len(means) < 2:
        return ""
    lead = means.idxmax() if d > 0 else means.idxmin()
    verdicts = {m: comparer.compare(metric, lead, m).verdict for m in means.index if m != lead}
    if TOO_FEW in verdicts.values():
        return f"**{label(metric)}**: not ranked (fewer than {MIN_INTERVAL_PAIRS} pairs)."
    tied = [m for m, v in verdicts.items() if v != BETTER]
    if not tied:
        return f"**{label(metric)}**: `{lead}` is better than every other method (each paired interval excludes 0)."
    return (
        f"**{label(metric)}**: no single best method; `{lead}` has the best mean but is not better than "
        f"{_join(tied)} (their paired intervals include 0)."
    )


def ranked_metrics(tidy: pd.DataFrame) -> list[str]:
    """The metrics of ``tidy`` that have a better side, in the tables' column order."""
    present = set(tidy["metric"])
    return [c for c, _, _ in METRICS if c in present and direction(c) != 0 and c != "runtime_ms"]


def claims_markdown(
    tidy: pd.DataFrame,
    metrics: Sequence[str],
    method_order: Sequence[str],
    reference: str = "matex",
    n_resamples: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> str:
    """The generated "what the intervals support" section: per metric, how ``reference`` compares
    with each method and whether any method is best. Only metrics present in ``tidy`` appear."""
    comparer = Comparer(tidy, n_resamples, ci, seed)
    present = set(tidy["metric"])
    lines = [
        "### What the intervals support",
        "",
        f"Generated from the paired {round(ci * 100)} % patient-bootstrap intervals of the differences (the "
        "Δ tables): 'better' only where the interval of the difference excludes 0 in the metric's better "
        f"direction, 'not separable' otherwise; below {MIN_INTERVAL_PAIRS} pairs nothing is ranked.",
        "",
    ]
    for metric in [m for m in metrics if m in present]:
        methods = [m for m in method_order if m in comparer.methods(metric)]
        methods += [m for m in comparer.methods(metric) if m not in methods]
        for sentence in (
            reference_sentence(comparer, metric, reference, methods) if reference in methods else "",
            leader_sentence(comparer, metric, methods),
        ):
            if sentence:
                lines.append(f"- {sentence}")
    return "\n".join(lines) + "\n"
