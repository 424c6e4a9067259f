"""``matex`` command line: small conveniences around the package (the pipeline itself runs with Snakemake).

matex explain IMAGE "PHRASE" [-o out.png]  draw one method's map over a radiograph (--model demo|NAME|PATH)
matex methods                             list the attribution methods, their references and parameters
matex check-config my.yaml                validate a config (an override file is merged onto config/config.yaml)
matex download DEST [--csv-name NAME]     fetch MS-CXR + referenced MIMIC-CXR-JPG images (PhysioNet credentials)
matex bench [...]                         the attribution benchmark (same as python -m matex.bench)
matex compare-runs RUN_A RUN_B            check that two result folders hold the same artifacts
"""

from __future__ import annotations

import argparse
import sys

from ..errors import MatexError


def default_config_path(path: str | None = None) -> str | None:
    """The default config an override file is merged onto: ``config/config.yaml`` of the working
    directory, else the nearest one above ``path`` (``config/mscxr.yaml`` -> ``config/config.yaml``),
    else the checkout matex runs from; None when there is none (an installed wheel, elsewhere)."""
    from pathlib import Path

    from ..config import default_config_for

    here = Path("config/config.yaml")
    if here.is_file():
        return str(here)
    near = default_config_for(path) if path else None
    if near is not None:
        return str(near)
    checkout = Path(__file__).resolve().parents[2] / "config" / "config.yaml"
    return str(checkout) if checkout.is_file() else None


