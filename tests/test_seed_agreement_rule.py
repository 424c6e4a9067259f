"""The seed_agreement rule: its step on a tiny model (the random control disagrees with itself, a
deterministic method agrees exactly), the table the aggregate step makes from it, and the DAG (one job
per stochastic method of the run, none for a deterministic one)."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml
from test_workflow import _job_counts, _run

from matex.config import load_config
from matex.io import read_parquet_meta
from matex.pipeline.params import rule_config
from matex.pipeline.seed_agreement import seed_agreement, seed_agreement_methods, seed_agreement_summary

ROOT = Path(__file__).resolve().parents[1]
CFG = load_config(ROOT / "config" / "config.yaml")


def _run_step(tmp_path, tiny_dataset, tiny_demo, method: str, max_pairs: int = 6, **params) -> pd.DataFrame:
    cfg = load_config(ROOT / "config" / "config.yaml")
    cfg["model"]["demo"] = tiny_demo
    cfg["attribution"].update(split="all", max_pairs=None, device="cpu", batch_size=4, params={method: params})
    cfg["evaluation"]["seed_agreement"] = {"max_pairs": max_pairs, "seeds": [3, 7]}
    wildcards = SimpleNamespace(method=method)
    out = SimpleNamespace(table=tmp_path / f"{method}.parquet")
    inp = SimpleNamespace(pairs=tiny_dataset.pairs_path, images=tiny_dataset.images_path)
    seed_agreement(rule_config(cfg, "seed_agreement", wildcards), inp, out, None, wildcards, 1)
    return pd.read_parquet(out.table)


def test_the_random_control_disagrees_with_itself_and_a_deterministic_method_agrees(tmp_path, tiny_dataset, tiny_demo):
    noise = _run_step(tmp_path, tiny_dataset, tiny_demo, "random")
    assert list(noise.columns) == ["pair_id", "patient", "method", "rho"]
    assert len(noise) == 6 and set(noise["method"]) == {"random"}
    assert np.abs(noise["rho"]).max() < 0.15  # two independent noise maps: no common pixel order
    # the first max_pairs evaluation pairs, with their patients
    pairs = tiny_dataset.pairs
    assert noise["pair_id"].tolist() == pairs["pair_id"].astype(str).tolist()[:6]
    assert noise["patient"].tolist() == pairs["patient_id"].astype(str).tolist()[:6]
    for method in ("nib", "gradcam"):  # no seed: run twice, the same map
        same = _run_step(tmp_path, tiny_dataset, tiny_demo, method, **({"steps": 2} if method == "nib" else {}))
        assert np.allclose(same["rho"], 1.0), (method, same["rho"].tolist())


def test_rise_moves_with_the_seed_and_the_artifact_records_its_settings(tmp_path, tiny_dataset, tiny_demo):
    rise = _run_step(tmp_path, tiny_dataset, tiny_demo, "rise", max_pairs=4, n_masks=16, batch=8)
    assert len(rise) == 4 and (rise["rho"] < 0.999).all()  # 16 masks: another seed, another map
    meta = read_parquet_meta(tmp_path / "rise.parquet")
    assert meta["seeds"] == [3, 7] and meta["method"] == "rise" and meta["config_hash"]
    assert meta["settings"]["attribution"]["params"] == {"rise": {"batch": 8, "n_masks": 16}}


def test_the_step_refuses_equal_seeds(tmp_path, tiny_dataset, tiny_demo):
    from matex.errors import ConfigError

    cfg = load_config(ROOT / "config" / "config.yaml")
    cfg["model"]["demo"] = tiny_demo
    cfg["attribution"]["device"] = "cpu"
    cfg["evaluation"]["seed_agreement"] = {"max_pairs": 2, "seeds": [1, 1]}
    w = SimpleNamespace(method="random")
    inp = SimpleNamespace(pairs=tiny_dataset.pairs_path, images=tiny_dataset.images_path)
    with pytest.raises(ConfigError, match=r"evaluation\.seed_agreement\.seeds: two different seeds"):
        seed_agreement(cfg, inp, SimpleNamespace(table=tmp_path / "x.parquet"), None, w, 1)


def _per_pair(method: str, rho, n_patients: int) -> pd.DataFrame:
    n = len(rho)
    return pd.DataFrame(
        {"pair_id": [f"{method}{i}" for i in range(n)], "patient": [f"p{i % n_patients}" for i in range(n)]}
    ).assign(method=method, rho=rho)


def test_the_table_gives_patient_intervals_the_settings_and_no_interval_on_few_pairs(tmp_path):
    rng = np.random.default_rng(0)
    per_pair = {
        "rise": _per_pair("rise", rng.uniform(0.1, 0.5, 30), 12),
        "random": _per_pair("random", rng.normal(0.0, 0.05, 30), 12),
        "nib": _per_pair("nib", [1.0] * 5 + [np.nan], 6),  # few pairs, one constant map
    }
    paths = []
    for m, df in per_pair.items():
        df.to_parquet(tmp_path / f"{m}.parquet")
        paths.append(tmp_path / f"{m}.parquet")
    cfg = {
        "attribution": {"methods": ["matex", "rise", "nib", "random"], "params": {"rise": {"n_masks": 200}}},
        "evaluation": {"seed_agreement": {"max_pairs": 30, "seeds": [0, 1]}},
    }
    out = SimpleNamespace(seed_agreement=tmp_path / "t.parquet", seed_agreement_md=tmp_path / "t.md")
    md = seed_agreement_summary(cfg, SimpleNamespace(seed_agreement=paths), out, {"config_hash": "x"}, 200, 0.95, 0)
    table = pd.read_parquet(out.seed_agreement).set_index("method")
    assert table.index.tolist() == ["rise", "nib", "random"]  # the run's method order
    rise, rnd, nib = table.loc["rise"], table.loc["random"], table.loc["nib"]
    assert rise["ci_low"] < rise["mean"] < rise["ci_high"] and rise["n"] == 30 and rise["n_patients"] == 12
    assert rnd["ci_high"] < rise["ci_low"]  # the noise is separated from RISE by the intervals
    assert nib["mean"] == 1.0 and nib["n"] == 5 and nib["n_constant"] == 1 and np.isnan(nib["ci_low"])
    assert rise["settings"] == "n_masks=200" and "no seed" in nib["settings"] and "steps=10" in nib["settings"]
    assert md == out.seed_agreement_md.read_text()
    assert "### Seed-to-seed agreement" in md and "seeds 0 and 1" in md and "first 30 evaluation pairs" in md
    assert "| rise |" in md and "n_masks=200" in md and "(no interval)†" in md and "1 constant maps left out" in md
    # a run without a stochastic method: a table that says so; a rule without these outputs: nothing
    empty = seed_agreement_summary(cfg, SimpleNamespace(seed_agreement=[]), out, {}, 200, 0.95, 0)
    assert "No stochastic method" in empty and pd.read_parquet(out.seed_agreement).empty
    assert seed_agreement_summary(cfg, SimpleNamespace(), SimpleNamespace(), {}, 200, 0.95, 0) == ""


def test_the_methods_are_the_runs_stochastic_ones_in_its_order():
    assert seed_agreement_methods(CFG) == ["rise", "m2ib", "random"]
    assert seed_agreement_methods({"attribution": {"methods": ["nib", "matex", "m2ib_cxr"]}}) == ["nib", "m2ib_cxr"]


def _dry_run(tmp_path, methods=None):
    tmp_path.mkdir()
    args = ["-n", "--cores", "1", "-d", str(tmp_path)]
    if methods is not None:
        cfg = load_config(ROOT / "config" / "config.yaml")
        cfg["attribution"]["methods"] = methods
        cfg["evaluation"]["sanity"]["methods"] = None
        path = tmp_path / "cfg.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        args += ["--configfile", str(path)]
    res = _run(args)
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = res.stdout.split("rule seed_agreement:")[1:]
    return dict(_job_counts(res.stdout)), sorted(j.split("wildcards: method=")[1].split()[0] for j in jobs)


def test_the_dag_has_one_job_per_stochastic_method_and_none_for_deterministic_ones(tmp_path):
    counts, methods = _dry_run(tmp_path / "demo")
    assert counts["seed_agreement"] == 3 and methods == ["m2ib", "random", "rise"]
    counts, methods = _dry_run(tmp_path / "mixed", ["matex", "gradcam", "nib", "rise", "prior_only"])
    assert counts["seed_agreement"] == 2 and methods == ["nib", "rise"]
    counts, methods = _dry_run(tmp_path / "none", ["matex", "gradcam", "prior_only"])
    assert "seed_agreement" not in counts and methods == [] and counts["aggregate"] == 1
