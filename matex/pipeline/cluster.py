"""Cluster runs: retried jobs ask for more, and a SLURM run whose job states could not be read fails
before submitting anything.

Fail fast when snakemake-executor-plugin-slurm could not learn its jobs' states.

The plugin polls job states with ``sacct`` (Slurm's accounting database, slurmdbd) or ``squeue`` (the
controller's memory of recent jobs, kept ``MinJobAge`` seconds after a job ends). On a cluster without
accounting, ``sacct`` answers nothing, and the plugin waits for ever on jobs it never sees finish;
``squeue`` works if ``MinJobAge`` outlasts the plugin's first status checks (3 x
``init_seconds_before_status_checks``; below that the plugin itself switches back to ``sacct``).
"""

from __future__ import annotations

import re
import subprocess
from typing import Any


def grow_with_attempt(rules: Any, names: tuple[str, ...] = ("mem_mb", "runtime")) -> None:
    """Make each rule's fixed ``mem_mb`` and ``runtime`` the first attempt's: a retried job (the SLURM
    profile's ``retries``) asks for ``attempt`` times as much, Snakemake's standard way, so a job killed
    for lack of memory or time gets more. Rules whose value is already a function are left alone."""
    for rule in rules:
        for name in names:
            base = rule.resources.get(name)
            if isinstance(base, int) and not isinstance(base, bool):
                rule.resources[name] = _times_attempt(base)


def _times_attempt(base: int):
    def resource(wildcards: Any, attempt: int) -> int:
        return base * attempt

    return resource


class SlurmSetupError(RuntimeError):
    """The cluster and the profile's status query do not fit; the message says what to set."""


def slurm_config(text: str) -> dict[str, str]:
    """``scontrol show config`` output as {key: value}."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(\w+)\s*=\s*(.*?)\s*$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def seconds(value: str | None) -> int | None:
    """``MinJobAge`` as seconds ('300 sec', '1h', '300')."""
    m = re.match(r"^(\d+)\s*([a-zA-Z]*)", value or "")
    if not m:
        return None
    return int(m.group(1)) * (3600 if m.group(2).lower() in ("h", "hour", "hours") else 1)


def status_query_problem(conf: dict[str, str], status_command: str | None, init_seconds: int) -> str | None:
    """Why the plugin's status query would hang on this cluster, or None when it will work."""
    if status_command is None:
        return (
            "this snakemake-executor-plugin-slurm has no status_command setting; install the version matex "
            "pins (pip install -e .) so job states can be read with squeue"
        )
    if "accounting_storage/none" not in conf.get("AccountingStorageType", ""):
        return None  # sacct works; squeue falls back to it when MinJobAge is short
    if status_command == "sacct":
        return (
            "this cluster keeps no job accounting (AccountingStorageType=accounting_storage/none), so "
            "sacct never reports a job state and the run would wait for ever. Set "
            "slurm-status-command: squeue in the profile (workflow/profiles/slurm does)"
        )
    age, need = seconds(conf.get("MinJobAge")), 3 * int(init_seconds)
    if age is None or age < need:
        return (
            f"this cluster keeps no job accounting and forgets finished jobs after MinJobAge={age} s, "
            f"sooner than the plugin's first status checks ({need} s): the run would wait for ever. Lower "
            f"slurm-init-seconds-before-status-checks below {(age or 0) // 3 or 1} or ask for MinJobAge >= {need}"
        )
    return None


def check_slurm_status_query(workflow: Any) -> None:
    """Raise :class:`SlurmSetupError` before any job is submitted when the run would hang (only when
    Snakemake runs with the slurm executor; a no-op otherwise)."""
    plugin = getattr(workflow, "executor_plugin", None)
    if plugin is None or getattr(plugin, "name", None) != "slurm":
        return
    settings = workflow.executor_settings
    try:
        text = subprocess.run(
            ["scontrol", "show", "config"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise SlurmSetupError(f"cannot read the Slurm configuration (scontrol show config): {e}") from e
    problem = status_query_problem(
        slurm_config(text),
        getattr(settings, "status_command", None),
        getattr(settings, "init_seconds_before_status_checks", None) or 40,
    )
    if problem:
        raise SlurmSetupError(f"SLURM run refused before submitting any job: {problem}.")
