"""Provenance records, the run comparison used to prove determinism, and the per-rule runtime table."""

import json

import numpy as np
import pandas as pd
import pytest
from test_workflow import ROOT

from matex.config import load_config
from matex.io import write_json, write_npz, write_parquet
from matex.metrics.runtime import collect_benchmarks, per_rule, runtime_markdown
from matex.pipeline.records import compare_runs, model_fingerprint, provenance_record


def _run(root, runtime=0.5, value=1.0, map_value=0.25):
    """A miniature result tree: maps, a map table with a wall-clock column, a tidy table, a JSON log."""
    write_npz(root / "demo/maps/m.npz", {"p0": np.full((4, 4), map_value, np.float32)}, {"config_hash": "h"})
    write_parquet(
        root / "demo/maps/m.parquet",
        pd.DataFrame({"pair_id": ["p0"], "runtime_s": [runtime], "map_mean": [map_value]}),
        {"config_hash": "h"},
    )
    tidy = pd.DataFrame({"pair_id": ["p0", "p0"], "metric": ["auroc", "runtime_ms"], "value": [value, runtime * 1e3]})
    write_parquet(root / "demo/tables/metrics_tidy.parquet", tidy, {"config_hash": "h"})
    write_parquet(root / "demo/metrics/m.parquet", pd.DataFrame({"pair_id": ["p0"], "auroc": [value]}), {"seed": 0})
    write_json(root / "demo/train_log.json", {"final": {"loss": value}, "wall_time_s": runtime})
    (root / "demo/logs").mkdir(parents=True, exist_ok=True)
    (root / "demo/logs/x.json").write_text(json.dumps({"t": runtime}))  # logs are not compared


def test_identical_runs_compare_equal_apart_from_wall_clock(tmp_path):
    _run(tmp_path / "a", runtime=0.5)
    _run(tmp_path / "b", runtime=0.9)
    res = compare_runs(tmp_path / "a", tmp_path / "b")
    assert res["differences"] == [] and res["only_in_a"] == [] and res["only_in_b"] == []
    assert res["compared"] == 5
    assert res["identical_bytes"] == 2  # maps and the metric table; the other three hold wall-clock time


@pytest.mark.parametrize(
    "change, culprit", [({"value": 0.9}, "demo/metrics/m.parquet"), ({"map_value": 0.3}, "demo/maps/m.npz")]
)
def test_a_changed_result_is_reported(tmp_path, change, culprit):
    _run(tmp_path / "a")
    _run(tmp_path / "b", **change)
    res = compare_runs(tmp_path / "a", tmp_path / "b")
    assert culprit in [path for path, _ in res["differences"]]


def test_runs_under_different_results_dirs_compare_equal_with_the_alias(tmp_path):
    """Artifacts record the paths they came from (e.g. the checkpoint); two runs with different
    results_dir values differ only there, which --results-dirs excuses and nothing else."""

    def run(root, results_dir, value=1.0):
        meta = {"model": {"checkpoint": f"{results_dir}/synthetic/demo/model.pt"}, "seed": 0}
        write_npz(root / "demo/maps/m.npz", {"p0": np.full((4, 4), value, np.float32)}, meta)
        write_parquet(root / "demo/metrics/m.parquet", pd.DataFrame({"auroc": [value]}), meta)
        write_json(root / "demo/provenance.json", {"config": {"results_dir": results_dir}, **meta})

    run(tmp_path / "a", "results")
    run(tmp_path / "b", "results_b")
    plain = compare_runs(tmp_path / "a", tmp_path / "b")
    assert sorted(p for p, _ in plain["differences"]) == [
        "demo/maps/m.npz",
        "demo/metrics/m.parquet",
        "demo/provenance.json",
    ]
    assert compare_runs(tmp_path / "a", tmp_path / "b", ("results", "results_b"))["differences"] == []
    run(tmp_path / "c", "results_b", value=2.0)  # a real difference is still one
    res = compare_runs(tmp_path / "a", tmp_path / "c", ("results", "results_b"))
    assert sorted(p for p, _ in res["differences"]) == ["demo/maps/m.npz", "demo/metrics/m.parquet"]


def test_missing_artifact_is_reported(tmp_path):
    _run(tmp_path / "a")
    _run(tmp_path / "b")
    (tmp_path / "b/demo/maps/m.npz").unlink()
    assert compare_runs(tmp_path / "a", tmp_path / "b")["only_in_a"] == ["demo/maps/m.npz"]


def test_provenance_record_has_seed_hashes_versions_and_checkpoint(tmp_path):
    cfg = load_config(ROOT / "config" / "config.yaml", {"results_dir": str(tmp_path)})
    ckpt = tmp_path / "synthetic" / "demo" / "model.pt"
    assert model_fingerprint(cfg)["checkpoint_sha256"] is None  # not trained yet
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"weights")
    data = tmp_path / "pairs.parquet"
    data.write_bytes(b"pairs")
    rec = provenance_record(cfg, {"pairs": data, "checkpoint": ckpt})
    import hashlib

    assert rec["seed"] == 0 and rec["model"]["checkpoint_sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert rec["inputs_sha256"]["pairs"] == hashlib.sha256(b"pairs").hexdigest()
    assert rec["libraries"]["torch"] != "not installed" and rec["matex_version"]
    assert provenance_record(cfg, {"pairs": data, "checkpoint": ckpt}) == rec  # no timestamps
    other = load_config(ROOT / "config" / "config.yaml", {"results_dir": str(tmp_path), "seed": 1})
    assert provenance_record(other, {"pairs": data})["config_hash"] != rec["config_hash"]


def test_benchmark_files_become_a_per_rule_table(tmp_path):
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    (tmp_path / "attribute").mkdir()
    for name, s in [("attribute/matex.0.tsv", 10.0), ("attribute/rise.0.tsv", 200.0), ("prepare.tsv", 8.0)]:
        (tmp_path / name).write_text(header + f"{s}\t0:00:10\t500.5\t1\t1\t1\t0\t0\t95.0\t9.5\n")
    jobs = collect_benchmarks([tmp_path])
    assert sorted(zip(jobs["rule"], jobs["job"])) == [
        ("attribute", "matex.0"),
        ("attribute", "rise.0"),
        ("prepare", ""),
    ]
    table = per_rule(jobs)
    assert list(table.index) == ["attribute", "prepare"]
    assert table.loc["attribute", "total_s"] == 210.0 and table.loc["attribute", "jobs"] == 2
    md = runtime_markdown(jobs)
    assert "| attribute | 2 | 210.0 | 200.0 | 500 |" in md and "summed job wall time 218 s" in md
