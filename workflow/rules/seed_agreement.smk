# Seed-to-seed agreement of the stochastic methods (RISE, M2IB, NIB, random): each pair explained
# under two seeds with the run's own settings; the jobs are those of seed_agreement_tables() (common.smk),
# which the aggregate rule reads to make tables/seed_agreement.


rule seed_agreement:
    """Spearman rho between each pair's maps under two seeds (evaluation.seed_agreement: seeds, max_pairs), one stochastic method."""
    input:
        unpack(model_input),
        pairs=f"{DS}/pairs.parquet",
        images=f"{DS}/images.npy",
    output:
        table=f"{MD}/metrics/seed_agreement/{{method}}.parquet",
    log:
        f"{MD}/logs/seed_agreement/{{method}}.log",
    benchmark:
        f"{MD}/benchmarks/seed_agreement/{{method}}.tsv"
    priority: 2
    conda:
        "../envs/model.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=1,
    params:
        config=step_config("seed_agreement"),
    script:
        "../scripts/step.py"
