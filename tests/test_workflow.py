"""The Snakemake DAG: dry runs of both shipped configs, the linter, and one real end-to-end run of the
implemented rules on a tiny synthetic config."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from matex.config import load_config
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
    """.test/config/config.yaml (an overlay) merged onto config/config.yaml, results under tmp_path."""
    cfg = load_config(ROOT / ".test" / "config" / "config.yaml", {"results_dir": str(tmp_path / "results")})
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.mark.parametrize("configfile", ["config/config.yaml", "config/mscxr.yaml", ".test/config/config.yaml"])
def test_dry_run(configfile):
    res = _run(["-n", "--configfile", configfile, "--cores", "1"])
    assert res.returncode == 0, res.stderr[-3000:]


def test_sharded_dry_run_has_a_job_per_shard_and_a_merge_per_method(tmp_path):
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["attribution"]["shards"] = 3
    path = tmp_path / "sharded.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = _run(["-n", "--configfile", str(path), "--cores", "1", "-d", str(tmp_path)])
    assert res.returncode == 0, res.stderr[-3000:]
    counts = dict(_job_counts(res.stdout))
    n = len(cfg["attribution"]["methods"])
    assert counts["attribute"] == 3 * n and counts["merge_attribution"] == n


def _job_counts(dry_run_output: str) -> list[tuple[str, int]]:
    import re

    return [(m.group(1), int(m.group(2))) for m in re.finditer(r"^(\w+)\s+(\d+)$", dry_run_output, re.M)]


def _jobs_and_resources(dry_run_output: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, resources) of every job listed by a dry run."""
    import re

    jobs, rule = [], None
    for line in dry_run_output.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):", line)
        if m:
            rule = m.group(1)
        elif line.strip().startswith("resources:") and rule:
            res = dict(kv.split("=", 1) for kv in line.split("resources:", 1)[1].strip().split(", "))
            jobs.append((rule, res))
            rule = None
    return jobs


def _job_files(dry_run_output: str, rule: str) -> list[tuple[list[str], list[str]]]:
    """(inputs, outputs) of every ``rule`` job listed by a dry run."""
    jobs, current = [], None
    for line in dry_run_output.splitlines():
        if line.startswith("rule ") or line.startswith("localrule "):
            current = ([], []) if line.split()[1] == f"{rule}:" else None
            if current is not None:
                jobs.append(current)
        elif current is not None and line.strip().startswith(("input:", "output:")):
            key, files = line.strip().split(":", 1)
            current[0 if key == "input" else 1].extend(f.strip() for f in files.split(","))
    return jobs


def test_dry_run_has_text_roar_jobs_for_matex_and_random_per_seed(tmp_path):
    """Text ROAR+: one job per (matex | random, seed) under roar/runs/text/, matex's reading the maps of
    the ROAR+ training pairs, all feeding roar_summary; none when roar.text_methods is empty (the demo,
    for its time budget; the paper config runs MATEX's)."""
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    assert cfg["roar"]["text_methods"] == []
    assert load_config(ROOT / "config" / "mscxr.yaml")["roar"]["text_methods"] == ["matex"]
    cfg["roar"]["text_methods"] = ["matex"]
    with_text = tmp_path / "with_text.yaml"
    with_text.write_text(yaml.safe_dump(cfg))
    res = _run(["-n", "--configfile", str(with_text), "--cores", "1", "-d", str(tmp_path)])
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout + res.stderr
    jobs = _job_files(out, "roar_finetune_text")
    seeds = cfg["roar"]["seeds"]
    names = {Path(o).name: (i, o) for i, outs in jobs for o in outs}
    assert sorted(names) == sorted(f"{v}.seed{s}.json" for v in ("matex", "random") for s in seeds)
    for name, (inputs, output) in names.items():
        assert output.endswith(f"/roar/runs/text/{name}")
        assert any(f.endswith("/roar/maps/matex.npz") for f in inputs) == name.startswith("matex")
    summary_inputs = _job_files(out, "roar_summary")[0][0]
    assert {o for _, o in names.values()} <= set(summary_inputs)
    assert not any("/runs/text/clean" in f for f in summary_inputs)  # one clean run per seed, shared
    res = _run(["-n", "--configfile", "config/config.yaml", "--cores", "1", "-d", str(tmp_path)])
    assert res.returncode == 0, res.stderr[-3000:]
    assert "roar_finetune_text" not in dict(_job_counts(res.stdout)) and "roar_finetune" in dict(
        _job_counts(res.stdout)
    )


