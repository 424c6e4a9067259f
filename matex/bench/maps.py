"""Benchmark: memory and time to read one pair's maps from a large run (``python -m matex.bench.maps``).

An auditor opens one pair at a time. This writes a run-shaped folder of map files (``--pairs`` pairs
per method, ``--methods`` methods, smooth 224x224 float32 maps as the methods make them), then, each in a
fresh process, measures the peak memory (growth of peak RSS over the process after imports) and wall
time of reading one pair's maps from every method file, against reading whole files the way a naive
reader does (``read_npz``), so the ratio is measured in the same run.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import resource
import tempfile
import time
from pathlib import Path


def _smooth_maps(n: int, seed: int):
    import numpy as np
    import torch

    from ..attribution.common import minmax_norm, upsample

    g = torch.Generator().manual_seed(seed)
    return minmax_norm(upsample(torch.rand(n, 7, 7, generator=g), (224, 224))).numpy().astype(np.float32)


def write_run(folder: Path, n_pairs: int, n_methods: int) -> list[Path]:
    from ..io import write_npz

    paths = []
    for m in range(n_methods):
        maps = {}
        for start in range(0, n_pairs, 250):
            block = _smooth_maps(min(250, n_pairs - start), seed=m * 100_000 + start)
            maps.update({f"p{start + i:05d}": block[i] for i in range(len(block))})
        path = folder / f"method{m:02d}.npz"
        write_npz(path, maps, {"method": f"method{m:02d}"})
        paths.append(path)
    return paths


def _peak_kb() -> int:
    """The process's peak resident memory in kB (Linux: VmHWM, which a new program image resets; ru_maxrss
    elsewhere, which on Linux would carry the parent's peak across exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _read(q, paths: list[str], pair: str, whole: bool) -> None:
    import numpy as np  # noqa: F401  (imports before the baseline reading)

    from ..io import read_npz, read_npz_members

    base = _peak_kb()
    t0 = time.perf_counter()
    for p in paths:
        got = read_npz(p)[0][pair] if whole else read_npz_members(p, [pair])[pair]
        assert got.shape == (224, 224)
    q.put({"seconds": time.perf_counter() - t0, "peak_growth_mb": (_peak_kb() - base) / 1024})


def measure(paths: list[Path], pair: str, whole: bool) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_read, args=(q, [str(p) for p in paths], pair, whole))
    proc.start()
    out = q.get()
    proc.join()
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m matex.bench.maps", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--pairs", type=int, default=1000)
    ap.add_argument("--methods", type=int, default=12)
    ap.add_argument("--folder", default=None, help="where to write the map files (default: a temporary folder)")
    ap.add_argument("--skip-whole", action="store_true", help="do not measure the whole-file reader")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.folder or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        paths = write_run(folder, args.pairs, args.methods)
        size_mb = sum(p.stat().st_size for p in paths) / 2**20
        print(
            f"machine: {platform.node()} {platform.processor() or platform.machine()}, "
            f"{mp.cpu_count()} CPUs; wrote {args.methods} files x {args.pairs} pairs "
            f"({size_mb:.0f} MB) in {time.perf_counter() - t0:.0f} s"
        )
        pair = f"p{args.pairs // 2:05d}"
        one = measure(paths, pair, whole=False)
        print(
            f"one pair, every method (read_npz_members): {one['seconds']:.2f} s, "
            f"peak memory +{one['peak_growth_mb']:.0f} MB"
        )
        if not args.skip_whole:
            whole = measure(paths[:1], pair, whole=True)
            print(
                f"one pair from ONE method file, whole file decoded (read_npz): {whole['seconds']:.2f} s, "
                f"peak memory +{whole['peak_growth_mb']:.0f} MB; x{args.methods} methods would be "
                f"~{whole['peak_growth_mb'] * args.methods:.0f} MB if files were held together"
            )


if __name__ == "__main__":
    main()
