"""Entry points of the Snakemake rules: one function per rule, called by ``workflow/scripts/step.py``.

Rules stay thin (inputs, outputs, params); every computation happens here or deeper in the package.
Each step logs to the rule's ``log:`` file and writes its artifacts atomically.
"""
from __future__ import annotations

import contextlib
import logging
import sys
import time
from pathlib import Path
from typing import Any, Callable

from .config import section_hash, validate_config

log = logging.getLogger("matex")
STEPS: dict[str, Callable[..., None]] = {}


def step(fn: Callable[..., None]) -> Callable[..., None]:
    STEPS[fn.__name__] = fn
    return fn


@contextlib.contextmanager
def logged(log_path: str | None):
    """Send logging and stderr (tqdm progress) of the step to its log file as well as the console."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    root = logging.getLogger()
    old = list(root.handlers)
    root.handlers = []
    for h in handlers:
        h.setFormatter(fmt)
        root.addHandler(h)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        for h in handlers:
            h.close()
        root.handlers = old


def run_step(smk: Any) -> None:
    """Dispatch a Snakemake ``script:`` call to the step named like its rule."""
    name = smk.rule
    fn = STEPS.get(name)
    if fn is None:
        raise KeyError(f"no matex pipeline step for rule {name!r}; known: {sorted(STEPS)}")
    cfg = dict(smk.config)
    with logged(smk.log[0] if len(smk.log) else None):
        t0 = time.perf_counter()
        log.info("step %s started", name)
        fn(cfg, smk.input, smk.output, smk.params, smk.wildcards, smk.threads)
        log.info("step %s finished in %.1f s", name, time.perf_counter() - t0)


def geometry(cfg: dict):
    from .data.transforms import InputGeometry

    return InputGeometry(size=int(cfg["input"]["size"]), mode=cfg["input"]["mode"])


def base_meta(cfg: dict, *sections: str) -> dict:
    """What every artifact carries: the hash of the config sections that made it, the seed, the
    package version and, once a model is involved, the model's checkpoint sha256."""
    from . import __version__

    meta = {"config_hash": section_hash(cfg, *sections), "seed": cfg["seed"], "matex_version": __version__}
    if "model" in sections:
        from .provenance import model_fingerprint

        meta["model_checkpoint_sha256"] = model_fingerprint(cfg)["checkpoint_sha256"]
    return meta


# ----------------------------------------------------------------------------------------- data
@step
def make_synthetic(cfg, input, output, params, wildcards, threads):
    from .data.synthetic import generate_synthetic

    syn = cfg["data"].get("synthetic", {})
    out_dir = Path(output.csv).parent
    generate_synthetic(out_dir, seed=cfg["seed"], **{k: (tuple(v) if isinstance(v, list) else v)
                                                      for k, v in syn.items()})


@step
def download_mscxr(cfg, input, output, params, wildcards, threads):
    from .data.download import download_mscxr as fetch

    m = cfg["data"]["mscxr"]
    dl = dict(m.get("download", {}))
    fetch(Path(output.csv).parent, csv_name=Path(output.csv).name, **dl)


@step
def prepare(cfg, input, output, params, wildcards, threads):
    from .data.mscxr import prepare_dataset

    prepare_dataset(input.csv, params.image_root, geometry(cfg), cfg["data"]["val_fraction"], cfg["seed"],
                    cfg["data"]["on_bad_row"], output.pairs, output.report, output.images,
                    meta=base_meta(cfg, "data", "input"))


# ---------------------------------------------------------------------------------------- model
@step
def train_demo_model(cfg, input, output, params, wildcards, threads):
    from .models.train import train_demo

    train_demo(input.pairs, input.images, cfg, output.checkpoint, output.log_json)


# ---------------------------------------------------------------------------------- attribution
def load_configured_model(cfg: dict, checkpoint: str | None, device_pref: str = "cpu"):
    from .models.loading import load_model_from_config, resolve_device

    return load_model_from_config(cfg, checkpoint=checkpoint or None, device=resolve_device(device_pref))


def load_step_inputs(cfg: dict, input, threads: int):
    """The pairs table, the decoded images (memory-mapped) and the configured model of a step."""
    import numpy as np
    import pandas as pd
    import torch

    torch.set_num_threads(max(1, int(threads)))
    pairs = pd.read_parquet(input.pairs)
    images = np.load(input.images, mmap_mode="r")
    model = load_configured_model(cfg, getattr(input, "checkpoint", None), cfg["attribution"]["device"])
    return pairs, images, model


def method_params(cfg: dict, method: str) -> dict:
    return dict((cfg["attribution"].get("params") or {}).get(method) or {})


