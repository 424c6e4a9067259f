"""What made a run, and whether two runs made the same thing.

``provenance_record`` is the per-run record the ``provenance`` rule writes: seed, config hashes,
package and library versions, the model checkpoint's sha256 and the input data's sha256.
``compare_runs`` checks two result folders artifact by artifact: maps (NPZ), Parquet tables and
JSON records must be byte-identical, except that wall-clock measurements (the ``runtime_s`` /
``runtime_ms`` / ``wall_s`` columns, the ``wall_time_s`` / ``wall_s`` / ``elapsed_s`` / ``cpu_s`` keys and the
machine's load average) are allowed to differ and are compared with
those values removed. Logs, Snakemake benchmark files and figures are not compared.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..io import config_hash, file_sha256

TIMING_COLUMNS = ("runtime_s", "runtime_ms", "wall_s")
TIMING_METRICS = ("runtime_ms",)  # rows of the tidy/summary tables that hold wall-clock time
TIMING_KEYS = ("wall_time_s", "wall_s", "elapsed_s", "cpu_s", "load_average_1min")  # run-time measurements in JSON
SKIPPED_DIRS = ("logs", "benchmarks", "figures", ".snakemake")
SKIPPED_FILES = ("pipeline_runtime.parquet",)
COMPARED_SUFFIXES = (".npz", ".parquet", ".json")

_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def cached_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, cached by (path, size, mtime) so that every step can afford to record it."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = file_sha256(path)
    return _SHA_CACHE[key]


def checkpoint_path(cfg: Mapping[str, Any]) -> Path | None:
    """The weights file the configured model is loaded from (None for a hub download by tag)."""
    m = cfg["model"]
    if m["source"] == "demo":
        return Path(cfg["results_dir"]) / cfg["dataset"] / m["name"] / "model.pt"
    if m["source"] == "checkpoint":
        return Path(m["checkpoint"])
    pre = m.get("pretrained")
    return Path(pre) if pre and os.path.isfile(pre) else None


def model_fingerprint(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Source, architecture, pretrained tag and the sha256 of the weights file when there is one."""
    m = cfg["model"]
    path = checkpoint_path(cfg)
    sha = cached_sha256(path) if path is not None and path.is_file() else None
    return {
        "source": m["source"],
        "arch": m.get("arch") if m["source"] != "demo" else None,
        "pretrained": m.get("pretrained") if m["source"] == "hub" else None,
        "checkpoint_sha256": sha,
    }


def library_versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for dist in (
        "torch",
        "torchvision",
        "open_clip_torch",
        "numpy",
        "pandas",
        "pyarrow",
        "scipy",
        "snakemake",
        "matplotlib",
        "seaborn",
    ):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def provenance_record(cfg: Mapping[str, Any], inputs: Mapping[str, str | os.PathLike]) -> dict[str, Any]:
    """The run's provenance: everything needed to say what produced its artifacts (no timestamps, so
    two identical runs write identical records)."""
    from .. import __version__
    from ..config import section_hash

    sections = ("data", "input", "model", "attribution", "evaluation", "roar", "figures", "report")
    return {
        "matex_version": __version__,
        "seed": cfg["seed"],
        "dataset": cfg["dataset"],
        "model_name": cfg["model"]["name"],
        "config_hash": config_hash({k: cfg.get(k) for k in ("seed",) + sections}),
        "section_hashes": {s: section_hash(cfg, s) for s in sections},
        "model": model_fingerprint(cfg),
        "inputs_sha256": {name: cached_sha256(p) for name, p in sorted(inputs.items())},
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "libraries": library_versions(),
        "config": json.loads(json.dumps(dict(cfg), default=str)),
    }


