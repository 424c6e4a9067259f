"""Table cells and renderers: 'mean [low, high]' cells with their n and dagger, the methods x
metrics pivot, the ROAR+ columns, and Markdown, LaTeX and HTML output of a table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .columns import DAGGER, METRICS, MIN_CELL_PAIRS, MIN_INTERVAL_PAIRS


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
    A method without a run on a side shows "–"; a side that was not run at all (e.g. the demo's empty
    ``roar.text_methods``) gets no column."""
    table = table.copy()
    pos = 0
    for modality, prefix in (("image", "Img"), ("text", "Txt")):
        side = roar[roar["modality"] == modality].set_index("method")
        if side.empty:
            continue
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