@step
def attribute(cfg, input, output, params, wildcards, threads):
    import numpy as np
    import pandas as pd
    import torch

    from .attribution.cache import attribute_rows, select_pairs, shard_rows, write_attribution
    from .io import config_hash

    att = cfg["attribution"]
    method, shard, n_shards = wildcards.method, int(getattr(wildcards, "shard", 0)), int(att["shards"])
    pairs, images, model = load_step_inputs(cfg, input, threads)
    rows = shard_rows(select_pairs(pairs, att.get("split", "val"), att.get("max_pairs")), shard, n_shards)
    mparams = method_params(cfg, method)
    maps, table = attribute_rows(model, method, mparams, pairs, images, rows, int(att["batch_size"]),
                                 att.get("store_dtype", "float32"))
    meta = base_meta(cfg, "data", "input", "model")
    meta.update(method=method, params=mparams, shard=f"{shard}/{n_shards}",
                config_hash=config_hash(meta["config_hash"], method, mparams, att.get("split"),
                                        att.get("max_pairs"), att.get("store_dtype")),
                model=model.meta)
    write_attribution(maps, table, meta, output.npz, output.parquet)


@step
def merge_attribution(cfg, input, output, params, wildcards, threads):
    from .attribution.cache import merge_shards

    merge_shards(input.npz, input.parquet, output.npz, output.parquet)


# ----------------------------------------------------------------------------------- evaluation
@step
def evaluate(cfg, input, output, params, wildcards, threads):
    import numpy as np
    import pandas as pd
    import torch

    from .io import write_parquet
    from .metrics.evaluate import evaluate_maps

    pairs, images, model = load_step_inputs(cfg, input, threads)
    df = evaluate_maps(model, wildcards.method, pairs, images, input.npz, cfg)
    runtime = pd.read_parquet(input.runtime)[["pair_id", "runtime_s"]]
    df = df.merge(runtime, on="pair_id", how="left")
    df["runtime_ms"] = df.pop("runtime_s") * 1000.0
    meta = base_meta(cfg, "data", "input", "model", "attribution", "evaluation")
    meta["method"] = wildcards.method
    write_parquet(output.metrics, df, meta)


@step
def aggregate(cfg, input, output, params, wildcards, threads):
    import pandas as pd

    from .io import write_parquet, write_text
    from .metrics.aggregate import summarise_tidy, tidy_metrics, to_html, to_latex, to_markdown, wide_table

    tidy = tidy_metrics([pd.read_parquet(p) for p in input.metrics])
    # sanity column: Spearman rho with every block randomised (lower = the map depends on the model)
    san = pd.concat([pd.read_parquet(p) for p in input.sanity], ignore_index=True)
    full = san[san["blocks_randomized"] == san.groupby("method")["blocks_randomized"].transform("max")]
    tidy = pd.concat([tidy, full.assign(metric="sanity_spearman", value=full["spearman"])[
        ["pair_id", "method", "category", "metric", "value"]]], ignore_index=True)
    boot = cfg["evaluation"].get("bootstrap", {})
    n, ci = int(boot.get("n_resamples", 1000)), float(boot.get("ci", 0.95))
    overall = summarise_tidy(tidy, ["method"], n, ci, cfg["seed"])
    per_cat = summarise_tidy(tidy, ["category", "method"], n, ci, cfg["seed"])
    meta = base_meta(cfg, "data", "input", "model", "attribution", "evaluation")
    write_parquet(output.tidy, tidy, meta)
    write_parquet(output.summary, pd.concat([overall.assign(category="all"), per_cat], ignore_index=True), meta)
    order = cfg["attribution"]["methods"]
    roar = pd.read_parquet(input.roar)
    write_parquet(output.roar, roar, meta)
    pct = f"{round(ci * 100)} %"
    notes = [f"Mean [{pct} bootstrap interval, {n} resamples] over pairs; confidence metrics and localisation x100.",
             f"ROAR+: mean ± sd over {len(cfg['roar']['seeds'])} seed(s) of 100 (L_deg - L_clean)/L_clean; "
             "image: top pixels of each map removed, text: top word tokens removed (both against the same "
             "clean run); 'random' is the random-removal control."]
    tables = [("All findings", with_roar(wide_table(overall, order), roar))]
    tables += [(cat, wide_table(grp, order)) for cat, grp in per_cat.groupby("category")]
    title = f"Results: {cfg['dataset']} / {cfg['model']['name']}"
    md = [f"# {title}\n", *[f"{line}\n" for line in notes], *[to_markdown(t, name) for name, t in tables]]
    tex = [to_latex(t, f"{cfg['dataset']}: {name.lower() if name == 'All findings' else name}") for name, t in tables]
    write_text(output.markdown, "\n".join(md))
    write_text(output.html, to_html(tables, title, notes))
    write_text(output.latex, "\n".join(tex))


