"""Cluster runs: the SLURM profile refuses what cannot work before submitting anything, and the dress
rehearsal (workflow/.test/slurm/rehearse.sh) runs a subset of the demo DAG on a real one-node Slurm
cluster, with and without accounting, interrupted and resumed, with artifacts identical to a local run."""

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from matex.pipeline.cluster import seconds, slurm_config, status_query_problem

ROOT = Path(__file__).resolve().parents[1]
REHEARSAL = ROOT / "workflow" / ".test" / "slurm" / "rehearse.sh"
SKIPPED = 77  # rehearse.sh: no Slurm and no package manager to install it

NO_ACCOUNTING = {"AccountingStorageType": "accounting_storage/none", "MinJobAge": "300 sec"}
ACCOUNTING = {"AccountingStorageType": "accounting_storage/slurmdbd", "MinJobAge": "300 sec"}


def test_scontrol_config_is_parsed():
    text = "Configuration data as of now\nAccountingStorageType   = accounting_storage/none\nMinJobAge = 1h\n"
    conf = slurm_config(text)
    assert conf["AccountingStorageType"] == "accounting_storage/none"
    assert seconds(conf["MinJobAge"]) == 3600 and seconds("300 sec") == 300 and seconds(None) is None


def test_sacct_without_accounting_is_refused_with_what_to_set():
    problem = status_query_problem(NO_ACCOUNTING, "sacct", 40)
    assert problem and "slurm-status-command: squeue" in problem


def test_squeue_works_on_both_kinds_and_sacct_with_accounting():
    assert status_query_problem(NO_ACCOUNTING, "squeue", 40) is None
    assert status_query_problem(ACCOUNTING, "squeue", 40) is None
    assert status_query_problem(ACCOUNTING, "sacct", 40) is None


def test_squeue_with_a_short_min_job_age_is_refused_without_accounting():
    """The plugin switches back to sacct when MinJobAge < 3 x the first status-check delay."""
    short = {**NO_ACCOUNTING, "MinJobAge": "60 sec"}
    problem = status_query_problem(short, "squeue", 40)
    assert problem and "MinJobAge" in problem and "120" in problem
    assert status_query_problem(short, "squeue", 10) is None  # checks start early enough


def test_a_plugin_without_the_status_setting_is_refused():
    assert "pins" in status_query_problem(ACCOUNTING, None, 40)


def _fake_slurm(bin_dir: Path, calls: Path) -> None:
    """sbatch, squeue, sacct, scancel, sinfo, scontrol that only record that they were called."""
    bin_dir.mkdir()
    for name in ("sbatch", "squeue", "sacct", "scancel", "sinfo", "scontrol", "sacctmgr", "sshare"):
        path = bin_dir / name
        path.write_text(f'#!/bin/sh\necho "{name} $*" >> "{calls}"\nexit 1\n')
        path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.mark.parametrize(
    "overlay, named",
    [
        ("attribution:\n  methods: [matex, no_such_method]\n", "no_such_method"),
        ("attribution:\n  batch_size: -4\n", "batch_size"),
        ("data:\n  source: mscxr\n  mscxr: {root: ROOT, csv: broken.csv}\n", "broken.csv"),
    ],
)
def test_deterministic_errors_fail_before_any_job_is_submitted(tmp_path, overlay, named):
    """A config error or an unreadable input table fails while the workflow is parsed: the SLURM
    profile's run stops with the key or file named, and no Slurm command was ever called (so no job
    was submitted, and none is retried)."""
    calls = tmp_path / "calls.txt"
    _fake_slurm(tmp_path / "bin", calls)
    (tmp_path / "broken.csv").write_text("dicom_id,path\nabc,files/p10000000/s10000000/abc.jpg\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text(overlay.replace("ROOT", str(tmp_path)))
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    cmd = [sys.executable, "-m", "snakemake", "--profile", "workflow/profiles/slurm", "-d", str(tmp_path / "w")]
    cmd += ["--configfile", str(ROOT / ".test" / "config" / "config.yaml"), str(bad)]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-3000:]
    assert named in out, out[-3000:]
    submitted = [c for c in (calls.read_text().splitlines() if calls.exists() else []) if c.startswith("sbatch")]
    assert submitted == [], submitted


@pytest.fixture(scope="module")
def local_reference_run(tmp_path_factory):
    """One local run of the rehearsal's subset, made by the first rehearsal and reused by the second."""
    return tmp_path_factory.mktemp("local_reference")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["noaccounting", "accounting"])
def test_slurm_dress_rehearsal(tmp_path, kind, local_reference_run):
    """A real one-node Slurm cluster (installed from the OS packages when missing): the demo subset through
    workflow/profiles/slurm, interrupted with SIGINT while jobs are queued (all cancelled), resumed, and
    compared artifact by artifact with a local run (see rehearse.sh)."""
    t0 = time.monotonic()
    res = subprocess.run(
        ["bash", str(REHEARSAL), kind, str(tmp_path / "rehearsal")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
        env={**os.environ, "PYTHON": sys.executable, "REHEARSAL_LOCAL": str(local_reference_run)},
    )
    out = res.stdout + res.stderr
    print(out[-4000:])
    print(f"Slurm dress rehearsal ({kind}): {time.monotonic() - t0:.0f} s")
    if res.returncode == SKIPPED:
        pytest.skip(f"SLURM REHEARSAL NOT RUN ({kind}): {out.strip().splitlines()[-1]}")
    assert res.returncode == 0, out[-6000:]
    assert f"REHEARSAL PASSED ({kind})" in out
    assert "0 differences" in out or "identical" in out, out[-3000:]


def test_memory_and_time_grow_with_the_attempt():
    """A retried job asks for attempt x the memory and time its rule declares; functions stay as they are."""
    from types import SimpleNamespace

    from matex.pipeline.cluster import grow_with_attempt

    def own(wildcards, attempt):
        return 7

    rule = SimpleNamespace(resources={"mem_mb": 8000, "runtime": 240, "gpu": 1, "disk_mb": own})
    grow_with_attempt([rule])
    mem, runtime = rule.resources["mem_mb"], rule.resources["runtime"]
    assert [mem(None, 1), mem(None, 2), runtime(None, 2)] == [8000, 16000, 480]
    assert rule.resources["gpu"] == 1 and rule.resources["disk_mb"] is own
