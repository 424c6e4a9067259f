"""Steps of workflow/rules/provenance.smk: provenance record and pipeline runtime."""

from __future__ import annotations

from .core import base_meta, step


@step
def provenance(cfg, input, output, params, wildcards, threads):
    from ..io import write_json
    from .records import provenance_record

    write_json(output.json, provenance_record(cfg, {k: v for k, v in input.items()}))


@step
def pipeline_runtime(cfg, input, output, params, wildcards, threads):
    from ..figures.plots import pipeline_runtime_bars, save
    from ..io import write_parquet, write_text
    from ..metrics.runtime import collect_benchmarks, runtime_markdown

    df = collect_benchmarks(params.benchmark_dirs)
    write_parquet(output.table, df, base_meta(cfg, "data", "input", "model", "attribution", "evaluation", "roar"))
    write_text(output.markdown, runtime_markdown(df))
    save(pipeline_runtime_bars(df), output.figure)