def main(argv: list[str] | None = None) -> int:
    """Run one ``matex`` command; the exit status (1 on a MatexError or differing runs)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        from ..bench import main as bench_main

        bench_main(argv[1:])
        return 0
    args = _build_parser().parse_args(argv)
    try:
        return _run_command(args)
    except MatexError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader stopped early (`matex methods | head`): no traceback
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        return 141  # what a shell reports for a pipe closed by its reader (128 + SIGPIPE)


def _build_parser() -> argparse.ArgumentParser:
    """The ``matex`` parser with one subparser per command."""
    ap = argparse.ArgumentParser(
        prog="matex", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    _add_explain_command(sub)
    sub.add_parser("methods", help="list the attribution methods with their references and parameters")
    _add_check_config_command(sub)
    d = sub.add_parser("download", help="download MS-CXR and the MIMIC-CXR-JPG images it references")
    d.add_argument("dest")
    d.add_argument("--csv-name", default="MS_CXR_Local_Alignment_v1.0.0.csv")
    sub.add_parser("bench", help="attribution benchmark (see python -m matex.bench --help)")
    _add_compare_runs_command(sub)
    return ap


def _add_explain_command(sub: argparse._SubParsersAction) -> None:
    """``matex explain IMAGE PHRASE``: the inputs, the model, the output and how the image is read."""
    e = sub.add_parser(
        "explain",
        help="explain one image-phrase pair and write the overlay picture",
        description="Explain one image with one phrase and write a PNG: the radiograph (as the "
        "model sees it, cropped/letterboxed to its input) with the map on top.",
    )
    e.add_argument(
        "image",
        help="image file, any size: JPEG, PNG or TIFF (8-, 12-, 16-bit or float; grey or colour) or DICOM (.dcm)",
    )
    e.add_argument("phrase", help='the phrase to explain, e.g. "left lower lobe consolidation"')
    e.add_argument("--method", default="matex", help="attribution method (see: matex methods); default matex")
    _add_explain_model_options(e)
    _add_explain_output_options(e)
    e.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a method parameter (YAML value), e.g. --param alpha=0.6; repeatable",
    )
    e.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    _add_explain_image_reading_options(e)


def _add_explain_model_options(e: argparse.ArgumentParser) -> None:
    """Which model ``matex explain`` loads: --model, --pretrained, --arch, --config."""
    e.add_argument(
        "--model",
        default="demo",
        help="demo (the checkpoint ./run.sh pipeline trained), an open_clip name (ViT-B-32, "
        "hf-hub:ORG/REPO) or a checkpoint file; default demo",
    )
    e.add_argument("--pretrained", default=None, help="open_clip pretrained tag or weights file (e.g. openai)")
    e.add_argument("--arch", default=None, help="open_clip architecture of a non-matex checkpoint file")
    e.add_argument(
        "--config",
        default=None,
        help="pipeline config whose results the demo model is read from (default config/config.yaml)",
    )


def _add_explain_output_options(e: argparse.ArgumentParser) -> None:
    """What ``matex explain`` writes and draws: -o, --npy, --components, --box."""
    e.add_argument("-o", "--output", default=None, help="output PNG (default: IMAGE-STEM_METHOD.png here)")
    e.add_argument("--npy", default=None, help="also save the map as a (H, W) float32 .npy file")
    e.add_argument(
        "--components",
        action="store_true",
        help="draw every component of the method (MATEX's terms) side by side with the map",
    )
    e.add_argument(
        "--box",
        nargs=4,
        type=float,
        metavar=("X", "Y", "W", "H"),
        default=None,
        help="draw a box given in original image pixels (x, y top-left, width, height; MS-CXR style)",
    )


def _add_explain_image_reading_options(e: argparse.ArgumentParser) -> None:
    """How ``matex explain`` turns the file into grey levels: --intensity, --window, --max-image-pixels."""
    e.add_argument(
        "--intensity",
        choices=("minmax", "percentile"),
        default=None,
        help="how 12/16-bit, float and DICOM-without-window values become grey levels: min-max or "
        "percentile windowing (default: the config's input.intensity, else minmax); 8-bit images are used as stored",
    )
    e.add_argument(
        "--window",
        nargs=2,
        type=float,
        metavar=("LOW", "HIGH"),
        default=None,
        help="percentile windowing between these percentiles, e.g. --window 0.5 99.5",
    )
    e.add_argument(
        "--max-image-pixels",
        type=int,
        default=None,
        metavar="N",
        help="refuse images of more than N pixels (decompression-bomb guard; default 178956970, or the "
        "environment variable MATEX_MAX_IMAGE_PIXELS, or the config's input.max_image_pixels)",
    )


def _add_check_config_command(sub: argparse._SubParsersAction) -> None:
    """``matex check-config PATH [--base B | --no-base]``."""
    c = sub.add_parser(
        "check-config",
        help="validate a config file against the schema",
        description="Validate a config. As with snakemake --configfile, the file is merged onto "
        "the default config (config/config.yaml) first, so an override file that "
        "sets a few keys is checked as the run will see it.",
    )
    c.add_argument("path")
    c.add_argument(
        "--base", default=None, help="the config the file is merged onto (default: config/config.yaml of this checkout)"
    )
    c.add_argument("--no-base", action="store_true", help="check the file alone, merged onto nothing")


def _add_compare_runs_command(sub: argparse._SubParsersAction) -> None:
    """``matex compare-runs RUN_A RUN_B [--results-dirs DIR_A DIR_B]``."""
    r = sub.add_parser(
        "compare-runs",
        help="compare the maps, tables and records of two result folders "
        "(wall-clock columns excepted); exit 1 when they differ",
    )
    r.add_argument("run_a")
    r.add_argument("run_b")
    r.add_argument(
        "--results-dirs",
        nargs=2,
        metavar=("DIR_A", "DIR_B"),
        default=None,
        help="the two runs' results_dir values, when they differ (e.g. results results_b): "
        "paths recorded in the artifacts are then compared with DIR_B read as DIR_A",
    )


def _run_command(args: argparse.Namespace) -> int:
    """Dispatch the parsed command (bench is run before parsing); its exit status."""
    if args.cmd == "explain":
        from .explain import run_explain

        run_explain(args)
    elif args.cmd == "methods":
        from .explain import print_methods

        print_methods()
    elif args.cmd == "check-config":
        from .explain import check_config

        print(check_config(args.path, base=None if args.no_base else (args.base or default_config_path(args.path))))
    elif args.cmd == "download":
        from ..data.download import download_mscxr

        print(download_mscxr(args.dest, csv_name=args.csv_name))
    elif args.cmd == "compare-runs":
        return _compare_runs(args)
    return 0


def _compare_runs(args: argparse.Namespace) -> int:
    """``matex compare-runs``: print the comparison; 1 when the runs differ, else 0."""
    from ..pipeline.records import compare_runs

    res = compare_runs(args.run_a, args.run_b, tuple(args.results_dirs) if args.results_dirs else None)
    excused = "wall-clock columns" + (" and the results folder in recorded paths" if args.results_dirs else "")
    print(
        f"{res['compared']} artifacts compared, {res['identical_bytes']} byte-identical, the others equal "
        f"apart from {excused}"
        if not (res["differences"] or res["only_in_a"] or res["only_in_b"])
        else f"{res['compared']} artifacts compared"
    )
    for path, reason in res["differences"]:
        print(f"DIFFERENT {path}: {reason}")
    for path in res["only_in_a"]:
        print(f"ONLY IN {args.run_a}: {path}")
    for path in res["only_in_b"]:
        print(f"ONLY IN {args.run_b}: {path}")
    return 1 if (res["differences"] or res["only_in_a"] or res["only_in_b"]) else 0


if __name__ == "__main__":
    sys.exit(main())