def with_roar(table, roar):
    """Insert the image and text ROAR+ columns (mean ± sd over seeds), paper order: each after its
    side's confidence columns (Img conf. drop, Img conf. incr., Img ROAR+, Txt conf. ..., Txt ROAR+).
    A method without a run on a side shows "–"."""
    table = table.copy()
    pos = 0
    for modality, prefix in (("image", "Img"), ("text", "Txt")):
        side = roar[roar["modality"] == modality].set_index("method")
        col = [_roar_cell(side.loc[m]) if m in side.index else "–" for m in table.index]
        last = [i for i, c in enumerate(table.columns) if c.startswith(f"{prefix} conf.")]
        pos = last[-1] + 1 if last else pos
        table.insert(pos, f"{prefix} ROAR+ ↑", col)
        pos += 1
    return table


def _roar_cell(r) -> str:
    """'mean ± sd' over seeds; the mean alone when the sd is undefined (one seed)."""
    import numpy as np

    if np.isfinite(r["roar_plus_sd"]):
        return f"{r['roar_plus_mean']:.2f} ± {r['roar_plus_sd']:.2f}"
    return f"{r['roar_plus_mean']:.2f}"


# ------------------------------------------------------------------------------------------ ROAR+
def roar_train_rows(cfg: dict, pairs) -> "np.ndarray":
    from .attribution.cache import select_pairs

    return select_pairs(pairs, "train", cfg["roar"].get("train_pairs"))


@step
def attribute_roar_train(cfg, input, output, params, wildcards, threads):
    """Maps of the ROAR+ training pairs (the images that will be degraded)."""
    import numpy as np
    import pandas as pd
    import torch

    from .attribution.cache import attribute_rows, write_attribution
    from .io import config_hash

    att = cfg["attribution"]
    pairs, images, model = load_step_inputs(cfg, input, threads)
    mparams = method_params(cfg, wildcards.method)
    maps, table = attribute_rows(model, wildcards.method, mparams, pairs, images, roar_train_rows(cfg, pairs),
                                 int(att["batch_size"]), att.get("store_dtype", "float32"))
    meta = base_meta(cfg, "data", "input", "model")
    meta.update(method=wildcards.method, params=mparams, model=model.meta,
                config_hash=config_hash(meta["config_hash"], wildcards.method, mparams, cfg["roar"].get("train_pairs")))
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
    import numpy as np
    import pandas as pd

    from .attribution.cache import load_maps, load_token_maps, select_pairs
    from .errors import ConfigError
    from .io import write_json
    from .roar.finetune import roar_run

    pairs = pd.read_parquet(input.pairs)
    images = np.load(input.images, mmap_mode="r")
    train_rows = roar_train_rows(cfg, pairs)
    val_rows = select_pairs(pairs, "val", None)
    train_ids = pairs["pair_id"].iloc[train_rows].tolist()
    maps = None
    if hasattr(input, "npz") and modality == "image":
        maps, _, _ = load_maps(input.npz, train_ids)
    elif hasattr(input, "npz"):
        maps = load_token_maps(input.npz, train_ids)
        if maps is None:
            raise ConfigError(f"config key roar.text_methods lists {wildcards.variant!r}, but method "
                              f"{wildcards.variant!r} gave no text (token) maps with this model ({input.npz}); "
                              "list only methods with a text side (matex)")
    model = load_configured_model(cfg, getattr(input, "checkpoint", None), cfg["attribution"]["device"])
    result = roar_run(model, pairs, images, train_rows, val_rows, wildcards.variant, maps, cfg["roar"],
                      int(wildcards.seed), threads=int(threads), modality=modality)
    # the run's own keys win: its "seed" is the fine-tuning seed that pairs it with the clean run of
    # that seed; the config's seed (base_meta's "seed") is kept as "config_seed"
    meta = base_meta(cfg, "data", "input", "model", "attribution", "roar")
    write_json(output.json, {**meta, "config_seed": meta["seed"], **result})


@step
def roar_summary(cfg, input, output, params, wildcards, threads):
    """roar_runs.parquet (one row per run, image and text) and roar_summary.parquet (per modality, method)."""
    import json

    import pandas as pd

    from .io import write_parquet
    from .roar.finetune import summarise_roar, with_modality

    paths = [*input.runs, *getattr(input, "text_runs", [])]
    runs = with_modality(pd.DataFrame([{k: v for k, v in json.load(open(p)).items() if k != "history"}
                                       for p in paths]))
    summary = summarise_roar(runs)
    meta = base_meta(cfg, "data", "input", "model", "attribution", "roar")
    write_parquet(output.runs, runs, meta)
    write_parquet(output.summary, summary, meta)


# ------------------------------------------------------------------------------ sanity, ablation
def _eval_rows(cfg: dict, pairs, cap: int | None):
    from .attribution.cache import select_pairs

    att = cfg["attribution"]
    rows = select_pairs(pairs, att.get("split", "val"), att.get("max_pairs"))
    return rows[:cap] if cap else rows


