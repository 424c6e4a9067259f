"""Steps of workflow/rules/attribution.smk: attribution maps per method (and shard)."""

from __future__ import annotations

from .core import base_meta, load_step_inputs, method_params, recorded_settings, step


@step
def attribute(cfg, input, output, params, wildcards, threads):

    from ..io import config_hash
    from ..maps.store import attribute_rows, evaluation_rows, shard_rows, write_attribution

    att = cfg["attribution"]
    method, shard, n_shards = wildcards.method, int(getattr(wildcards, "shard", 0)), int(att["shards"])
    pairs, images, model = load_step_inputs(cfg, input, threads)
    rows = shard_rows(evaluation_rows(cfg, pairs), shard, n_shards)
    mparams = method_params(cfg, method)
    audit: dict | None = {} if att.get("save_components", True) else None
    maps, table = attribute_rows(
        model,
        method,
        mparams,
        pairs,
        images,
        rows,
        int(att["batch_size"]),
        att.get("store_dtype", "float32"),
        audit=audit,
    )
    meta = base_meta(cfg, "data", "input", "model")
    meta.update(
        method=method,
        params=mparams,
        shard=f"{shard}/{n_shards}",
        config_hash=config_hash(
            meta["config_hash"],
            method,
            mparams,
            att.get("split"),
            att.get("max_pairs"),
            att.get("store_dtype"),
            *([att["shortcut_pairs"]] if att.get("shortcut_pairs") else []),
        ),
        model=model.meta,
        settings=recorded_settings(cfg, "attribute", wildcards),
    )
    write_attribution(maps, table, meta, output.npz, output.parquet, audit, output.audit)


@step
def merge_attribution(cfg, input, output, params, wildcards, threads):
    from ..maps.store import merge_shards

    merge_shards(input.npz, input.parquet, output.npz, output.parquet, input.audit, output.audit)
