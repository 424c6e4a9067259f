"""Steps of workflow/rules/figures.smk: every figure of the paper."""

from __future__ import annotations

from pathlib import Path

from .core import step


@step
def figure_qualitative(cfg, input, output, params, wildcards, threads):
    import numpy as np
    import pandas as pd

    from ..figures.plots import pick_qualitative_pairs, qualitative_grid, save
    from ..io import read_npz_members

    pairs = pd.read_parquet(input.pairs)
    images = np.load(input.images, mmap_mode="r")
    with np.load(input.maps[0], allow_pickle=False) as z:
        explained = [k for k in z.files if k != "__meta__" and not k.startswith("text/")]
    fig_cfg = cfg["figures"]
    ids = pick_qualitative_pairs(
        pairs, explained, int(fig_cfg["qualitative_per_category"]), fig_cfg.get("qualitative_pairs")
    )
    # only the drawn pairs' maps are read (a paper-scale run holds thousands per method)
    maps = {Path(p).stem: read_npz_members(p, list(ids)) for p in input.maps}
    save(qualitative_grid(pairs, images, maps, ids, show_images=bool(cfg["report"]["embed_images"])), output)


@step
def figure_metrics(cfg, input, output, params, wildcards, threads):
    import pandas as pd

    from ..figures.plots import metric_bars, save

    save(metric_bars(pd.read_parquet(input.summary), cfg["attribution"]["methods"]), output)


@step
def figure_ablation(cfg, input, output, params, wildcards, threads):
    import pandas as pd

    from ..figures.plots import curves, save

    df = pd.read_parquet(input.table)
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

    df = pd.concat([pd.read_parquet(p) for p in input.tables], ignore_index=True)
    save(sanity_cascade(df, cfg["attribution"]["methods"]), output)


@step
def figure_runtime(cfg, input, output, params, wildcards, threads):
    import pandas as pd

    from ..figures.plots import runtime_bars, save

    df = pd.concat([pd.read_parquet(p) for p in input.tables], ignore_index=True)
    df["runtime_ms"] = df["runtime_s"] * 1000.0
    save(runtime_bars(df, cfg["attribution"]["methods"]), output)


@step
def figure_roar(cfg, input, output, params, wildcards, threads):
    import pandas as pd

    from ..figures.plots import save
    from ..figures.roar import roar_curve_figure

    save(roar_curve_figure(pd.read_parquet(input.curve), cfg["roar"]["retrain"]["methods"]), output)


@step
def figure_training(cfg, input, output, params, wildcards, threads):
    import json

    from ..figures.plots import save
    from ..figures.training import learning_curves

    save(learning_curves(json.loads(Path(input.log_json).read_text())), output)


@step
def figure_counterfactual(cfg, input, output, params, wildcards, threads):
    import pandas as pd

    from ..figures.counterfactual import lesion_vs_drain
    from ..figures.plots import save

    metrics = pd.concat([pd.read_parquet(p) for p in input.metrics], ignore_index=True)
    save(lesion_vs_drain(metrics, cfg["attribution"]["methods"]), output)
