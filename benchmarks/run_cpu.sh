#!/usr/bin/env bash
# The attribution benchmark as reported in the README: every method on the demo model and on a
# randomly initialised ViT-B-32, 2 CPU threads. RISE (500 masks) and M2IB (10 steps x 10 noise
# draws) run hundreds of passes per pair, so on ViT-B-32 they are timed at batch 1 only.
# Run on an otherwise idle machine; ~15 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
"$PY" -m matex.bench --models demo --batch-sizes 1 8 32 --repeats 3 --threads 2 \
    --iterative-max-batch 8 --out benchmarks/results_cpu_demo.md
"$PY" -m matex.bench --models vitb32 --batch-sizes 1 8 32 --repeats 2 --threads 2 \
    --iterative-max-batch 1 --out benchmarks/results_cpu_vitb32.md
# The newer CLIP explainers beside MATEX, Chefer and Grad-CAM (ratios to MATEX in the same run)
"$PY" -m matex.bench --models demo vitb32 --methods matex chefer gradcam legrad grad_eclip --batch-sizes 1 8 \
    --repeats 5 --threads 1 --out benchmarks/results_cpu_sota.md
"$PY" -m matex.bench.maps --pairs 1000 --methods 12   # one pair read from a 1000-pair, 12-method run (docs/benchmarks.md)
