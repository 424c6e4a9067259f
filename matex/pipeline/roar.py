"""Steps of workflow/rules/roar.smk: ROAR+ (roar_plus: training-pair maps, fine-tuning runs, their summary)
and ROAR (Hooker et al. 2019: degrade train and validation, retrain, curve over k)."""

from __future__ import annotations

from ..io import read_json, read_npy, read_parquet
from .core import base_meta, load_configured_model, load_step_inputs, method_params, step


def roar_train_rows(cfg: dict, pairs):
    from ..maps.store import select_pairs

    return select_pairs(pairs, "train", cfg["roar"].get("train_pairs"))


@step
def attribute_roar_train(cfg, input, output, params, wildcards, threads):
    """Maps of the ROAR+ training pairs (the images that will be degraded)."""

    from ..io import config_hash
    from ..maps.store import attribute_rows, write_attribution

    att = cfg["attribution"]
    pairs, images, model = load_step_inputs(cfg, input, threads)
    mparams = method_params(cfg, wildcards.method)
    maps, table = attribute_rows(
        model,
        wildcards.method,
        mparams,
        pairs,
        images,
        roar_train_rows(cfg, pairs),
        int(att["batch_size"]),
        att.get("store_dtype", "float32"),
    )
    meta = base_meta(cfg, "data", "input", "model")
    meta.update(
        method=wildcards.method,
        params=mparams,
        model=model.meta,
        config_hash=config_hash(meta["config_hash"], wildcards.method, mparams, cfg["roar"].get("train_pairs")),
    )
    write_attribution(maps, table, meta, output.npz, output.parquet)


@step
def roar_finetune(cfg, input, output, params, wildcards, threads):
    """Image ROAR+ run (or the clean run both sides share): top pixels removed from the training images."""
    _roar_finetune(cfg, input, output, wildcards, threads, "image")


@step
def roar_finetune_text(cfg, input, output, params, wildcards, threads):
    """Text ROAR+ run: top word tokens removed from the training texts, images untouched."""
    _roar_finetune(cfg, input, output, wildcards, threads, "text")


def _roar_finetune(cfg, input, output, wildcards, threads, modality: str) -> None:

    from ..errors import ConfigError
    from ..io import write_json
    from ..maps.store import load_maps, load_token_maps, select_pairs
    from ..roar.finetune import roar_run

    pairs = read_parquet(input.pairs)
    images = read_npy(input.images)
    train_rows = roar_train_rows(cfg, pairs)
    val_rows = select_pairs(pairs, "val", None)
    train_ids = pairs["pair_id"].iloc[train_rows].tolist()
    maps = None
    if hasattr(input, "npz") and modality == "image":
        maps, _, _ = load_maps(input.npz, train_ids)
    elif hasattr(input, "npz"):
        maps = load_token_maps(input.npz, train_ids)
        if maps is None:
            raise ConfigError(
                f"config key roar.text_methods lists {wildcards.variant!r}, but method "
                f"{wildcards.variant!r} gave no text (token) maps with this model ({input.npz}); "
                "list only methods with a text side (matex)"
            )
    model = load_configured_model(cfg, getattr(input, "checkpoint", None), cfg["attribution"]["device"])
    result = roar_run(
        model,
        pairs,
        images,
        train_rows,
        val_rows,
        wildcards.variant,
        maps,
        cfg["roar"],
        int(wildcards.seed),
        threads=int(threads),
        modality=modality,
    )
    # the run's own keys win: its "seed" is the fine-tuning seed that pairs it with the clean run of
    # that seed; the config's seed (base_meta's "seed") is kept as "config_seed"
    meta = base_meta(cfg, "data", "input", "model", "attribution", "roar")
    write_json(output.json, {**meta, "config_seed": meta["seed"], **result})


@step
def roar_summary(cfg, input, output, params, wildcards, threads):
    """roar_runs.parquet (one row per run, image and text) and roar_summary.parquet (per modality, method)."""

    import pandas as pd

    from ..io import write_parquet
    from ..roar.finetune import summarise_roar, with_modality

    paths = [*input.runs, *getattr(input, "text_runs", [])]
    runs = with_modality(pd.DataFrame([{k: v for k, v in read_json(p).items() if k != "history"} for p in paths]))
    summary = summarise_roar(runs)
    meta = base_meta(cfg, "data", "input", "model", "attribution", "roar")
    write_parquet(output.runs, runs, meta)
    write_parquet(output.summary, summary, meta)


