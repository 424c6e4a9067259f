"""The Snakemake DAG: dry runs of both shipped configs, the linter, and one real end-to-end run of the
implemented rules on a tiny synthetic config."""
from pathlib import Path
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from matex.config import deep_update, load_config
from matex.io import read_npz

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def _run(args, cwd=ROOT, timeout=1200):
    return subprocess.run(SNAKEMAKE + args, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _execute_notebook(path: Path, results: Path) -> None:
    """Run an audit notebook against a finished run (it only reads artifacts)."""
    import os

    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    os.environ["MATEX_RESULTS"] = str(results)
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    finally:
        os.environ.pop("MATEX_RESULTS", None)


def tiny_config(tmp_path: Path) -> Path:
    cfg = load_config(ROOT / "config" / "config.yaml")
    cfg = deep_update(cfg, {
        "results_dir": str(tmp_path / "results"),
        "data": {"synthetic": {"n_images": 48}},
        "model": {"demo": {"vision": {"layers": 3, "width": 32, "heads": 2},
                           "text": {"layers": 1, "width": 32, "heads": 2},
                           "embed_dim": 32, "epochs": 1, "batch_size": 16, "warmup_steps": 1,
                           "threads": 1}},
        "attribution": {"max_pairs": 6, "batch_size": 4,
                        "params": {"rise": {"n_masks": 16, "batch": 8}, "m2ib": {"steps": 2, "n_noise": 2}}},
        "roar": {"train_pairs": 16, "seeds": [0], "epochs": 1, "batch_size": 8},
        "evaluation": {"sanity": {"max_pairs": 4}, "bootstrap": {"n_resamples": 50}},
        "figures": {"ablation_pairs": 4},
    })
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("configfile", ["config/config.yaml", "config/mscxr.yaml"])
def test_dry_run(configfile):
    res = _run(["-n", "--configfile", configfile, "--cores", "1"])
    assert res.returncode == 0, res.stderr[-3000:]


def test_lint_clean():
    res = _run(["--lint"])
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert "Congratulations, your workflow is in a good condition!" in out, out[-3000:]


@pytest.mark.slow
def test_end_to_end_tiny(tmp_path):
    cfg_path = tiny_config(tmp_path)
    res = _run(["--configfile", str(cfg_path), "--cores", "2", "--resources", "gpu=1"])
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]
    ds = tmp_path / "results" / "synthetic"
    pairs = pd.read_parquet(ds / "pairs.parquet")
    assert len(pairs) >= 48 and set(pairs["split"]) == {"train", "val"}
    assert (ds / "alignment_report.json").exists()
    md = ds / "demo"
    assert (md / "model.pt").exists() and (md / "train_log.json").exists()
    cfg = yaml.safe_load(cfg_path.read_text())
    for method in cfg["attribution"]["methods"]:
        maps, meta = read_npz(md / "maps" / f"{method}.npz")
        image_maps = {k: v for k, v in maps.items() if not k.startswith("text/")}
        assert len(image_maps) == 6 and meta["method"] == method and meta["config_hash"]
        assert all(v.shape == (224, 224) and np.isfinite(v).all() for v in image_maps.values())
        metrics = pd.read_parquet(md / "metrics" / f"{method}.parquet")
        assert len(metrics) == 6
    table = (md / "tables" / "results.md").read_text()
    assert all(m in table for m in cfg["attribution"]["methods"])
    _execute_notebook(ROOT / "notebooks" / "audit_pair.ipynb", md)
    # a rerun with unchanged inputs has nothing to do
    again = _run(["--configfile", str(cfg_path), "--cores", "1", "-n"])
    assert "Nothing to be done" in again.stdout + again.stderr
