"""The ROAR curve (measure of the retrained model on degraded validation pairs against the removed
fraction k) and its area, per method; the "ROAR AUC" table column and its caption.

Area = trapezoid rule over k in fractions (k = 0.1 ... 0.9, plus k = 0, the clean retrain shared by
every method, when it was run). Every method is measured on the same k grid, so areas compare
directly; a curve missing a k of the grid has no area (NaN), never one over a shorter range.
For accuracy (zero-shot, retrieval) a smaller area means the removed pixels mattered more; for the
validation loss a larger one does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .retrain import MEASURES

# the measure the table reports, and its label (lower = the method's top pixels carried the task)
TABLE_MEASURE = "zero_shot_accuracy"
TABLE_COLUMN = "ROAR AUC ↓"


def roar_auc(k: Sequence[float], values: Sequence[float]) -> float:
    """Trapezoid area under ``values`` against ``k`` (sorted by k); NaN with fewer than two points
    or any non-finite value."""
    k = np.asarray(k, dtype=float)
    v = np.asarray(values, dtype=float)
    if len(k) != len(v):
        raise ValueError(f"roar_auc: {len(k)} k values but {len(v)} measures")
    if len(k) < 2 or not np.isfinite(v).all() or not np.isfinite(k).all():
        return float("nan")
    order = np.argsort(k, kind="stable")
    k, v = k[order], v[order]
    if np.any(np.diff(k) == 0):
        raise ValueError(f"roar_auc: repeated k in {k.tolist()}")
    return float(np.sum(np.diff(k) * (v[1:] + v[:-1]) / 2.0))


def roar_curve(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (method, k): mean and sd over seeds of every measure. The clean retrain (variant
    ``clean``, k = 0) is each method's k = 0 point, paired by seed. Every row also carries its
    method's area statistics over seeds (:func:`auc_over_seeds` of the table measure: ``auc_mean``,
    ``auc_lo``/``auc_hi`` the 95 % t-interval, ``auc_min``/``auc_max``, ``auc_n_seeds``; the same on
    each k row), so the results table shows the interval from this one file."""
    curve = _mean_curve(runs)
    stats = auc_over_seeds(per_seed_auc(runs))
    if stats.empty:
        return curve
    return curve.merge(stats, on="method", how="left")


def _long_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with a ``method`` column: each method's rows plus the clean (k = 0) rows of every seed."""
    clean = runs[runs["variant"] == "clean"]
    methods = [v for v in dict.fromkeys(runs["variant"]) if v != "clean"]
    parts = [runs[runs["variant"] == m].assign(method=m) for m in methods]
    parts += [clean.assign(method=m) for m in methods]
    if not methods:  # only the clean run: its own curve of one point
        parts = [clean.assign(method="clean")]
    return pd.concat(parts, ignore_index=True)


def per_seed_auc(runs: pd.DataFrame, k_grid: Sequence[float] | None = None) -> pd.DataFrame:
    """One row per (method, seed): the area under each measure's curve of that retraining seed (the
    clean run of the same seed is its k = 0 point), over the common k grid (default: every k of the
    runs); NaN where the seed's curve misses a k. The ROAR table with ``method`` and ``seed`` columns."""
    long = _long_runs(runs)
    grid = sorted(set(long["k"])) if k_grid is None else sorted(float(k) for k in k_grid)
    measures = [m for m in MEASURES if m in long.columns]
    rows = []
    for (method, seed), grp in long.groupby(["method", "seed"], sort=True):
        by_k = grp.groupby("k")[measures].mean()
        row: dict[str, Any] = {
            "method": method,
            "seed": int(seed),
            "k_min": grid[0],
            "k_max": grid[-1],
            "n_k": len(grid),
        }
        for m in measures:
            vals = [by_k[m].get(k, np.nan) if k in by_k.index else np.nan for k in grid]
            row[f"auc_{m}"] = roar_auc(grid, vals)
        rows.append(row)
    return pd.DataFrame(rows)


