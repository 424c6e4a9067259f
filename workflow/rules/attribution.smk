N_SHARDS = int(config["attribution"]["shards"])
SHARDS = range(N_SHARDS)
# One shard: the attribute job writes the method's artifacts itself. Several: each shard job writes a
# temporary part and merge_attribution joins them (identical to the one-shard artifacts).
ATTRIBUTE_OUT = f"{MD}/maps/shards/{{method}}.{{shard}}" if N_SHARDS > 1 else f"{MD}/maps/{{method}}"
ATTRIBUTE_JOB = "{method}.{shard}" if N_SHARDS > 1 else "{method}"


rule attribute:
    """Attribution maps of one method (for one shard of the evaluation pairs when sharded); one model
    forward/backward per batch."""
    input:
        unpack(model_input),
        pairs=f"{DS}/pairs.parquet",
        images=f"{DS}/images.npy",
    output:
        npz=temp(f"{ATTRIBUTE_OUT}.npz") if N_SHARDS > 1 else f"{ATTRIBUTE_OUT}.npz",
        parquet=temp(f"{ATTRIBUTE_OUT}.parquet") if N_SHARDS > 1 else f"{ATTRIBUTE_OUT}.parquet",
        audit=temp(f"{ATTRIBUTE_OUT}.audit.npz") if N_SHARDS > 1 else f"{ATTRIBUTE_OUT}.audit.npz",
    log:
        f"{MD}/logs/attribute/{ATTRIBUTE_JOB}.log",
    benchmark:
        f"{MD}/benchmarks/attribute/{ATTRIBUTE_JOB}.tsv"
    priority: 1
    conda:
        "../envs/model.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=1,
    params:
        config=step_config("attribute"),
    script:
        "../scripts/step.py"


if N_SHARDS > 1:

    rule merge_attribution:
        """Join a method's shards into maps/{method}.npz and maps/{method}.parquet (identical to an unsharded run)."""
        input:
            npz=expand(f"{MD}/maps/shards/{{{{method}}}}.{{shard}}.npz", shard=SHARDS),
            parquet=expand(f"{MD}/maps/shards/{{{{method}}}}.{{shard}}.parquet", shard=SHARDS),
            audit=expand(f"{MD}/maps/shards/{{{{method}}}}.{{shard}}.audit.npz", shard=SHARDS),
        output:
            npz=f"{MD}/maps/{{method}}.npz",
            parquet=f"{MD}/maps/{{method}}.parquet",
            audit=f"{MD}/maps/{{method}}.audit.npz",
        log:
            f"{MD}/logs/merge_attribution/{{method}}.log",
        benchmark:
            f"{MD}/benchmarks/merge_attribution/{{method}}.tsv"
        conda:
            "../envs/report.yaml"
        threads: 1
        resources:
            mem_mb=4000,
            runtime=30,
        params:
            config=step_config("merge_attribution"),
        script:
            "../scripts/step.py"
