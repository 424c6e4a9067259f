"""Benchmark every attribution method: pairs per second, ratio to MATEX, and peak memory, at several
batch sizes, on the demo model and on a randomly initialised ViT-B-32.

Usage: ``python -m matex.bench [--models demo vitb32] [--batch-sizes 1 8 32] [--methods ...]``.
Each (model, method, batch size) runs in a fresh process so its peak memory is its own: on CPU the
growth of the process's peak RSS over the loaded model, on CUDA ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import resource
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

DEMO = {
    "embed_dim": 128,
    "vision": {"layers": 6, "width": 192, "heads": 4, "patch_size": 32, "mlp_ratio": 2.0},
    "text": {"layers": 3, "width": 128, "heads": 4, "context_length": 32},
}
PHRASES = [
    "left lower lobe consolidation",
    "small right pleural effusion",
    "right apical pneumothorax",
    "cardiomegaly",
    "bibasilar atelectasis",
    "patchy opacity in the right mid lung",
]


def _build(model_name: str, device: str):
    import open_clip
    import torch

    from ..data.transforms import InputGeometry
    from ..models.base import MatexModel

    torch.manual_seed(0)
    if model_name == "demo":
        from ..models.loading import load_model

        return load_model("demo", demo=DEMO, device=device)
    clip = open_clip.create_model("ViT-B-32", pretrained=None)
    return MatexModel(clip.eval().to(device), open_clip.get_tokenizer("ViT-B-32"), InputGeometry(224), name="ViT-B-32")


def _measure(
    q,
    model_name: str,
    method: str,
    batch: int,
    repeats: int,
    device: str,
    threads: int,
    params: dict,
    warmup: bool = True,
) -> None:
    import torch

    from ..attribution import explain

    torch.set_num_threads(threads)
    model = _build(model_name, device)
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, 224, 224, generator=gen).to(device)
    texts = [PHRASES[i % len(PHRASES)] for i in range(batch)]
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if warmup:
        explain(model, images, texts, method=method, **params)  # warm-up (counted in the peak)
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        explain(model, images, texts, method=method, **params)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    peak_mb = (
        (torch.cuda.max_memory_allocated() - base) / 2**20
        if device == "cuda"
        else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    )
    q.put({"seconds": min(times), "peak_mb": peak_mb})


# Methods that run hundreds of forward passes per pair: on a CPU they are timed once, without a
# warm-up, and only up to --iterative-max-batch (their cost is linear in the batch anyway).
ITERATIVE = ("rise", "m2ib")


def run_benchmark(
    models: list[str],
    methods: list[str],
    batch_sizes: list[int],
    repeats: int,
    device: str,
    threads: int,
    params: dict[str, dict[str, Any]],
    iterative_max_batch: int | None = None,
) -> pd.DataFrame:
    import pandas as pd

    ctx = mp.get_context("spawn")
    rows = []
    for model_name in models:
        for batch in batch_sizes:
            for method in methods:
                slow = method in ITERATIVE and device == "cpu"
                if slow and iterative_max_batch is not None and batch > iterative_max_batch:
                    continue
                q = ctx.Queue()
                p = ctx.Process(
                    target=_measure,
                    args=(
                        q,
                        model_name,
                        method,
                        batch,
                        1 if slow else repeats,
                        device,
                        threads,
                        params.get(method, {}),
                        not slow,
                    ),
                )
                p.start()
                res = q.get()
                p.join()
                rows.append(
                    {
                        "model": model_name,
                        "method": method,
                        "batch": batch,
                        "pairs_per_s": batch / res["seconds"],
                        "ms_per_pair": 1000 * res["seconds"] / batch,
                        "peak_mb": res["peak_mb"],
                    }
                )
                print(
                    f"{model_name:8s} b={batch:<3d} {method:14s} {rows[-1]['pairs_per_s']:9.2f} pairs/s "
                    f"peak {res['peak_mb']:8.1f} MB",
                    flush=True,
                )
    df = pd.DataFrame(rows)
    ref = df[df["method"] == "matex"].set_index(["model", "batch"])["ms_per_pair"]
    df["time_vs_matex"] = [r.ms_per_pair / ref.get((r.model, r.batch), float("nan")) for r in df.itertuples()]
    return df


def machine_description(device: str, threads: int) -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if device == "cuda" else ""
    return f"{cpu}, {threads} thread(s){gpu}; torch {torch.__version__}, Python {platform.python_version()}"


def cpu_times() -> list[int] | None:
    """The aggregate CPU time counters of /proc/stat (user nice system idle iowait irq softirq steal ...),
    or None where there is no /proc (not Linux)."""
    try:
        with open("/proc/stat") as f:
            return [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None


def steal_fraction(before: list[int] | None, after: list[int] | None) -> float | None:
    """Share of CPU time the hypervisor gave to other guests between two ``cpu_times()`` readings:
    on a shared virtual machine this inflates every wall-clock number, so the benchmark reports it."""
    if not before or not after or len(before) < 8 or len(after) < 8:
        return None
    total = sum(after[:8]) - sum(before[:8])
    return (after[7] - before[7]) / total if total > 0 else None


def to_markdown(df) -> str:
    lines = ["| model | batch | method | pairs/s | ms/pair | time ÷ MATEX | peak MB |", "|---|---|---|---|---|---|---|"]
    for r in df.itertuples():
        lines.append(
            f"| {r.model} | {r.batch} | {r.method} | {r.pairs_per_s:.2f} | {r.ms_per_pair:.1f} | "
            f"{r.time_vs_matex:.2f} | {r.peak_mb:.0f} |"
        )
    return "\n".join(lines)


def target_summary(df) -> str:
    """The performance issue's ratios, per model, each from this run's own measurements."""
    lines = []
    for model_name, g in df.groupby("model", sort=False):
        t = g.set_index(["method", "batch"])

        def get(method, batch, col="ms_per_pair", t=t):
            return t[col].get((method, batch), float("nan"))

        for b in sorted(g["batch"].unique()):
            if ("matex", b) not in t.index:
                continue
            m = get("matex", b)
            parts = [
                f"MATEX/Chefer time {m / get('chefer', b):.2f} (target ≤ 1.25)",
                f"MATEX/Grad-CAM time {m / get('gradcam', b):.2f} (≤ 1.5)",
                f"M2IB/MATEX time {get('m2ib', b) / m:.1f} (≥ 20)",
                f"MATEX/Chefer peak memory {get('matex', b, 'peak_mb') / get('chefer', b, 'peak_mb'):.2f} (≤ 1.5)",
            ]
            lines.append(f"- {model_name}, batch {b}: " + "; ".join(p for p in parts if "nan" not in p))
            newer = [
                f"{label}/MATEX time {get(name, b) / m:.2f}, peak memory "
                f"{get(name, b, 'peak_mb') / get('matex', b, 'peak_mb'):.2f}"
                for name, label in (("legrad", "LeGrad"), ("grad_eclip", "Grad-ECLIP"))
                if (name, b) in t.index
            ]
            if newer:
                lines.append(f"- {model_name}, batch {b}, newer CLIP explainers: " + "; ".join(newer))
        bs = sorted(g.loc[g["method"] == "matex", "batch"])
        if len(bs) > 1:
            lines.append(
                f"- {model_name}: MATEX pairs/s at batch {bs[-1]} ÷ batch {bs[0]} = "
                f"{get('matex', bs[-1], 'pairs_per_s') / get('matex', bs[0], 'pairs_per_s'):.2f} (target ≥ 3)"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["demo", "vitb32"], choices=["demo", "vitb32"])
    ap.add_argument(
        "--methods",
        nargs="+",
        default=[
            "matex",
            "raw_attention",
            "rollout",
            "gradcam",
            "chefer",
            "saliency",
            "grad_input",
            "rise",
            "m2ib",
            "legrad",
            "grad_eclip",
        ],
    )
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8, 32])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rise-masks", type=int, default=None, help="RISE masks per pair (default: the method's)")
    ap.add_argument(
        "--iterative-max-batch",
        type=int,
        default=8,
        help="largest batch at which RISE and M2IB are timed on a CPU (they are linear in the batch)",
    )
    ap.add_argument("--out", default=None, help="also write the table as Markdown here")
    args = ap.parse_args(argv)
    params = {"rise": {"n_masks": args.rise_masks}} if args.rise_masks else {}
    before = cpu_times()
    df = run_benchmark(
        args.models,
        args.methods,
        args.batch_sizes,
        args.repeats,
        args.device,
        args.threads,
        params,
        args.iterative_max_batch,
    )
    steal = steal_fraction(before, cpu_times())
    steal_note = f"; CPU steal by the hypervisor during the run: {100 * steal:.0f} %" if steal is not None else ""
    text = (
        f"Machine: {machine_description(args.device, args.threads)}{steal_note}\n\n{to_markdown(df)}\n\n"
        f"{target_summary(df)}\n"
    )
    print("\n" + text)
    if args.out:
        from ..io import write_text

        write_text(args.out, text)


if __name__ == "__main__":
    main()
