"""Steps of workflow/rules/data.smk: make the synthetic dataset, download MS-CXR, prepare the pairs,
and audit the phrase parser (the parse table and the prior figure)."""

from __future__ import annotations

from pathlib import Path

from .core import base_meta, geometry, step


@step
def make_synthetic(cfg, input, output, params, wildcards, threads):
    from ..data.synthetic import generate_synthetic

    syn = cfg["data"].get("synthetic", {})
    out_dir = Path(output.csv).parent
    generate_synthetic(
        out_dir,
        seed=cfg["seed"],
        val_fraction=cfg["data"]["val_fraction"],  # the drain shortcut differs between the splits
        workers=int(threads or 1),  # the files are the same bytes whatever the number of workers
        **{k: (tuple(v) if isinstance(v, list) else v) for k, v in syn.items()},
    )


@step
def download_mscxr(cfg, input, output, params, wildcards, threads):
    from ..data.download import download_mscxr as fetch

    m = cfg["data"]["mscxr"]
    dl = dict(m.get("download", {}))
    fetch(Path(output.csv).parent, csv_name=Path(output.csv).name, **dl)


@step
def prepare(cfg, input, output, params, wildcards, threads):
    from ..data.mscxr import prepare_dataset

    prepare_dataset(
        input.csv,
        params.image_root,
        geometry(cfg),
        cfg["data"]["val_fraction"],
        cfg["seed"],
        cfg["data"]["on_bad_row"],
        output.pairs,
        output.report,
        output.images,
        meta=base_meta(cfg, "data", "input"),
    )


@step
def parse_phrases(cfg, input, output, params, wildcards, threads):
    """The parse of every pair's phrase (regions, weights, negation, uncertainty, findings)."""
    import pandas as pd

    from ..io import write_parquet
    from ..priors.audit import parse_table

    write_parquet(output.table, parse_table(pd.read_parquet(input.pairs)), meta=base_meta(cfg, "data"))


@step
def figure_prior(cfg, input, output, params, wildcards, threads):
    """The prior of one phrase per category, laid on the input as the boxes are."""
    import numpy as np
    import pandas as pd

    from ..figures.plots import save
    from ..figures.prior import prior_grid
    from ..priors.audit import example_pairs
    from .core import method_params

    pairs = pd.read_parquet(input.pairs)
    images = np.load(input.images, mmap_mode="r")
    from ..catalog import load_catalog

    defaults = {k: v["default"] for k, v in load_catalog()["matex"]["params"].items()}  # one source of defaults
    prior = {**defaults, **method_params(cfg, "matex")}
    fig = prior_grid(
        pairs,
        images,
        example_pairs(pairs),
        sigma=float(prior["prior_sigma"]),
        strength=float(prior["prior_strength"]),
        input_mode=geometry(cfg).mode,
        show_images=bool(cfg["report"]["embed_images"]),
    )
    save(fig, output)