def roar_eval_val_rows(cfg: dict, pairs):
    """The validation pairs that have evaluation maps (``maps/{method}.npz``: the attribution split,
    capped at attribution.max_pairs), in pair order."""

    from ..maps.store import evaluation_rows

    rows = evaluation_rows(cfg, pairs)
    return rows[pairs["split"].to_numpy()[rows] == "val"]


@step
def roar_retrain(cfg, input, output, params, wildcards, threads):
    """ROAR (Hooker et al. 2019): the curves of one variant, retraining at every k once per seed
    (``roar.retrain.seeds``) on images degraded once."""
    import torch

    from ..errors import ConfigError
    from ..io import write_json, write_npz
    from ..maps.store import load_maps
    from ..models.loading import resolve_device
    from ..roar.retrain import roar_retrain_runs
    from .core import log

    torch.set_num_threads(max(1, int(threads)))
    seeds = [int(q) for q in cfg["roar"]["retrain"]["seeds"]]
    pairs = read_parquet(input.pairs)
    images = read_npy(input.images)
    train_rows, val_rows = roar_train_rows(cfg, pairs), roar_eval_val_rows(cfg, pairs)
    if len(train_rows) < 2 or len(val_rows) < 2:
        raise ConfigError(
            f"ROAR needs >= 2 training pairs with maps (roar.train_pairs) and >= 2 validation pairs "
            f"with maps (attribution.split/max_pairs); got {len(train_rows)} and {len(val_rows)}"
        )
    train_maps = val_maps = None
    if hasattr(input, "train_npz"):
        train_maps, _, _ = load_maps(input.train_npz, pairs["pair_id"].iloc[train_rows].tolist())
        val_maps, _, _ = load_maps(input.val_npz, pairs["pair_id"].iloc[val_rows].tolist())
    device = resolve_device(cfg["attribution"]["device"])
    base = load_configured_model(cfg, getattr(input, "checkpoint", None), device)
    samples: dict = {}
    runs = roar_retrain_runs(
        cfg,
        base,
        pairs,
        images,
        train_rows,
        val_rows,
        wildcards.variant,
        train_maps,
        val_maps,
        seeds,
        threads=int(threads),
        device=device,
        log=log.info,
        samples=samples,
    )
    meta = base_meta(cfg, "data", "input", "model", "attribution", "roar")
    write_npz(output.samples, samples, {**meta, "variant": wildcards.variant, "seeds": seeds})
    write_json(
        output.json, {**meta, "config_seed": meta["seed"], "variant": wildcards.variant, "seeds": seeds, "runs": runs}
    )


@step
def roar_curve(cfg, input, output, params, wildcards, threads):
    """roar_curve.parquet (per method and k, mean/sd over seeds, with each method's area statistics
    over seeds), roar_auc.parquet (area of the mean curve per method, with the same statistics) and
    tables/roar.parquet (the area per method and retraining seed: ``method``, ``seed``)."""
    import pandas as pd

    from ..io import write_parquet
    from ..roar.curve import auc_over_seeds, auc_table, per_seed_auc
    from ..roar.curve import roar_curve as curve_of

    runs = pd.DataFrame([r for p in input.runs for r in read_json(p)["runs"]])
    curve = curve_of(runs)
    per_seed = per_seed_auc(runs)
    first = runs.drop_duplicates("variant").set_index("variant")
    keep = [c for c in ("fill", "retrain", "epochs", "n_train", "n_val") if c in first]
    per_seed = per_seed.join(first[keep], on="method")  # the protocol beside each area
    meta = base_meta(cfg, "data", "input", "model", "attribution", "roar")
    write_parquet(output.runs, runs, meta)
    write_parquet(output.curve, curve, meta)
    write_parquet(output.auc, auc_table(curve).merge(auc_over_seeds(per_seed), on="method", how="left"), meta)
    write_parquet(output.table, per_seed, meta)
