ROAR_METHODS = config["roar"]["methods"]
# "random" is the random-removal control (no maps needed), whether or not it is listed as a method.
ROAR_VARIANTS = list(dict.fromkeys(ROAR_METHODS + ["clean", "random"]))
# Text ROAR+ (top word tokens removed): the listed methods plus the random-removal control, none when
# the list is empty. Both sides are measured against the same clean run of each seed.
ROAR_TEXT_METHODS = config["roar"].get("text_methods") or []
ROAR_TEXT_VARIANTS = list(dict.fromkeys(ROAR_TEXT_METHODS + ["random"])) if ROAR_TEXT_METHODS else []


rule attribute_roar_train:
    """Maps of the ROAR+ training pairs for one method (the pixels that will be removed)."""
    input:
        unpack(model_input),
        pairs=f"{DS}/pairs.parquet",
        images=f"{DS}/images.npy",
    output:
        npz=f"{MD}/roar/maps/{{method}}.npz",
        parquet=f"{MD}/roar/maps/{{method}}.parquet",
    log:
        f"{MD}/logs/attribute_roar_train/{{method}}.log",
    benchmark:
        f"{MD}/benchmarks/attribute_roar_train/{{method}}.tsv"
    conda:
        "../envs/model.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=1,
    params:
        config=step_config("attribute_roar_train"),
    script:
        "../scripts/step.py"


rule roar_finetune:
    """Fine-tune the CLIP on degraded (or clean) training pairs; validation contrastive loss on untouched pairs."""
    input:
        unpack(roar_inputs),
    output:
        json=f"{MD}/roar/runs/{{variant}}.seed{{seed}}.json",
    log:
        f"{MD}/logs/roar_finetune/{{variant}}.seed{{seed}}.log",
    benchmark:
        f"{MD}/benchmarks/roar_finetune/{{variant}}.seed{{seed}}.tsv"
    wildcard_constraints:
        variant=r"[A-Za-z0-9_]+",
        seed=r"\d+",
    conda:
        "../envs/model.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=1,
    params:
        config=step_config("roar_finetune"),
    script:
        "../scripts/step.py"


rule roar_finetune_text:
    """Fine-tune the CLIP on training pairs whose texts lost their top word tokens (images untouched)."""
    input:
        unpack(roar_inputs),
    output:
        json=f"{MD}/roar/runs/text/{{variant}}.seed{{seed}}.json",
    log:
        f"{MD}/logs/roar_finetune_text/{{variant}}.seed{{seed}}.log",
    benchmark:
        f"{MD}/benchmarks/roar_finetune_text/{{variant}}.seed{{seed}}.tsv"
    wildcard_constraints:
        variant=r"[A-Za-z0-9_]+",
        seed=r"\d+",
    conda:
        "../envs/model.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=1,
    params:
        config=step_config("roar_finetune_text"),
    script:
        "../scripts/step.py"


rule roar_summary:
    """ROAR+ = 100 (L_deg - L_clean) / L_clean per modality (image, text) and method, mean and sd over seeds."""
    input:
        runs=expand(
            f"{MD}/roar/runs/{{variant}}.seed{{seed}}.json", variant=ROAR_VARIANTS, seed=config["roar"]["seeds"]
        ),
        text_runs=expand(
            f"{MD}/roar/runs/text/{{variant}}.seed{{seed}}.json",
            variant=ROAR_TEXT_VARIANTS,
            seed=config["roar"]["seeds"],
        ),
    output:
        runs=f"{MD}/roar/roar_runs.parquet",
        summary=f"{MD}/roar/roar_summary.parquet",
    log:
        f"{MD}/logs/roar_summary.log",
    benchmark:
        f"{MD}/benchmarks/roar_summary.tsv"
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        config=step_config("roar_summary"),
    script:
        "../scripts/step.py"


# ROAR (Hooker et al. 2019): train AND validation images degraded by the same method at every k of
# roar.retrain.fractions, the model retrained (demo: from its initialisation; hub/checkpoint: fine-tuned).
# "random" is the smooth-random-map control; "clean" (k = 0) is the start every curve shares.
RETRAIN = config["roar"]["retrain"]
RETRAIN_VARIANTS = list(
    dict.fromkeys(RETRAIN["methods"] + ["random"] + (["clean"] if RETRAIN.get("include_clean", True) else []))
)


rule roar_retrain:
    """ROAR curves of one variant: degrade train and validation pairs at each k once, retrain and measure once per seed."""
    input:
        unpack(roar_retrain_inputs),
    output:
        json=f"{MD}/roar/retrain/{{variant}}.json",
        samples=f"{MD}/roar/retrain/{{variant}}.samples.npz",
    log:
        f"{MD}/logs/roar_retrain/{{variant}}.log",
    benchmark:
        f"{MD}/benchmarks/roar_retrain/{{variant}}.tsv"
    wildcard_constraints:
        variant=r"[A-Za-z0-9_]+",
    priority: 2
    conda:
        "../envs/model.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=480,
        gpu=1,
    params:
        config=step_config("roar_retrain"),
    script:
        "../scripts/step.py"


rule roar_curve:
    """ROAR curves (per method and k, mean/sd over seeds), their areas over k (trapezoid), and the ROAR table (area per method and seed)."""
    input:
        runs=expand(f"{MD}/roar/retrain/{{variant}}.json", variant=RETRAIN_VARIANTS),
    output:
        runs=f"{MD}/roar/roar_retrain_runs.parquet",
        curve=f"{MD}/roar/roar_curve.parquet",
        auc=f"{MD}/roar/roar_auc.parquet",
        table=f"{MD}/tables/roar.parquet",
    log:
        f"{MD}/logs/roar_curve.log",
    benchmark:
        f"{MD}/benchmarks/roar_curve.tsv"
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        config=step_config("roar_curve"),
    script:
        "../scripts/step.py"
