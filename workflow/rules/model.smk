rule train_demo_model:
    """Train the small demo open_clip CLIP (7x7 patch grid like ViT-B/32) on the training split."""
    input:
        pairs=f"{DS}/pairs.parquet",
        images=f"{DS}/images.npy",
    output:
        checkpoint=f"{MD}/model.pt",
        log_json=f"{MD}/train_log.json",
    log:
        f"{MD}/logs/train_demo_model.log",
    benchmark:
        f"{MD}/benchmarks/train_demo_model.tsv"
    conda:
        "../envs/model.yaml"
    threads: config["model"].get("demo", {}).get("threads", 2)
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        config=step_config("train_demo_model"),
    script:
        "../scripts/step.py"
