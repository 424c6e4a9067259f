"""Regenerate the documentation pages that come from artifacts or docstrings.

    python -m matex.docgen.report_docs results RESULTS_DIR [MORE_RUNS ...] [--out docs/results.md] [--machine TEXT]
    python -m matex.docgen.report_docs api [--out docs/api.md]

``results`` writes the demo's tables from a finished run's model folder (``results/synthetic/demo``):
the run's own ``tables/results.md``, the demo model's training record, the per-rule runtime, and the
commit and machine that made them; with more runs of the same config (another machine, another
seed), a table of how far each method's mean moves between them. ``api`` writes the API reference
from the public functions' docstrings. Both read only; nothing is recomputed.
"""

from __future__ import annotations

import argparse
import inspect
import json
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path

RESULTS_HEADER = """# Results

These tables are regenerated from a finished run's artifacts by a script, never typed in:

```bash
./run.sh pipeline
.venv/bin/python -m matex.docgen.report_docs results results/synthetic/demo --machine "describe the machine"
```

The numbers depend on the machine (CPU kind and thread count change floating-point reductions, so
the trained demo model and every map differ slightly), on the seed, and on the config; the run's
commit, machine and config hash are given below. Compare runs of the same config with
`matex compare-runs`, and regenerate this page with several runs (`... results RUN_A RUN_B`) to see
how much each number moves between them. What each column means: [Evaluation](evaluation.md).
"""


