"""Percentile-bootstrap confidence intervals for per-pair metrics (every table carries them,
DESIGN.md section 5)."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd

# Resampled values held in memory at once: n_resamples x n is drawn in row chunks below this size.
_MAX_CELLS = 20_000_000


def bootstrap_ci(values, n_resamples: int = 1000, ci: float = 0.95, seed: int = 0,
                 statistic: Callable[..., np.ndarray] = np.nanmean) -> tuple[float, float, float]:
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
    stats = np.concatenate([np.asarray(statistic(vals[idx[i:i + rows_per_chunk]], axis=1), dtype=np.float64)
                            for i in range(0, idx.shape[0], rows_per_chunk)])
    alpha = (1.0 - ci) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    return estimate, float(low), float(high)


def summarise(df: pd.DataFrame, group_cols: Sequence[str], value_cols: Sequence[str], n_resamples: int = 1000,
              ci: float = 0.95, seed: int = 0) -> pd.DataFrame:
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
            rows.append({**dict(zip(group_cols, key)), "metric": metric, "mean": mean, "ci_low": low,
                         "ci_high": high, "n": int((~np.isnan(vals)).sum())})
    return pd.DataFrame(rows, columns=group_cols + ["metric", "mean", "ci_low", "ci_high", "n"])