def test_slurm_profile_dry_run_places_gpu_and_cpu_jobs(tmp_path):
    """The SLURM profile (snakemake-executor-plugin-slurm): every job of the paper run gets memory and a
    time limit; the jobs that run the model ask for one GPU on the GPU partition, the rest go to the CPU
    partition."""
    res = _run(["-n", "--profile", "workflow/profiles/slurm", "--configfile", "config/mscxr.yaml", "-d", str(tmp_path)])
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = _jobs_and_resources(res.stdout + res.stderr)
    gpu_rules = {
        "attribute",
        "evaluate",
        "sanity",
        "ablation",
        "attribute_roar_train",
        "roar_finetune",
        "roar_finetune_text",
        "roar_retrain",
        "seed_agreement",
    }
    assert {r for r, _ in jobs} >= gpu_rules | {"prepare", "download_mscxr", "aggregate", "figure_metrics"}
    assert len(jobs) > 100
    for rule, resources in jobs:
        if rule == "all":
            continue
        assert int(resources["mem_mb"]) > 0 and int(resources["runtime"]) > 0, (rule, resources)
        if rule in gpu_rules:
            assert resources.get("gpu") == "1" and resources["slurm_partition"] == "gpu", (rule, resources)
        else:
            assert "gpu" not in resources and resources["slurm_partition"] == "cpu", (rule, resources)


def test_lint_clean():
    res = _run(["--lint"])
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert "Congratulations, your workflow is in a good condition!" in out, out[-3000:]


def _pipeline(cfg_path: Path, workdir: Path) -> list[str]:
    return SNAKEMAKE + [
        "--profile",
        "workflow/profiles/local",
        "--configfile",
        str(cfg_path),
        "--cores",
        "2",
        "-d",
        str(workdir),
        "--rerun-incomplete",
    ]


