rule provenance:
    """The run's provenance record: seed, config hashes, versions, checkpoint and input-data sha256."""
    input:
        unpack(model_input),
        csv=raw_csv(),
        pairs=f"{DS}/pairs.parquet",
        images=f"{DS}/images.npy",
    output:
        json=f"{MD}/provenance.json",
    log:
        f"{MD}/logs/provenance.log",
    benchmark:
        f"{MD}/benchmarks/provenance.tsv"
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        config=step_config("provenance"),
    script:
        "../scripts/step.py"


rule pipeline_runtime:
    """Per-rule wall times of the run, gathered from every rule's benchmark file (runs last)."""
    input:
        final_targets(),
    output:
        table=f"{MD}/tables/pipeline_runtime.parquet",
        markdown=f"{MD}/tables/pipeline_runtime.md",
        figure=report(figure_outputs("pipeline_runtime"), category="Figures", caption="../report/pipeline_runtime.rst"),
    log:
        f"{MD}/logs/pipeline_runtime.log",
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        config=step_config("pipeline_runtime"),
        benchmark_dirs=[f"{DS}/benchmarks", f"{MD}/benchmarks"],
    script:
        "../scripts/step.py"
