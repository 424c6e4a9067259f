"""Per-rule wall times of a pipeline run, from the files of Snakemake's ``benchmark:`` directive.

Each rule writes ``benchmarks/<rule>.tsv`` or ``benchmarks/<rule>/<wildcards>.tsv`` (columns ``s``,
``max_rss``, ...); this module gathers them into one table per job and a per-rule summary."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd


def collect_benchmarks(dirs: Sequence[str | Path]) -> pd.DataFrame:
    """One row per job: rule, job (wildcards), wall seconds, peak RSS (MB), mean CPU load (%)."""
    rows = []
    for d in dirs:
        d = Path(d)
        for tsv in sorted(d.rglob("*.tsv")):
            rel = tsv.relative_to(d)
            rule = rel.parts[0] if len(rel.parts) > 1 else tsv.stem
            job = tsv.stem if len(rel.parts) > 1 else ""
            bench = pd.read_csv(tsv, sep="\t")
            if bench.empty:
                continue
            last = bench.iloc[-1]
            rows.append(
                {
                    "rule": rule,
                    "job": job,
                    "wall_s": float(last["s"]),
                    "max_rss_mb": float(last["max_rss"]) if "max_rss" in bench else float("nan"),
                    "cpu_load": float(last["mean_load"]) if "mean_load" in bench else float("nan"),
                }
            )
    return pd.DataFrame(rows, columns=["rule", "job", "wall_s", "max_rss_mb", "cpu_load"])


def per_rule(df: pd.DataFrame) -> pd.DataFrame:
    """Jobs, total and largest wall time and peak memory per rule, slowest rule first."""
    g = df.groupby("rule")
    out = pd.DataFrame(
        {
            "jobs": g.size(),
            "total_s": g["wall_s"].sum(),
            "max_job_s": g["wall_s"].max(),
            "max_rss_mb": g["max_rss_mb"].max(),
        }
    )
    return out.sort_values("total_s", ascending=False)


def runtime_markdown(df: pd.DataFrame) -> str:
    """A Markdown table of :func:`per_rule` plus the sum of all job times (CPU-serial time)."""
    table = per_rule(df)
    lines = [
        "# Pipeline wall time per rule (Snakemake benchmark files)",
        "",
        f"{len(df)} jobs, summed job wall time {df['wall_s'].sum():.0f} s "
        "(jobs run in parallel, so the run's elapsed time is shorter).",
        "",
        "| rule | jobs | total s | largest job s | peak RSS MB |",
        "|---|---|---|---|---|",
    ]
    for rule, r in table.iterrows():
        lines.append(f"| {rule} | {int(r.jobs)} | {r.total_s:.1f} | {r.max_job_s:.1f} | {r.max_rss_mb:.0f} |")
    return "\n".join(lines) + "\n"