def _git_commit(cwd: str | Path = ".") -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return (
            out.stdout.strip() + (" (with uncommitted changes)" if dirty else "") if out.returncode == 0 else "unknown"
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _scalars(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    """Flattened scalar entries of a JSON record (lists and long values left out)."""
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out += _scalars(v, f"{prefix}{k}.")
        elif isinstance(v, (int, float, str, bool)) and len(str(v)) <= 80:
            out.append((f"{prefix}{k}", v))
    return out


def run_section(model_dir: Path, machine: str | None, commit: str | None) -> str:
    """The Markdown section of one run: provenance line, training record, tables, runtime."""
    prov = _read_json(model_dir / "provenance.json")
    lines = [f"## Run `{model_dir}`", ""]
    lib = prov.get("libraries", {})
    lines += [
        f"- commit: {commit or _git_commit()}",
        f"- machine: {machine or platform.processor() or platform.machine()} "
        f"({prov.get('platform', platform.platform())}, Python {prov.get('python', platform.python_version())}"
        + (f", torch {lib['torch']}" if isinstance(lib, dict) and lib.get("torch") else "")
        + ")",
        f"- config hash: `{prov.get('config_hash', 'unknown')}`, seed {prov.get('seed', '?')}, "
        f"matex {prov.get('matex_version', '?')}",
        "",
    ]
    train = _read_json(model_dir / "train_log.json")
    if train:
        lines += ["### The demo model", "", "| entry | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in _scalars(train)]
        lines.append("")
    results = model_dir / "tables" / "results.md"
    if results.is_file():
        text = results.read_text().strip()
        lines += [text.replace("\n# ", "\n### ").replace("\n## ", "\n### "), ""]
    else:
        lines += ["(no `tables/results.md` in this run yet: the `aggregate` rule has not run)", ""]
    intervention = model_dir / "tables" / "shortcut_intervention.md"
    if intervention.is_file():  # synthetic only: does the score follow the drain on the shortcut films?
        lines += [intervention.read_text().strip().replace("\n# ", "\n### ").replace("\n## ", "\n### "), ""]
    runtime = model_dir / "tables" / "pipeline_runtime.md"
    if runtime.is_file():
        lines += ["<details><summary>Time per rule</summary>", "", runtime.read_text().strip(), "", "</details>", ""]
    return "\n".join(lines)


def spread_section(model_dirs: Sequence[Path]) -> str:
    """Per method and metric: the mean in each run and the range between runs (overall rows)."""
    import pandas as pd

    frames = []
    for k, d in enumerate(model_dirs):
        path = d / "tables" / "summary.parquet"
        if path.is_file():
            s = pd.read_parquet(path)
            if "category" in s.columns:
                s = s[s["category"] == "all"]
            frames.append(s.assign(run=k))
    if len(frames) < 2:
        return ""
    df = pd.concat(frames)
    wide = df.pivot_table(index=["method", "metric"], columns="run", values="mean")
    wide["range"] = wide.max(axis=1) - wide.min(axis=1)
    cols = [f"run {k}" for k in wide.columns[:-1]]
    lines = [
        "## How much the numbers move between runs",
        "",
        "Runs: " + "; ".join(f"run {k} = `{d}`" for k, d in enumerate(model_dirs)),
        "",
        "| method | metric | " + " | ".join(cols) + " | range |",
        "|---|---|" + "---|" * (len(cols) + 1),
    ]
    for (method, metric), row in wide.iterrows():
        lines.append(
            f"| {method} | {metric} | " + " | ".join(f"{v:.2f}" for v in row.iloc[:-1]) + f" | {row['range']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def results_markdown(
    model_dirs: Sequence[str | Path], machine: str | None = None, commit: str | None = None, archive: str | None = None
) -> str:
    dirs = [Path(d) for d in model_dirs]
    parts = [RESULTS_HEADER] + [run_section(d, machine, commit) for d in dirs]
    spread = spread_section(dirs)
    if spread:
        parts.append(spread)
    if archive:
        parts.append(archive)
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------- API
API_OBJECTS = [
    "matex.load_model",
    "matex.explain",
    "matex.Explanation",
    "matex.methods",
    "matex.spatial_prior",
    "matex.attribution.register",
    "matex.attribution.get_method",
    "matex.config.load_config",
    "matex.io.read_npz",
    "matex.io.read_parquet_meta",
    "matex.errors.MatexError",
]


def _resolve(dotted: str):
    import importlib

    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _signature(obj) -> str:
    """The signature with annotations evaluated (no quotes), or as written when they cannot be."""
    try:
        return str(inspect.signature(obj, eval_str=True))
    except Exception:  # noqa: BLE001 - an annotation naming a type imported only for checking
        try:
            return str(inspect.signature(obj))
        except (TypeError, ValueError):
            return "(...)"


def api_markdown(names: Sequence[str] = API_OBJECTS) -> str:
    """One section per public object: its signature and docstring (examples stay doctests)."""
    lines = [
        "# API reference",
        "",
        "Generated from the docstrings by `python -m matex.docgen.report_docs api`; the examples are doctests",
        "run by the test suite. `help(matex)` shows the same in a Python session.",
        "",
    ]
    for dotted in names:
        obj = _resolve(dotted)
        sig = _signature(obj)
        kind = "class" if inspect.isclass(obj) else "function"
        lines += [
            f"## `{dotted}`",
            "",
            f"```python\n{kind} {dotted.rpartition('.')[2]}{sig}\n```",
            "",
            inspect.cleandoc(obj.__doc__ or "(no docstring)"),
            "",
        ]
        if inspect.isclass(obj):
            for name, member in inspect.getmembers(obj, inspect.isfunction):
                if not name.startswith("_") and member.__qualname__.startswith(obj.__name__ + "."):
                    lines += [
                        f"### `{obj.__name__}.{name}{_signature(member)}`",
                        "",
                        inspect.cleandoc(member.__doc__ or ""),
                        "",
                    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m matex.docgen.report_docs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="what", required=True)
    r = sub.add_parser("results", help="docs/results.md from one or more runs' model folders")
    r.add_argument("runs", nargs="+")
    r.add_argument("--out", default="docs/results.md")
    r.add_argument("--machine", default=None, help="how to describe the machine (default: the CPU's name)")
    r.add_argument("--commit", default=None, help="the commit that made the runs (default: this checkout's HEAD)")
    r.add_argument("--archive", default=None, help="a Markdown file appended as-is (earlier measured runs)")
    a = sub.add_parser("api", help="docs/api.md from the docstrings")
    a.add_argument("--out", default="docs/api.md")
    args = ap.parse_args(argv)
    from ..io import write_text

    if args.what == "results":
        archive = Path(args.archive).read_text() if args.archive else None
        write_text(args.out, results_markdown(args.runs, args.machine, args.commit, archive))
    else:
        write_text(args.out, api_markdown())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
