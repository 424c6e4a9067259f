"""The Snakemake DAG: dry runs of both shipped configs, the linter, and one real end-to-end run of the
implemented rules on a tiny synthetic config."""
from pathlib import Path
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from matex.config import deep_update, load_config

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def _run(args, cwd=ROOT, timeout=1200):
    return subprocess.run(SNAKEMAKE + args, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def tiny_config(tmp_path: Path) -> Path:
    cfg = load_config(ROOT / "config" / "config.yaml")
    cfg = deep_update(cfg, {
        "results_dir": str(tmp_path / "results"),
        "data": {"synthetic": {"n_images": 48}},
        "model": {"demo": {"vision": {"layers": 2, "width": 32, "heads": 2},
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
    assert (ds / "demo" / "model.pt").exists() and (ds / "demo" / "train_log.json").exists()
    # a rerun with unchanged inputs has nothing to do
    again = _run(["--configfile", str(cfg_path), "--cores", "1", "-n"])
    assert "Nothing to be done" in again.stdout + again.stderr