@step
def sanity(cfg, input, output, params, wildcards, threads):
    import numpy as np
    import pandas as pd
    import torch

    from .io import write_parquet
    from .metrics.studies import sanity_curve

    pairs, images, model = load_step_inputs(cfg, input, threads)
    rows = _eval_rows(cfg, pairs, cfg["evaluation"]["sanity"].get("max_pairs"))
    df = sanity_curve(model, wildcards.method, method_params(cfg, wildcards.method), pairs, images, rows,
                      int(cfg["attribution"]["batch_size"]), cfg["seed"])
    meta = base_meta(cfg, "data", "input", "model", "attribution", "evaluation")
    write_parquet(output.table, df, meta)


@step
def ablation(cfg, input, output, params, wildcards, threads):
    import numpy as np
    import pandas as pd
    import torch

    from .io import write_parquet
    from .metrics.studies import ablation_study

    pairs, images, model = load_step_inputs(cfg, input, threads)
    rows = _eval_rows(cfg, pairs, cfg["figures"].get("ablation_pairs"))
    df = ablation_study(model, method_params(cfg, "matex"), pairs, images, rows, cfg,
                        int(cfg["attribution"]["batch_size"]))
    write_parquet(output.table, df, base_meta(cfg, "data", "input", "model", "attribution", "evaluation", "figures"))


# ------------------------------------------------------------------------------------ provenance
@step
def provenance(cfg, input, output, params, wildcards, threads):
    from .io import write_json
    from .provenance import provenance_record

    write_json(output.json, provenance_record(cfg, {k: v for k, v in input.items()}))


@step
def pipeline_runtime(cfg, input, output, params, wildcards, threads):
    from .figures.plots import pipeline_runtime_bars, save
    from .io import write_parquet, write_text
    from .metrics.runtime import collect_benchmarks, runtime_markdown

    df = collect_benchmarks(params.benchmark_dirs)
    write_parquet(output.table, df, base_meta(cfg, "data", "input", "model", "attribution", "evaluation", "roar"))
    write_text(output.markdown, runtime_markdown(df))
    save(pipeline_runtime_bars(df), output.figure)


# ---------------------------------------------------------------------------------------- figures
@step
def figure_qualitative(cfg, input, output, params, wildcards, threads):
    import numpy as np
    import pandas as pd

    from .figures.plots import pick_qualitative_pairs, qualitative_grid, save
    from .io import read_npz

    pairs = pd.read_parquet(input.pairs)
    images = np.load(input.images, mmap_mode="r")
    maps = {Path(p).stem: read_npz(p)[0] for p in input.maps}
    first = next(iter(maps.values()))
    explained = [k for k in first if not k.startswith("text/")]
    fig_cfg = cfg["figures"]
    ids = pick_qualitative_pairs(pairs, explained, int(fig_cfg["qualitative_per_category"]),
                                 fig_cfg.get("qualitative_pairs"))
    save(qualitative_grid(pairs, images, maps, ids, show_images=bool(cfg["report"]["embed_images"])), output)


@step
def figure_metrics(cfg, input, output, params, wildcards, threads):
    import pandas as pd

    from .figures.plots import metric_bars, save

    save(metric_bars(pd.read_parquet(input.summary), cfg["attribution"]["methods"]), output)


@step
def figure_ablation(cfg, input, output, params, wildcards, threads):
    import pandas as pd

    from .figures.plots import curves, save

    df = pd.read_parquet(input.table)
    long = df.melt(id_vars=["parameter", "value"], var_name="metric", value_name="score")
    weights = long[long["parameter"] != "prior_strength"]
    save(curves(weights, "value", "score", "parameter", "MATEX fusion-weight ablation (one weight varied at a time)",
                "weight value", "score", col="metric"), output.weights)
    lam = long[long["parameter"] == "prior_strength"]
    save(curves(lam, "value", "score", "metric", "MATEX prior strength sweep", "λ_s", "score"), output.prior)


@step
def figure_sanity(cfg, input, output, params, wildcards, threads):
    import pandas as pd

    from .figures.plots import curves, save

    df = pd.concat([pd.read_parquet(p) for p in input.tables], ignore_index=True)
    save(curves(df, "blocks_randomized", "spearman", "method",
                "Cascading randomisation: similarity of maps to the trained model's",
                "top blocks randomised", "Spearman ρ"), output)


@step
def figure_runtime(cfg, input, output, params, wildcards, threads):
    import pandas as pd

    from .figures.plots import runtime_bars, save

    df = pd.concat([pd.read_parquet(p) for p in input.tables], ignore_index=True)
    df["runtime_ms"] = df["runtime_s"] * 1000.0
    save(runtime_bars(df, cfg["attribution"]["methods"]), output)
