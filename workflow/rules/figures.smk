# Each figure is one rule: rebuild one alone with e.g. `snakemake results/synthetic/demo/figures/qualitative.png`.


rule figure_qualitative:
    """Image with the radiologist box, and every method's map overlaid, for fixed pairs per finding."""
    input:
        pairs=f"{DS}/pairs.parquet",
        images=f"{DS}/images.npy",
        maps=expand(f"{MD}/maps/{{method}}.npz", method=config["attribution"]["methods"]),
    output:
        report(figure_outputs("qualitative"), category="Figures", caption="../report/qualitative.rst"),
    log:
        f"{MD}/logs/figure_qualitative.log",
    benchmark:
        f"{MD}/benchmarks/figure_qualitative.tsv"
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        config=step_config("figure_qualitative"),
    script:
        "../scripts/step.py"


rule figure_metrics:
    """Bar charts of every metric with bootstrap intervals."""
    input:
        summary=f"{MD}/tables/summary.parquet",
    output:
        report(figure_outputs("metrics"), category="Figures", caption="../report/metrics.rst"),
    log:
        f"{MD}/logs/figure_metrics.log",
    benchmark:
        f"{MD}/benchmarks/figure_metrics.tsv"
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        config=step_config("figure_metrics"),
    script:
        "../scripts/step.py"


rule figure_ablation:
    """Fusion-weight ablation curves and the prior-strength sweep."""
    input:
        table=f"{MD}/ablation/ablation.parquet",
    output:
        weights=report(figure_outputs("ablation_weights"), category="Figures", caption="../report/ablation.rst"),
        prior=report(figure_outputs("ablation_prior_strength"), category="Figures", caption="../report/ablation.rst"),
    log:
        f"{MD}/logs/figure_ablation.log",
    benchmark:
        f"{MD}/benchmarks/figure_ablation.tsv"
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        config=step_config("figure_ablation"),
    script:
        "../scripts/step.py"


rule figure_sanity:
    """Sanity-check curves: |Spearman rho| and SSIM of the maps as the heads, then the blocks, are randomised from the top."""
    input:
        tables=expand(f"{MD}/sanity/{{method}}.parquet", method=sanity_methods()),
    output:
        report(figure_outputs("sanity"), category="Figures", caption="../report/sanity.rst"),
    log:
        f"{MD}/logs/figure_sanity.log",
    benchmark:
        f"{MD}/benchmarks/figure_sanity.tsv"
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        config=step_config("figure_sanity"),
    script:
        "../scripts/step.py"


rule figure_runtime:
    """Attribution runtime per pair and method."""
    input:
        tables=expand(f"{MD}/maps/{{method}}.parquet", method=config["attribution"]["methods"]),
    output:
        report(figure_outputs("runtime"), category="Figures", caption="../report/runtime.rst"),
    log:
        f"{MD}/logs/figure_runtime.log",
    benchmark:
        f"{MD}/benchmarks/figure_runtime.tsv"
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        config=step_config("figure_runtime"),
    script:
        "../scripts/step.py"


rule figure_roar:
    """ROAR curves: the retrained model's zero-shot accuracy and loss on degraded validation pairs against k."""
    input:
        curve=f"{MD}/roar/roar_curve.parquet",
    output:
        report(figure_outputs("roar_curve"), category="Figures", caption="../report/roar.rst"),
    log:
        f"{MD}/logs/figure_roar.log",
    benchmark:
        f"{MD}/benchmarks/figure_roar.tsv"
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        config=step_config("figure_roar"),
    script:
        "../scripts/step.py"


rule figure_training:
    """Learning curves of the demo model: loss, zero-shot accuracy, R@5 and laterality per epoch."""
    input:
        log_json=f"{MD}/train_log.json",
    output:
        report(figure_outputs("training"), category="Figures", caption="../report/training.rst"),
    log:
        f"{MD}/logs/figure_training.log",
    benchmark:
        f"{MD}/benchmarks/figure_training.tsv"
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        config=step_config("figure_training"),
    script:
        "../scripts/step.py"


rule figure_counterfactual:
    """What each method sees: map mass on the lesion vs on the chest drain (synthetic data only)."""
    input:
        metrics=counterfactual_metrics(),
    output:
        report(figure_outputs("counterfactual"), category="Figures", caption="../report/counterfactual.rst"),
    log:
        f"{MD}/logs/figure_counterfactual.log",
    benchmark:
        f"{MD}/benchmarks/figure_counterfactual.tsv"
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        config=step_config("figure_counterfactual"),
    script:
        "../scripts/step.py"
