"""Steps of workflow/rules/figures.smk: every figure of the paper."""

from __future__ import annotations

from pathlib import Path

from ..io import read_json, read_parquet
from .core import step


@step
def figure_qualitative(cfg, input, output, params, wildcards, threads):

    from ..figures.plots import pick_qualitative_pairs, qualitative_grid, save
    from ..io import npz_entries, read_npy, read_npz_members, read_parquet

    pairs = read_parquet(input.pairs)
    images = read_npy(input.images)
    explained = [k for k in npz_entries(input.maps[0]) if not k.startswith("text/")]
    fig_cfg = cfg["figures"]
    ids = pick_qualitative_pairs(
        pairs, explained, int(fig_cfg["qualitative_per_category"]), fig_cfg.get("qualitative_pairs")
    )
    # only the drawn pairs' maps are read (a paper-scale run holds thousands per method)
    maps = {Path(p).stem: read_npz_members(p, list(ids)) for p in input.maps}
    save(qualitative_grid(pairs, images, maps, ids, show_images=bool(cfg["report"]["embed_images"])), output)


@step
def figure_metrics(cfg, input, output, params, wildcards, threads):

    from ..figures.plots import metric_bars, save

    save(metric_bars(read_parquet(input.summary), cfg["attribution"]["methods"]), output)


@step
def figure_ablation(cfg, input, output, params, wildcards, threads):

    from ..figures.plots import curves, save

    df = read_parquet(input.table)
    long = df.melt(id_vars=["parameter", "value"], var_name="metric", value_name="score")
    weights = long[long["parameter"] != "prior_strength"]
    save(
        curves(
            weights,
            "value",
            "score",
            "parameter",
            "MATEX fusion-weight ablation (one weight varied at a time)",
            "weight value",
            "score",
            col="metric",
        ),
        output.weights,
    )
    lam = long[long["parameter"] == "prior_strength"]
    save(curves(lam, "value", "score", "metric", "MATEX prior strength sweep", "λ_s", "score"), output.prior)


@step
def figure_sanity(cfg, input, output, params, wildcards, threads):
    import pandas as pd

    from ..figures.plots import save
    from ..figures.sanity import sanity_cascade

    df = pd.concat([read_parquet(p) for p in input.tables], ignore_index=True)
    save(sanity_cascade(df, cfg["attribution"]["methods"]), output)


@step
def figure_runtime(cfg, input, output, params, wildcards, threads):
    import pandas as pd

    from ..figures.plots import runtime_bars, save

    df = pd.concat([read_parquet(p) for p in input.tables], ignore_index=True)
    df["runtime_ms"] = df["runtime_s"] * 1000.0
    save(runtime_bars(df, cfg["attribution"]["methods"]), output)


@step
def figure_roar(cfg, input, output, params, wildcards, threads):

    from ..figures.plots import save
    from ..figures.roar import roar_curve_figure

    save(roar_curve_figure(read_parquet(input.curve), cfg["roar"]["retrain"]["methods"]), output)


@step
def figure_training(cfg, input, output, params, wildcards, threads):

    from ..figures.plots import save
    from ..figures.training import learning_curves

    save(learning_curves(read_json(input.log_json)), output)


@step
def figure_counterfactual(cfg, input, output, params, wildcards, threads):
    import pandas as pd

    from ..figures.counterfactual import lesion_vs_drain
    from ..figures.plots import save

    metrics = pd.concat([read_parquet(p) for p in input.metrics], ignore_index=True)
    save(lesion_vs_drain(metrics, cfg["attribution"]["methods"]), output)
