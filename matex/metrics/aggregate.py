"""Aggregate per-pair metrics of every method into one tidy table and summary tables with
bootstrap intervals, overall and per finding category (Markdown and LaTeX)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

# (column, label, scale): confidence metrics are reported x100 as in M2IB and MATEX.
METRICS: list[tuple[str, str, float]] = [
    ("img_conf_drop", "Img conf. drop ↓", 100.0),
    ("img_conf_increase", "Img conf. incr. ↑", 100.0),
    ("txt_conf_drop", "Txt conf. drop ↓", 100.0),
    ("txt_conf_increase", "Txt conf. incr. ↑", 100.0),
    ("pointing_game", "Pointing ↑", 100.0),
    ("energy_in_box", "Energy in box ↑", 100.0),
    ("iou_top5", "IoU@5% ↑", 100.0),
    ("auroc", "AUROC ↑", 100.0),
    ("sanity_spearman", "Sanity ρ ↓", 1.0),
    # counterfactual ground truth (synthetic data only; metrics/counterfactual.py)
    ("lesion_share", "Lesion share ↑", 100.0),
    ("drain_share", "Drain share", 100.0),
    ("counterfactual_agreement", "CF agreement ρ ↑", 1.0),
    ("shortcut_test", "Shortcut test ↑", 100.0),
    ("runtime_ms", "ms / pair", 1.0),
]


def tidy_metrics(per_method: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Long format: pair_id, method, category, metric, value."""
    wide = pd.concat(per_method, ignore_index=True)
    value_cols = [c for c, _, _ in METRICS if c in wide.columns]
    return wide.melt(id_vars=["pair_id", "method", "category"], value_vars=value_cols,
                     var_name="metric", value_name="value")


def summarise_tidy(tidy: pd.DataFrame, by: Sequence[str], n_resamples: int, ci: float, seed: int) -> pd.DataFrame:
    """mean, bootstrap interval and n per (by..., metric), scaled for reporting."""
    from .stats import bootstrap_ci

    scale = {c: s for c, _, s in METRICS}
    rows = []
    for key, grp in tidy.groupby(list(by) + ["metric"], sort=True):
        vals = grp["value"].to_numpy(dtype=float)
        vals = vals[np.isfinite(vals)]
        est, lo, hi = bootstrap_ci(vals, n_resamples=n_resamples, ci=ci, seed=seed) if len(vals) else (np.nan,) * 3
        k = scale.get(key[-1], 1.0)
        rows.append(dict(zip(list(by) + ["metric"], key), mean=est * k, ci_low=lo * k, ci_high=hi * k, n=len(vals)))
    return pd.DataFrame(rows)


def _cell(r) -> str:
    if not np.isfinite(r["mean"]):
        return "–"
    return f"{r['mean']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]"


def wide_table(summary: pd.DataFrame, method_order: Sequence[str]) -> pd.DataFrame:
    """Methods (rows) x metrics (columns), cells 'mean [low, high]', paper's column order."""
    labels = {c: l for c, l, _ in METRICS}
    present = [c for c, _, _ in METRICS if c in set(summary["metric"])]
    table = summary.assign(cell=summary.apply(_cell, axis=1)).pivot(index="method", columns="metric", values="cell")
    order = [m for m in method_order if m in table.index] + [m for m in table.index if m not in method_order]
    return table.loc[order, present].rename(columns=labels).fillna("–")


def to_markdown(table: pd.DataFrame, title: str) -> str:
    cols = ["method"] + list(table.columns)
    lines = [f"### {title}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for method, row in table.iterrows():
        lines.append("| " + " | ".join([str(method)] + [str(v) for v in row]) + " |")
    return "\n".join(lines) + "\n"


def to_latex(table: pd.DataFrame, caption: str) -> str:
    esc = lambda s: str(s).replace("%", r"\%").replace("_", r"\_").replace("↑", r"$\uparrow$").replace("↓", r"$\downarrow$")
    cols = ["Method"] + [esc(c) for c in table.columns]
    body = [" & ".join([esc(m)] + [esc(v) for v in row]) + r" \\" for m, row in table.iterrows()]
    return "\n".join([r"\begin{table}[t]", r"\centering\small", f"\\caption{{{esc(caption)}}}",
                      r"\begin{tabular}{l" + "c" * len(table.columns) + "}", r"\toprule",
                      " & ".join(cols) + r" \\", r"\midrule", *body, r"\bottomrule", r"\end{tabular}",
                      r"\end{table}"]) + "\n"


def to_html(tables: Sequence[tuple[str, pd.DataFrame]], title: str, notes: Sequence[str] = ()) -> str:
    """A standalone HTML page of the given (title, table) pairs, for the Snakemake report."""
    import html

    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;font-size:13px}table{border-collapse:collapse;margin-bottom:1.5em}"
             "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}th:first-child,td:first-child"
             "{text-align:left}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    parts += [f"<p>{html.escape(n)}</p>" for n in notes]
    for name, table in tables:
        parts.append(f"<h3>{html.escape(name)}</h3>")
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


