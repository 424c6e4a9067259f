SHARDS = range(int(config["attribution"]["shards"]))


rule attribute:
    """Attribution maps of one method for one shard of the evaluation pairs (one model forward/backward per batch)."""
    input:
        unpack(model_input),
        pairs=f"{DS}/pairs.parquet",
        images=f"{DS}/images.npy",
    output:
        npz=temp(f"{MD}/maps/shards/{{method}}.{{shard}}.npz"),
        parquet=temp(f"{MD}/maps/shards/{{method}}.{{shard}}.parquet"),
    log:
        f"{MD}/logs/attribute/{{method}}.{{shard}}.log",
    benchmark:
        f"{MD}/benchmarks/attribute/{{method}}.{{shard}}.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=1,
    conda:
        "../../environment.yml"
    script:
        "../scripts/step.py"


rule merge_attribution:
    """Join a method's shards into maps/{method}.npz and maps/{method}.parquet (identical to an unsharded run)."""
    input:
        npz=expand(f"{MD}/maps/shards/{{{{method}}}}.{{shard}}.npz", shard=SHARDS),
        parquet=expand(f"{MD}/maps/shards/{{{{method}}}}.{{shard}}.parquet", shard=SHARDS),
    output:
        npz=f"{MD}/maps/{{method}}.npz",
        parquet=f"{MD}/maps/{{method}}.parquet",
    log:
        f"{MD}/logs/merge_attribution/{{method}}.log",
    benchmark:
        f"{MD}/benchmarks/merge_attribution/{{method}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../../environment.yml"
    script:
        "../scripts/step.py"