def _strip_timing_json(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip_timing_json(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [_strip_timing_json(v) for v in obj]
    return obj


def _strip_timing_frame(df):
    df = df.drop(columns=[c for c in TIMING_COLUMNS if c in df.columns])
    if "metric" in df.columns:
        df = df[~df["metric"].isin(TIMING_METRICS)].reset_index(drop=True)
    return df


def _aliased(obj: Any, alias: tuple[str, str] | None) -> Any:
    """``obj`` with every string that is run B's results folder, or a path under it, rewritten to
    run A's (``alias`` = (results_dir of A, results_dir of B)): artifacts record the paths they were
    made from, so two runs written under different ``results_dir`` differ only there."""
    if alias is None:
        return obj
    a_dir, b_dir = (d.rstrip("/") for d in alias)
    if isinstance(obj, str):
        return a_dir + obj[len(b_dir) :] if obj == b_dir or obj.startswith(b_dir + "/") else obj
    if isinstance(obj, dict):
        return {k: _aliased(v, alias) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_aliased(v, alias) for v in obj]
    return obj


def _parquet_meta(table, alias: tuple[str, str] | None) -> dict:
    out = {}
    for k, v in (table.schema.metadata or {}).items():
        try:
            out[k] = _aliased(json.loads(v), alias)
        except ValueError:
            out[k] = v
    return out


def compare_file(a: Path, b: Path, results_dirs: tuple[str, str] | None = None) -> str | None:
    """None when two artifacts whose bytes differ are still equal under the rules above (only
    wall-clock values differ, or, with ``results_dirs``, only the results folder in recorded paths),
    else a one-line reason."""
    import pyarrow.parquet as pq

    if a.suffix == ".json":
        ja, jb = json.loads(a.read_text()), _aliased(json.loads(b.read_text()), results_dirs)
        return None if _strip_timing_json(ja) == _strip_timing_json(jb) else "JSON content differs"
    if a.suffix == ".npz":
        from ..io import read_npz

        (arr_a, meta_a), (arr_b, meta_b) = read_npz(a), read_npz(b)
        if meta_a != _aliased(meta_b, results_dirs):
            return "NPZ metadata differs"
        same = arr_a.keys() == arr_b.keys() and all(
            arr_a[k].dtype == arr_b[k].dtype and np.array_equal(arr_a[k], arr_b[k]) for k in arr_a
        )
        return None if same else "map arrays differ"
    if a.suffix == ".parquet":
        ta, tb = pq.read_table(a), pq.read_table(b)
        if _parquet_meta(ta, None) != _parquet_meta(tb, results_dirs):
            return "Parquet metadata differs"
        if ta.equals(tb):
            return None
        da, db = _strip_timing_frame(ta.to_pandas()), _strip_timing_frame(tb.to_pandas())
        has_timing = any(c in ta.column_names for c in TIMING_COLUMNS) or (
            "metric" in ta.column_names and len(da) != ta.num_rows
        )
        if not has_timing:
            return "bytes differ (no wall-clock column to excuse it)"
        try:
            import pandas as pd

            pd.testing.assert_frame_equal(da, db, check_exact=True)
        except AssertionError as e:
            return "values differ outside the wall-clock columns: " + str(e).splitlines()[0]
        return None
    return "bytes differ"


def compare_runs(
    run_a: str | os.PathLike, run_b: str | os.PathLike, results_dirs: tuple[str, str] | None = None
) -> dict[str, Any]:
    """Compare every NPZ, Parquet and JSON artifact under two result folders. ``results_dirs``:
    the two runs' ``results_dir`` config values when they differ (paths recorded in the artifacts
    are then compared with run B's folder read as run A's).

    Returns ``{"compared": n, "identical_bytes": n, "differences": [(path, reason)], "only_in_a": [...],
    "only_in_b": [...]}``; the runs reproduce each other when the last three are empty."""
    run_a, run_b = Path(run_a), Path(run_b)

    def artifacts(root: Path) -> set[str]:
        out = set()
        for p in root.rglob("*"):
            rel = p.relative_to(root)
            if (
                p.is_file()
                and p.suffix in COMPARED_SUFFIXES
                and not p.name.startswith(".")
                and not any(part in SKIPPED_DIRS for part in rel.parts)
                and p.name not in SKIPPED_FILES
            ):
                out.add(rel.as_posix())
        return out

    in_a, in_b = artifacts(run_a), artifacts(run_b)
    diffs, identical = [], 0
    for rel in sorted(in_a & in_b):
        if (run_a / rel).read_bytes() == (run_b / rel).read_bytes():
            identical += 1
            continue
        reason = compare_file(run_a / rel, run_b / rel, results_dirs)
        if reason is not None:
            diffs.append((rel, reason))
    return {
        "compared": len(in_a & in_b),
        "identical_bytes": identical,
        "differences": diffs,
        "only_in_a": sorted(in_a - in_b),
        "only_in_b": sorted(in_b - in_a),
    }
