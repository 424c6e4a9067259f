"""Steps of workflow/rules/data.smk: make the synthetic dataset, download MS-CXR, prepare the pairs."""

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