def auc_over_seeds(
    per_seed: pd.DataFrame, measure: str = "auc_" + "zero_shot_accuracy", ci: float = 0.95
) -> pd.DataFrame:
    """Per method: mean of ``measure`` over seeds, its t-interval (mean ± t_{(1+ci)/2, n-1} sd/sqrt(n);
    NaN with one seed), min and max, and the number of seeds with an area."""
    from scipy import stats

    if per_seed.empty or measure not in per_seed:
        return pd.DataFrame(columns=["method", "auc_mean", "auc_lo", "auc_hi", "auc_min", "auc_max", "auc_n_seeds"])
    rows = []
    for method, grp in per_seed.groupby("method", sort=False):
        v = grp[measure].to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        n = len(v)
        mean = float(v.mean()) if n else float("nan")
        half = float(stats.t.ppf((1 + ci) / 2, n - 1) * v.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
        rows.append(
            {
                "method": method,
                "auc_mean": mean,
                "auc_lo": mean - half,
                "auc_hi": mean + half,
                "auc_min": float(v.min()) if n else float("nan"),
                "auc_max": float(v.max()) if n else float("nan"),
                "auc_n_seeds": n,
            }
        )
    return pd.DataFrame(rows)


def _mean_curve(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (method, k): mean and sd over seeds of every measure, with chance levels."""
    runs = runs.copy()
    dup = runs[runs.duplicated(["variant", "k", "seed"], keep=False)]
    if len(dup):
        raise ValueError(
            f"ROAR: more than one run per (variant, k, seed): {dup[['variant', 'k', 'seed']].values.tolist()}"
        )
    long = _long_runs(runs)
    measures = [m for m in MEASURES if m in long.columns]
    rows = []
    for (method, k), grp in long.groupby(["method", "k"], sort=True):
        row: dict[str, Any] = {
            "method": method,
            "k": float(k),
            "k_percent": int(round(100 * k)),
            "n_seeds": int(grp["seed"].nunique()),
        }
        for m in measures:
            vals = grp[m].to_numpy(dtype=float)
            row[m] = float(np.mean(vals))
            row[f"{m}_sd"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else float("nan")
        for chance in ("zero_shot_chance", "r_at_1_chance", "r_at_5_chance"):
            if chance in grp:
                row[chance] = float(grp[chance].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def auc_table(curve: pd.DataFrame, k_grid: Sequence[float] | None = None) -> pd.DataFrame:
    """One row per method: the area under each measure's curve over the common k grid (default:
    every k any method has). A method missing a k of the grid gets NaN."""
    grid = sorted(set(curve["k"])) if k_grid is None else sorted(float(k) for k in k_grid)
    measures = [m for m in MEASURES if m in curve.columns]
    rows = []
    for method, grp in curve.groupby("method", sort=False):
        grp = grp.set_index("k")
        complete = all(any(np.isclose(k, grp.index)) for k in grid)
        row = {"method": method, "k_min": grid[0], "k_max": grid[-1], "n_k": len(grid)}
        for m in measures:
            row[f"auc_{m}"] = (
                roar_auc(grid, [grp.loc[grp.index[np.isclose(grp.index, k)][0], m] for k in grid])
                if complete
                else float("nan")
            )
        rows.append(row)
    return pd.DataFrame(rows)


def with_roar_auc(table: pd.DataFrame, curve: pd.DataFrame) -> pd.DataFrame:
    """``table`` (methods x columns) with a "ROAR AUC ↓" column: area under the zero-shot accuracy
    curve x100 (k as a fraction), as "mean [t-interval]" over retraining seeds when the curve carries
    :func:`auc_over_seeds` columns and has more than one seed, else the area of the mean curve; "–"
    for a method without a curve. Inserted after the confidence and ROAR+ columns (the last of the
    image and text sides) when present, else appended."""
    aucs = auc_table(curve).set_index("method")[f"auc_{TABLE_MEASURE}"]
    stats = curve.drop_duplicates("method").set_index("method") if "auc_mean" in curve else None

    def cell(m: str) -> str:
        if stats is not None and m in stats.index and stats.at[m, "auc_n_seeds"] > 1:
            r = stats.loc[m]
            return f"{100 * r['auc_mean']:.2f} [{100 * r['auc_lo']:.2f}, {100 * r['auc_hi']:.2f}]"
        return f"{100 * aucs[m]:.2f}" if m in aucs.index and np.isfinite(aucs[m]) else "–"

    col = [cell(m) for m in table.index]
    table = table.copy()
    after = [i for i, c in enumerate(table.columns) if "ROAR+" in str(c) or " conf. " in str(c)]
    table.insert(after[-1] + 1 if after else len(table.columns), TABLE_COLUMN, col)
    return table


FULL_FRACTIONS = [0.1, 0.3, 0.5, 0.7, 0.9]  # Hooker et al.'s k grid
FULL_SEEDS = 5  # config/mscxr.yaml


def roar_note(cfg: Mapping[str, Any], curve: pd.DataFrame | None = None) -> str:
    """The caption line of the ROAR AUC column: the protocol actually run (fill, k values, methods,
    seeds, epochs, training pairs), and, for a reduced one, each setting that differs from the full
    protocol (config/mscxr.yaml)."""
    from .imputation import FillSpec
    from .retrain import retrain_mode

    rt = cfg["roar"]["retrain"]
    ks = sorted(float(k) for k in rt["fractions"])
    grid = ([0.0] if rt.get("include_clean", True) else []) + ks
    mode, pairs, n_seeds = retrain_mode(cfg), cfg["roar"].get("train_pairs"), len(rt["seeds"])
    how = (
        "retrained from the demo model's initialisation with its recipe"
        if mode == "from_init"
        else f"fine-tuned from the explained model at lr {float(rt['finetune_lr']):g}"
    )
    methods = list(dict.fromkeys(list(rt["methods"]) + ["random"]))
    spread = (
        f"mean [95 % t-interval] over {n_seeds} retraining seeds (the degraded images drawn once per method)"
        if n_seeds > 1
        else "1 retraining seed, no interval"
    )
    reduced = []
    if ks != FULL_FRACTIONS:
        reduced.append(f"k = {', '.join(f'{round(100 * k)}' for k in ks)} % (full: 10, 30, 50, 70, 90 %)")
    if pairs is not None:
        reduced.append(f"{pairs} training pairs (full: all)")
    if mode == "finetune" and cfg["model"].get("source", "demo") == "demo":
        reduced.append("the demo model fine-tuned, not retrained from its initialisation")
    if n_seeds < FULL_SEEDS:
        reduced.append(f"{n_seeds} seed(s) (full: {FULL_SEEDS})")
    return (
        f"ROAR AUC (Hooker et al. 2019): train and validation images lose the top-k % pixels of each map "
        f"(fill: {FillSpec.from_config(cfg['roar']).describe()}), the model is {how} for "
        f"{int(rt['epochs'])} epoch(s) on {'all' if pairs is None else pairs} training pairs, "
        f"and its zero-shot accuracy on the degraded validation pairs is integrated over "
        f"k = {', '.join(f'{round(100 * k)}' for k in grid)} % (trapezoid, k as a fraction, x100; lower = "
        f"the removed pixels mattered more); {spread}; methods: {', '.join(methods)}; "
        f"'random' = smooth random maps (patch-grid noise, upsampled). "
        + (f"Reduced protocol: {'; '.join(reduced)}." if reduced else "Full protocol.")
    )
