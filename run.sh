#!/usr/bin/env bash
# The two quick-start commands (see README):
#   ./run.sh pipeline [snakemake args...]   install, then run the whole pipeline on config/config.yaml
#   ./run.sh test [pytest args...]          install, then run the test suite (what CI runs)
#   ./run.sh lint                           ruff (lint + format check), snakefmt and snakemake --lint (CI runs it first)
# Installs into ./.venv with pip from the package registry; safe to re-run (pip skips what is there).
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "matex needs Python >= 3.11 (found $("$PYTHON" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    echo ">> creating .venv"
    "$PYTHON" -m venv .venv
fi
echo ">> installing matex and its dependencies into .venv (first time: ~4 min, ~6 GB with PyTorch)"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]' 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" || true
.venv/bin/python -c 'import matex, open_clip, snakemake' || { echo "install failed" >&2; exit 1; }

cmd=${1:-}
shift || true
case "$cmd" in
    pipeline)
        gpu=()
        if .venv/bin/python -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
            gpu=(--resources gpu=1)   # one CUDA card: one model job at a time
        fi
        exec .venv/bin/snakemake --profile workflow/profiles/local "${gpu[@]}" "$@" ;;
    test)
        exec .venv/bin/python -m pytest "$@" ;;
    lint)
        .venv/bin/ruff check matex tests benchmarks
        .venv/bin/ruff format --check matex tests benchmarks
        .venv/bin/snakefmt --check Snakefile workflow/Snakefile workflow/rules
        .venv/bin/snakemake --lint --cores 1 > /dev/null
        echo "lint: clean" ;;
    *)
        echo "usage: ./run.sh pipeline|test|lint [args...]" >&2; exit 2 ;;
esac
