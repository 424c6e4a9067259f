"""Percentile-bootstrap confidence intervals for per-pair metrics (every table carries them,
docs/evaluation.md): the plain pair bootstrap (``bootstrap_ci``) and the patient (cluster)
bootstrap the tables use, with paired differences taken on the same resamples."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

# Resampled values held in memory at once: n_resamples x n is drawn in row chunks below this size.
_MAX_CELLS = 20_000_000


def bootstrap_ci(
    values, n_resamples: int = 1000, ci: float = 0.95, seed: int = 0, statistic: Callable[..., np.ndarray] = np.nanmean
) -> tuple[float, float, float]:
    """(estimate, low, high): ``statistic`` of the values and its percentile-bootstrap interval.

    NaN values are dropped first (a NaN metric means "undefined for this pair", e.g. an empty box).
    The resample indices are drawn as one (n_resamples, n) array from ``default_rng(seed)``, so the
    result is deterministic for a seed; ``statistic`` must accept ``axis=1``. No finite value ->
    three NaNs; a single value -> a zero-width interval.
    """
    if not 0.0 < ci < 1.0:
        raise ValueError(f"evaluation.bootstrap.ci must lie in (0, 1), got {ci}")
    if int(n_resamples) < 1:
        raise ValueError(f"evaluation.bootstrap.n_resamples must be >= 1, got {n_resamples}")
    vals = np.asarray(values, dtype=np.float64).ravel()
    vals = vals[~np.isnan(vals)]
    n = vals.size
    if n == 0:
        return (np.nan, np.nan, np.nan)
    estimate = float(statistic(vals))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(int(n_resamples), n))
    rows_per_chunk = max(1, _MAX_CELLS // n)
    stats = np.concatenate(
        [
            np.asarray(statistic(vals[idx[i : i + rows_per_chunk]], axis=1), dtype=np.float64)
            for i in range(0, idx.shape[0], rows_per_chunk)
        ]
    )
    alpha = (1.0 - ci) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    return estimate, float(low), float(high)


def summarise(
    df: pd.DataFrame,
    group_cols: Sequence[str],
    value_cols: Sequence[str],
    n_resamples: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Tidy summary: one row per (group..., metric) with mean, ci_low, ci_high and n (the number
    of non-NaN values the mean is taken over). Empty ``group_cols`` summarises the whole table."""
    group_cols = list(group_cols)
    missing = [c for c in group_cols + list(value_cols) if c not in df.columns]
    if missing:
        raise KeyError(f"summarise: columns {missing} are not in the table (has {list(df.columns)})")
    groups = df.groupby(group_cols, sort=True, dropna=False) if group_cols else [((), df)]
    rows = []
    for key, grp in groups:
        key = key if isinstance(key, tuple) else (key,)
        for metric in value_cols:
            vals = pd.to_numeric(grp[metric], errors="coerce").to_numpy(dtype=np.float64)
            mean, low, high = bootstrap_ci(vals, n_resamples=n_resamples, ci=ci, seed=seed)
            rows.append(
                {
                    **dict(zip(group_cols, key)),
                    "metric": metric,
                    "mean": mean,
                    "ci_low": low,
                    "ci_high": high,
                    "n": int((~np.isnan(vals)).sum()),
                }
            )
    return pd.DataFrame(rows, columns=group_cols + ["metric", "mean", "ci_low", "ci_high", "n"])


class PatientBootstrap:
    """Cluster (patient) bootstrap: resample whole patients with replacement, keep all their pairs.

    Pairs of one patient are correlated (same film, same reader), so resampling pairs as if they
    were independent understates the interval (Efron & Tibshirani 1993, ch. 6; Field & Welsh,
    JRSS-B 2007, the "cluster bootstrap"). The resamples are drawn once, as a (n_resamples,
    n_patients) matrix of how often each patient is drawn, so every method, metric and paired
    difference summarised with one instance uses exactly the same resampled patient sets.

    A resample's statistic is the pair mean over the drawn patients, sum_c w_c S_c / sum_c w_c N_c
    (S_c, N_c: sum and count of a patient's finite values), so a patient with many pairs weighs
    by its pairs, as in the point estimate.
    """

    def __init__(self, patients: Sequence, n_resamples: int = 1000, ci: float = 0.95, seed: int = 0):
        if not 0.0 < ci < 1.0:
            raise ValueError(f"evaluation.bootstrap.ci must lie in (0, 1), got {ci}")
        if int(n_resamples) < 1:
            raise ValueError(f"evaluation.bootstrap.n_resamples must be >= 1, got {n_resamples}")
        self.patients = pd.Index(pd.unique(pd.Series(list(patients), dtype=object).astype(str))).sort_values()
        self.ci = ci
        n_resamples, n_patients = int(n_resamples), len(self.patients)
        draws = np.random.default_rng(seed).integers(0, max(n_patients, 1), size=(n_resamples, n_patients))
        offsets = (np.arange(n_resamples) * n_patients)[:, None]
        self.weights = (
            np.bincount((draws + offsets).ravel(), minlength=n_resamples * n_patients)
            .reshape(n_resamples, n_patients)
            .astype(np.float64)
        )

    def _sums(self, values, patients) -> tuple[np.ndarray, np.ndarray]:
        vals = np.asarray(values, dtype=np.float64).ravel()
        codes = self.patients.get_indexer(pd.Series(list(patients), dtype=object).astype(str))
        if len(codes) != len(vals):
            raise ValueError(f"PatientBootstrap: {len(vals)} values but {len(codes)} patient ids")
        if (codes < 0).any():
            raise KeyError(
                "PatientBootstrap: patients outside the resampled set, e.g. "
                f"{np.asarray(list(patients), dtype=object)[codes < 0][:3].tolist()}"
            )
        ok = np.isfinite(vals)
        n_patients = len(self.patients)
        return (
            np.bincount(codes[ok], weights=vals[ok], minlength=n_patients),
            np.bincount(codes[ok], minlength=n_patients).astype(np.float64),
        )

    def resample_means(self, values, patients) -> np.ndarray:
        """(n_resamples,) pair means of the finite values; NaN for a resample with none."""
        sums, counts = self._sums(values, patients)
        num, den = self.weights @ sums, self.weights @ counts
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)

    def mean_ci(self, values, patients) -> tuple[float, float, float, int, int]:
        """(mean, low, high, n pairs, n patients) of the finite values; NaNs when none is finite.
        The interval is the percentile interval of :meth:`resample_means`."""
        sums, counts = self._sums(values, patients)
        n, n_pat = int(counts.sum()), int((counts > 0).sum())
        if n == 0:
            return (np.nan, np.nan, np.nan, 0, 0)
        stats = self.resample_means(values, patients)
        alpha = (1.0 - self.ci) / 2.0
        low, high = np.nanquantile(stats, [alpha, 1.0 - alpha])
        return float(sums.sum() / n), float(low), float(high), n, n_pat


def paired_difference(values, reference) -> np.ndarray:
    """Per-pair difference ``values - reference`` (same pairs, same order); NaN where either is
    undefined, so a difference is only taken over the pairs both sides score."""
    return np.asarray(values, dtype=np.float64) - np.asarray(reference, dtype=np.float64)