def _kill_during(cmd: list[str], logs: Path, rule: str, timeout: float = 900) -> bool:
    """Start the pipeline and SIGKILL its whole process group while a ``rule`` job is running
    (its log says the step started). True if it was killed, False if the run ended first."""
    import os
    import signal
    import time

    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            started = [
                f
                for f in (logs / rule).glob("*.log")
                if f"step {rule} started" in f.read_text(errors="ignore")
                and f"step {rule} finished" not in f.read_text(errors="ignore")
            ]
            if started:
                time.sleep(1.0)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                # a killed Snakemake leaves its directory lock behind: what a user does next
                unlock = subprocess.run(cmd + ["--unlock"], cwd=ROOT, capture_output=True, text=True, timeout=300)
                assert unlock.returncode == 0, unlock.stderr[-2000:]
                return True
            time.sleep(0.1)
        return False
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _planned_jobs(dry_run_output: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of every job a dry run plans."""
    import re

    jobs: list[tuple[str, dict[str, str]]] = []
    for line in dry_run_output.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):", line)
        if m:
            jobs.append((m.group(1), {}))
        elif line.strip().startswith("wildcards:") and jobs:
            jobs[-1][1].update(kv.strip().split("=", 1) for kv in line.split(":", 1)[1].split(","))
    return jobs


def _jobs_after_change(cfg_path: Path, workdir: Path, change: dict) -> list[tuple[str, dict[str, str]]]:
    """The jobs Snakemake would run on a finished run after one config change (a dry run)."""
    from matex.config import deep_update

    changed = workdir / "changed.yaml"
    changed.write_text(yaml.safe_dump(deep_update(yaml.safe_load(cfg_path.read_text()), change)))
    res = _run(["-n", "--configfile", str(changed), "--cores", "1", "-d", str(workdir)])
    assert res.returncode == 0, res.stderr[-3000:]
    return _planned_jobs(res.stdout + res.stderr)


# jobs that follow any change of what they summarise (the run's provenance record holds the whole config)
_SUMMARIES = {"all", "aggregate", "provenance", "pipeline_runtime", "roar_summary", "roar_curve"}


def _assert_config_tracked_reruns(cfg_path: Path, workdir: Path) -> None:
    """Changing one setting reruns exactly the jobs that use it, and what is downstream of them."""
    # one method's parameter: that method's jobs, the tables and figures; no other method, no training
    jobs = _jobs_after_change(cfg_path, workdir, {"attribution": {"params": {"matex": {"alpha": 0.9}}}})
    rules = {r for r, _ in jobs}
    assert {"attribute", "evaluate", "aggregate"} <= rules, jobs
    assert not rules & {"make_synthetic", "prepare", "train_demo_model"}, jobs
    methods = {w.get("method") or w.get("variant") for r, w in jobs if w.get("method") or w.get("variant")}
    assert methods == {"matex"}, jobs
    assert rules - _SUMMARIES <= {
        "attribute",
        "merge_attribution",
        "evaluate",
        "counterfactual",
        "sanity",
        "ablation",
        "attribute_roar_train",
        "roar_retrain",
        "roar_finetune",
        "roar_finetune_text",
    } | {r for r in rules if r.startswith("figure_")}, jobs
    # the model: training and everything downstream of it, for every method
    jobs = _jobs_after_change(cfg_path, workdir, {"model": {"demo": {"lr": 0.002}}})
    cfg = yaml.safe_load(cfg_path.read_text())
    assert "train_demo_model" in {r for r, _ in jobs} and "prepare" not in {r for r, _ in jobs}
    assert {w["method"] for r, w in jobs if r == "evaluate"} == set(cfg["attribution"]["methods"])
    # a figure option: figures only
    jobs = _jobs_after_change(cfg_path, workdir, {"figures": {"qualitative_per_category": 2}})
    assert {r for r, _ in jobs} - _SUMMARIES == {"figure_qualitative"}, jobs


@pytest.mark.slow
def test_end_to_end_tiny(tmp_path):
    """The whole DAG on a tiny config (two attribution shards per method); then a second run, SIGKILLed
    in the middle of the attribution and again in the middle of a ROAR+ fine-tuning and resumed,
    whose artifacts must equal the first, uninterrupted run's. The second run starts from the first
    run's data and model (Snakemake's records of them stay in the working directory) and makes two
    methods' sharded maps and a ROAR+ fine-tuning with its clean run: the jobs the kills interrupt,
    without re-running the whole DAG (the threads test compares two whole subset runs)."""
    import shutil

    from matex.pipeline.records import compare_runs

    cfg_path = tiny_config(tmp_path)
    res = subprocess.run(_pipeline(cfg_path, tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=1500)
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
        assert meta["seed"] == 0 and meta["model_checkpoint_sha256"] and meta["matex_version"]
        assert all(v.shape == (224, 224) and np.isfinite(v).all() for v in image_maps.values())
        metrics = pd.read_parquet(md / "metrics" / f"{method}.parquet")
        assert len(metrics) == 6
    assert not (md / "maps" / "shards").exists() or not list((md / "maps" / "shards").glob("*.npz"))  # temp()
    table = (md / "tables" / "results.md").read_text()
    assert all(m in table for m in cfg["attribution"]["methods"])
    assert "<table" in (md / "tables" / "results.html").read_text()
    runtime = pd.read_parquet(md / "tables" / "pipeline_runtime.parquet")
    assert {"train_demo_model", "attribute", "evaluate", "roar_finetune", "roar_finetune_text"} <= set(runtime["rule"])
    roar = pd.read_parquet(md / "roar" / "roar_summary.parquet")
    assert {("text", "matex"), ("text", "random"), ("image", "matex")} <= set(zip(roar["modality"], roar["method"]))
    assert "Img ROAR+" in table and "Txt ROAR+" in table
    prov = json.loads((md / "provenance.json").read_text())
    assert prov["seed"] == 0 and prov["model"]["checkpoint_sha256"] == meta["model_checkpoint_sha256"]
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):  # 01_alignment ... 05_prior, audit_pair
        _execute_notebook(notebook, md)
    report = tmp_path / "report.html"
    rep = _run(["--configfile", str(cfg_path), "--cores", "1", "-d", str(tmp_path), "--report", str(report)])
    assert rep.returncode == 0 and report.exists(), rep.stderr[-3000:]
    html = report.read_text(errors="ignore")
    assert "results.html" in html and "qualitative.png" in html and "pipeline_runtime.png" in html
    # the Snakemake workflow catalog's standard report: a zip archive with report.html and the files
    import zipfile

    archive = tmp_path / "report.zip"
    rep = _run(["--configfile", str(cfg_path), "--cores", "1", "-d", str(tmp_path), "--report", str(archive)])
    assert rep.returncode == 0 and archive.exists(), rep.stderr[-3000:]
    names = zipfile.ZipFile(archive).namelist()
    assert any(n.endswith("/report.html") for n in names), names[:20]
    assert any(n.endswith("results.html") for n in names) and any(n.endswith("qualitative.png") for n in names)
    # a rerun with unchanged inputs has nothing to do
    again = _run(["--configfile", str(cfg_path), "--cores", "1", "-n", "-d", str(tmp_path)])
    assert "Nothing to be done" in again.stdout + again.stderr
    _assert_config_tracked_reruns(cfg_path, tmp_path)

    # second run, killed twice, resumed
    first = tmp_path / "first_run"
    shutil.move(tmp_path / "results", first)
    _restore_data_and_model(first / "synthetic", ds)
    targets = [md / "maps" / f"{m}.npz" for m in ("matex", "rise")]
    targets += [md / "roar" / "runs" / f"{variant}.seed0.json" for variant in ("matex", "clean")]
    cmd = _pipeline(cfg_path, tmp_path) + [str(t) for t in targets]
    assert _kill_during(cmd, md / "logs", "attribute"), "the run ended before an attribution job started"
    assert _kill_during(cmd, md / "logs", "roar_finetune"), "the run ended before a ROAR+ job started"
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]
    leftovers = [
        p for p in (tmp_path / "results").rglob(".*") if p.is_file() and p.name != ".snakemake_timestamp"
    ]  # Snakemake's marker in directory() outputs
    assert leftovers == [], leftovers  # no temporary file of an interrupted write survives
    assert all(t.exists() for t in targets) and not (md / "tables").exists()  # the targets, nothing more
    diff = compare_runs(first, tmp_path / "results")
    assert diff["differences"] == [] and diff["only_in_b"] == [], diff
    remade = {t.relative_to(tmp_path / "results").as_posix() for t in targets}
    assert remade.isdisjoint(diff["only_in_a"]) and diff["compared"] >= len(targets) + 2  # + pairs, model


def _restore_data_and_model(first: Path, ds: Path) -> None:
    """Copy the first run's data folder (films, pairs, parsed phrases) and its demo model back into
    ``ds``, keeping their modification times, so that Snakemake sees them as made by its last run."""
    import shutil

    shutil.copytree(first, ds, ignore=shutil.ignore_patterns("demo"))
    (ds / "demo").mkdir()
    for name in ("model.pt", "train_log.json"):
        shutil.copy2(first / "demo" / name, ds / "demo" / name)


@pytest.mark.slow
def test_end_to_end_on_an_mscxr_shaped_csv(tmp_path):
    """The paper run's path on data laid out like MS-CXR (a CSV with MS-CXR's columns and the image
    tree beside it, read by the MS-CXR loader, no synthetic truth) and a local checkpoint instead of
    hub weights: every table and figure is made, with the new columns, and the counterfactual columns
    are absent and said to be."""
    from matex.data.synthetic import generate_synthetic
    from matex.models.loading import demo_model_cfg, load_model, save_checkpoint

    root = tmp_path / "mscxr"
    generate_synthetic(root, n_images=40, seed=1, progress=False)
    csv = next(root.glob("*.csv"))
    demo = {
        "embed_dim": 32,
        "vision": {"layers": 2, "width": 32, "heads": 2, "patch_size": 32, "mlp_ratio": 2.0, "stem_channels": 0},
        "text": {"layers": 1, "width": 32, "heads": 2, "context_length": 32},
    }
    model = load_model("demo", demo=demo, seed=0)
    ckpt = tmp_path / "tiny_clip.pt"
    save_checkpoint(model, ckpt, demo_model_cfg(demo, 224), {"seed": 0})
    cfg = load_config(
        ROOT / ".test" / "config" / "config.yaml",
        {
            "results_dir": str(tmp_path / "results"),
            "dataset": "mscxr_shaped",
            "data": {"source": "mscxr", "mscxr": {"root": str(root), "csv": csv.name}},
            "model": {"name": "tiny-ckpt", "source": "checkpoint", "checkpoint": str(ckpt)},
            "report": {"embed_images": False},
        },
    )
    cfg["attribution"]["shards"] = 1
    path = tmp_path / "mscxr_shaped.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    res = subprocess.run(_pipeline(path, tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=2400)
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]
    md = tmp_path / "results" / "mscxr_shaped" / "tiny-ckpt"
    table = (md / "tables" / "results.md").read_text()
    for column in ("Deletion AUC", "Insertion AUC", "ROAR AUC", "Sanity abs ρ", "Pointing", "Δ vs MATEX"):
        assert column in table, column
    assert "absent on this dataset" in table and "Lesion share" not in table
    assert not (md / "metrics" / "counterfactual").exists()
    for figure in ("roar_curve", "sanity", "qualitative", "metrics"):
        assert (md / "figures" / f"{figure}.png").exists(), figure
    assert (md / "tables" / "localisation_by_phrase.parquet").exists()


@pytest.mark.slow
def test_results_do_not_depend_on_the_threads_a_job_gets(tmp_path):
    """A SLURM job is granted a rule's `threads` (2), the local profile runs it on 1: the maps and metrics
    must be the same (PyTorch's threads are fixed, matex.pipeline.core.TORCH_THREADS). Data and model are
    made once and copied; MATEX's two attribution shards, their merge and the evaluation run with 1
    thread in one copy and 2 in the other."""
    import shutil

    from matex.pipeline.records import compare_runs

    cfg = load_config(ROOT / ".test" / "config" / "config.yaml", {"results_dir": "results"})
    cfg["attribution"]["methods"] = ["matex"]
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    one, two = tmp_path / "one", tmp_path / "two"
    base = ["--configfile", str(path), "--cores", "2"]
    res = _run([*base, "-d", str(one), "results/synthetic/demo/model.pt"])
    assert res.returncode == 0, res.stderr[-3000:]
    shutil.copytree(one, two, symlinks=True)
    target = "results/synthetic/demo/metrics/matex.parquet"
    for workdir, n in ((one, 1), (two, 2)):
        threads = [f"{rule}={n}" for rule in ("attribute", "merge_attribution", "evaluate")]
        res = _run([*base, "-d", str(workdir), "--set-threads", *threads, "--", target])
        assert res.returncode == 0, res.stderr[-3000:]
        # the jobs really were granted n threads (Snakemake prints the line for more than one)
        assert ("threads: 2" in res.stdout + res.stderr) == (n == 2)
    diff = compare_runs(one / "results", two / "results")
    assert diff["compared"] >= 10, diff
    assert diff["differences"] == [] and diff["only_in_a"] == [] and diff["only_in_b"] == [], diff
