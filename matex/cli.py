"""``matex`` command line: small conveniences around the package (the pipeline itself runs with Snakemake).

  matex check-config config/config.yaml     validate a config, naming any bad key
  matex download DEST [--csv-name NAME]     fetch MS-CXR + referenced MIMIC-CXR-JPG images (PhysioNet credentials)
  matex bench [...]                         the attribution benchmark (same as python -m matex.bench)
  matex compare-runs RUN_A RUN_B            check that two result folders hold the same artifacts
"""
from __future__ import annotations

import argparse
import sys

from .errors import MatexError


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        from .bench import main as bench_main

        bench_main(argv[1:])
        return 0
    ap = argparse.ArgumentParser(prog="matex", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check-config", help="validate a config file against the schema")
    c.add_argument("path")
    d = sub.add_parser("download", help="download MS-CXR and the MIMIC-CXR-JPG images it references")
    d.add_argument("dest")
    d.add_argument("--csv-name", default="MS_CXR_Local_Alignment_v1.0.0.csv")
    sub.add_parser("bench", help="attribution benchmark (see python -m matex.bench --help)")
    r = sub.add_parser("compare-runs", help="compare the maps, tables and records of two result folders "
                                            "(wall-clock columns excepted); exit 1 when they differ")
    r.add_argument("run_a")
    r.add_argument("run_b")
    r.add_argument("--results-dirs", nargs=2, metavar=("DIR_A", "DIR_B"), default=None,
                   help="the two runs' results_dir values, when they differ (e.g. results results_b): "
                        "paths recorded in the artifacts are then compared with DIR_B read as DIR_A")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "check-config":
            from .config import load_config

            cfg = load_config(args.path)
            print(f"{args.path}: valid (dataset {cfg['dataset']}, model {cfg['model']['name']})")
        elif args.cmd == "download":
            from .data.download import download_mscxr

            print(download_mscxr(args.dest, csv_name=args.csv_name))
        elif args.cmd == "compare-runs":
            from .provenance import compare_runs

            res = compare_runs(args.run_a, args.run_b, tuple(args.results_dirs) if args.results_dirs else None)
            excused = "wall-clock columns" + (" and the results folder in recorded paths" if args.results_dirs else "")
            print(f"{res['compared']} artifacts compared, {res['identical_bytes']} byte-identical, the others equal "
                  f"apart from {excused}" if not (res["differences"] or res["only_in_a"] or res["only_in_b"])
                  else f"{res['compared']} artifacts compared")
            for path, reason in res["differences"]:
                print(f"DIFFERENT {path}: {reason}")
            for path in res["only_in_a"]:
                print(f"ONLY IN {args.run_a}: {path}")
            for path in res["only_in_b"]:
                print(f"ONLY IN {args.run_b}: {path}")
            return 1 if (res["differences"] or res["only_in_a"] or res["only_in_b"]) else 0
    except MatexError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
