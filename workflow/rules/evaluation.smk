rule evaluate:
    """Per-pair metrics of one method: localisation against the aligned boxes, image/text confidence drop and increase, deletion/insertion AUC."""
    input:
        unpack(model_input),
        pairs=f"{DS}/pairs.parquet",
        images=f"{DS}/images.npy",
        npz=f"{MD}/maps/{{method}}.npz",
        runtime=f"{MD}/maps/{{method}}.parquet",
    output:
        metrics=f"{MD}/metrics/{{method}}.parquet",
    log:
        f"{MD}/logs/evaluate/{{method}}.log",
    benchmark:
        f"{MD}/benchmarks/evaluate/{{method}}.tsv"
    conda:
        "../envs/model.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=1,
    params:
        config=step_config("evaluate"),
    script:
        "../scripts/step.py"


rule counterfactual_truth:
    """Synthetic data only: re-render each evaluation film without each element (lesions, drain, ribs, clavicles); ΔS_e per pair."""
    input:
        unpack(model_input),
        pairs=f"{DS}/pairs.parquet",
        images=f"{DS}/images.npy",
        truth=f"{DS}/raw/synthetic_truth.parquet",
        elements=f"{DS}/raw/synthetic_elements.parquet",
    output:
        truth=f"{MD}/counterfactual_truth.npz",
    log:
        f"{MD}/logs/counterfactual_truth.log",
    benchmark:
        f"{MD}/benchmarks/counterfactual_truth.tsv"
    conda:
        "../envs/model.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=1,
    params:
        config=step_config("counterfactual_truth"),
    script:
        "../scripts/step.py"


rule counterfactual:
    """Synthetic data only: per pair, lesion/drain share of the map, its agreement with ΔS_e, and the shortcut test."""
    input:
        pairs=f"{DS}/pairs.parquet",
        npz=f"{MD}/maps/{{method}}.npz",
        truth=f"{MD}/counterfactual_truth.npz",
        elements=f"{DS}/raw/synthetic_elements.parquet",
    output:
        metrics=f"{MD}/metrics/counterfactual/{{method}}.parquet",
    log:
        f"{MD}/logs/counterfactual/{{method}}.log",
    benchmark:
        f"{MD}/benchmarks/counterfactual/{{method}}.tsv"
    conda:
        "../envs/model.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        config=step_config("counterfactual"),
    script:
        "../scripts/step.py"


rule counterfactual_controls:
    """Synthetic data only: oracle maps (lesion_mask, drain_mask) and map-free rankings (fixed_order, area_order) scored like the methods; the drain-vs-lesion intervention table."""
    input:
        pairs=f"{DS}/pairs.parquet",
        truth=f"{MD}/counterfactual_truth.npz",
    output:
        metrics=f"{MD}/counterfactual_controls.parquet",
        intervention=f"{MD}/tables/shortcut_intervention.parquet",
        intervention_md=f"{MD}/tables/shortcut_intervention.md",
    log:
        f"{MD}/logs/counterfactual_controls.log",
    benchmark:
        f"{MD}/benchmarks/counterfactual_controls.tsv"
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        config=step_config("counterfactual_controls"),
    script:
        "../scripts/step.py"


rule aggregate:
    """One tidy table of every per-pair metric; method x metric tables with patient-bootstrap intervals, paired
    differences to MATEX, random and prior_only, localisation by phrase (location named or not), overall and per finding.
    """
    input:
        metrics=expand(f"{MD}/metrics/{{method}}.parquet", method=config["attribution"]["methods"]),
        roar=f"{MD}/roar/roar_summary.parquet",
        roar_curve=f"{MD}/roar/roar_curve.parquet",
        pairs=f"{DS}/pairs.parquet",
        sanity=expand(f"{MD}/sanity/{{method}}.parquet", method=sanity_methods()),
        counterfactual=counterfactual_metrics(),
        seed_agreement=seed_agreement_tables(),
    output:
        tidy=f"{MD}/tables/metrics_tidy.parquet",
        summary=f"{MD}/tables/summary.parquet",
        markdown=f"{MD}/tables/results.md",
        html=report(f"{MD}/tables/results.html", category="Tables", caption="../report/tables.rst"),
        latex=f"{MD}/tables/results.tex",
        roar=f"{MD}/tables/roar_plus.parquet",
        localisation=f"{MD}/tables/localisation_by_phrase.parquet",
        seed_agreement=f"{MD}/tables/seed_agreement.parquet",
        seed_agreement_md=f"{MD}/tables/seed_agreement.md",
    log:
        f"{MD}/logs/aggregate.log",
    benchmark:
        f"{MD}/benchmarks/aggregate.tsv"
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        config=step_config("aggregate"),
    script:
        "../scripts/step.py"


rule sanity:
    """Cascading re-initialisation of every parameter tensor (image tower top down to the stem, then the text tower, then both = "full"): |Spearman rho| and SSIM of each map with the trained model's."""
    input:
        unpack(model_input),
        pairs=f"{DS}/pairs.parquet",
        images=f"{DS}/images.npy",
    output:
        table=f"{MD}/sanity/{{method}}.parquet",
        maps=f"{MD}/sanity/{{method}}.maps.npz",
    log:
        f"{MD}/logs/sanity/{{method}}.log",
    benchmark:
        f"{MD}/benchmarks/sanity/{{method}}.tsv"
    conda:
        "../envs/model.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=1,
    params:
        config=step_config("sanity"),
    script:
        "../scripts/step.py"


rule ablation:
    """MATEX fusion weights varied one at a time, and the prior-strength sweep, on a fixed set of pairs."""
    input:
        unpack(model_input),
        pairs=f"{DS}/pairs.parquet",
        images=f"{DS}/images.npy",
    output:
        table=f"{MD}/ablation/ablation.parquet",
    log:
        f"{MD}/logs/ablation.log",
    benchmark:
        f"{MD}/benchmarks/ablation.tsv"
    priority: 1
    conda:
        "../envs/model.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=1,
    params:
        config=step_config("ablation"),
    script:
        "../scripts/step.py"
