"""What ``matex explain``, ``matex methods`` and ``matex check-config`` do (the parsers are in cli.py)."""

from __future__ import annotations

import argparse
import difflib
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError, DataError


def _project_root(config: Path) -> Path:
    """The folder a config's relative ``results_dir`` is read from: the checkout holding its
    ``config/`` folder (where Snakemake runs), else the config's own folder."""
    config = config.resolve()
    return config.parent.parent if config.parent.name == "config" else config.parent


def demo_candidates(config_path: str | Path | None) -> list[Path]:
    """The config files ``--model demo`` reads, in order: ``--config`` when given; else
    ``config/config.yaml`` of the working directory, then that of the checkout matex runs from."""
    if config_path:
        return [Path(config_path)]
    here, checkout = Path("config/config.yaml"), Path(__file__).resolve().parents[2] / "config" / "config.yaml"
    found = [p for p in (here, checkout) if p.is_file()]
    return list(dict.fromkeys(p.resolve() for p in found))


def demo_checkpoint(config_path: str | Path | None) -> tuple[Path, dict | None, list[Path]]:
    """Where ``./run.sh pipeline`` wrote the demo model: ``{results_dir}/{dataset}/{model.name}/model.pt``
    of the first config of :func:`demo_candidates` that has one, a relative ``results_dir`` read from
    the config's checkout (not the working directory). Returns that path, its config (None when no
    config was found) and every path looked at (the first is returned when none exists)."""
    from ..config import load_config, model_dir

    looked: list[tuple[Path, dict | None]] = []
    for config in demo_candidates(config_path):
        if not config.is_file():
            raise ConfigError(f"--config: config file not found: {config}")
        cfg = load_config(config)
        rel = model_dir(cfg) if cfg["model"].get("source", "demo") == "demo" else Path("results/synthetic/demo")
        ckpt = rel / "model.pt" if rel.is_absolute() else _project_root(config) / rel / "model.pt"
        looked.append((ckpt, cfg))
        if ckpt.is_file():
            return ckpt, cfg, [p for p, _ in looked]
    if not looked:
        looked.append((Path("results/synthetic/demo/model.pt").resolve(), None))
    return looked[0][0], looked[0][1], [p for p, _ in looked]


def load_cli_model(
    name: str,
    pretrained: str | None = None,
    arch: str | None = None,
    config_path: str | None = None,
    device: str = "cpu",
):
    """The model ``--model`` names: ``demo`` (the pipeline's trained checkpoint), a checkpoint file, or
    an open_clip hub name (``ViT-B-32`` with ``--pretrained``, ``hf-hub:ORG/REPO``)."""
    from ..models.loading import load_model, load_model_from_config, resolve_device

    device = resolve_device(device)
    if name == "demo":
        ckpt, cfg, looked = demo_checkpoint(config_path)
        if not ckpt.is_file():
            raise ConfigError(
                f"no demo model: looked at {', '.join(str(p) for p in looked)}; run ./run.sh pipeline "
                "in the checkout first (it trains one, ~5 min), name its config with --config, "
                "or pass --model PATH (a checkpoint) or --model ViT-B-32 --pretrained TAG"
            )
        if cfg is not None:
            return load_model_from_config(cfg, checkpoint=str(ckpt), device=device)
        return load_model("checkpoint", checkpoint=str(ckpt), device=device)
    if Path(name).is_file():
        return load_model("checkpoint", checkpoint=name, arch=arch, device=device)
    if name.endswith((".pt", ".pth", ".bin", ".safetensors")):
        raise ConfigError(f"--model: checkpoint file not found: {name}")
    return load_model("hub", arch=name, pretrained=pretrained, device=device)


def _parse_params(items: list[str]) -> dict[str, Any]:
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--param {item!r}: expected KEY=VALUE, e.g. --param alpha=0.6")
        params[key.strip()] = yaml.safe_load(value)
    return params


def _did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


def validate_request(method: str, params: Mapping[str, Any], phrase: str) -> None:
    """Check the method, its parameters and the phrase against the method catalogue (no torch, no
    model): a typo fails in a fraction of a second, with the nearest name suggested."""
    from ..catalog import check_param_type, load_catalog

    catalog = load_catalog()
    if method not in catalog:
        raise ConfigError(
            f"--method: unknown attribution method {method!r}{_did_you_mean(method, sorted(catalog))}; "
            f"known: {', '.join(sorted(catalog))}"
        )
    declared = catalog[method]["params"]
    for key, value in params.items():
        if key not in declared:
            raise ConfigError(
                f"--param {key}: unknown parameter attribution.params.{method}.{key}"
                f"{_did_you_mean(key, sorted(declared))} of {method!r}; known: {sorted(declared) or 'none'}"
            )
        check_param_type(method, key, value, declared[key]["type"])
    if not phrase.strip():
        raise DataError('the phrase is empty: give the finding to explain, e.g. "left lower lobe consolidation"')


def cli_geometry(model_geometry: Any, args: argparse.Namespace, cfg: Mapping[str, Any] | None) -> Any:
    """The model's geometry with the image-reading settings: ``--intensity``/``--window`` and
    ``--max-image-pixels``, else the config's ``input.intensity``/``input.max_image_pixels``."""
    from dataclasses import replace

    from ..data.transforms import Intensity

    inp = dict((cfg or {}).get("input") or {})
    intensity = dict(inp.get("intensity") or {})
    if args.intensity is not None:
        intensity["mode"] = args.intensity
    if args.window is not None:
        intensity.update(mode="percentile", low=args.window[0], high=args.window[1])
    try:
        reading = Intensity(**intensity)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"--intensity/--window: {e}") from None
    max_pixels = args.max_image_pixels if args.max_image_pixels is not None else inp.get("max_image_pixels")
    return replace(model_geometry, intensity=reading, max_pixels=max_pixels)


def _check_args(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    image = Path(args.image)
    if not image.is_file():
        raise DataError(f"image file not found: {image}")
    params = _parse_params(args.param)
    validate_request(args.method, params, args.phrase)
    if args.max_image_pixels is not None and args.max_image_pixels <= 0:
        raise ConfigError(f"--max-image-pixels must be a positive number, got {args.max_image_pixels}")
    return image, params


def run_explain(args: argparse.Namespace) -> Path:
    """Validate the request, load the model, explain the pair, write the picture (and the map as .npy);
    print what was written."""
    image, params = _check_args(args)  # before the model: a typo costs no model load
    from tqdm import tqdm

    import matex

    out_path = Path(args.output or f"{image.stem}_{args.method}.png")
    t0 = time.perf_counter()
    with tqdm(
        total=3,
        desc="loading model",
        file=sys.stderr,
        disable=None,
        bar_format="{desc:<28} {bar:20} {n_fmt}/{total_fmt} [{elapsed}]",
    ) as bar:
        model = load_cli_model(args.model, args.pretrained, args.arch, args.config, args.device)
        cfg = demo_checkpoint(args.config)[1] if args.model == "demo" else None
        model.geometry = cli_geometry(model.geometry, args, cfg)
        bar.set_description(f"explaining ({args.method})")
        bar.update()
        out = matex.explain(model, image, args.phrase, method=args.method, **params)
        bar.set_description("writing")
        bar.update()
        _write_outputs(args, out, model, out_path)
        bar.update()
    m = out.image[0]
    y, x = divmod(int(m.argmax()), m.shape[1])
    parts = f", components: {', '.join(out.components)}" if args.components and out.components else ""
    print(
        f"wrote {out_path} ({args.method} on {model.name}, {time.perf_counter() - t0:.1f} s; map maximum at "
        f"x={x}, y={y} of the {m.shape[1]}x{m.shape[0]} input{parts})"
    )
    print(f"read {image}: {_describe_input(out.meta['inputs'][0])}")
    if args.npy:
        print(f"wrote {args.npy} (map, {m.shape[0]}x{m.shape[1]} float32 in [0, 1])")
    return out_path


def _describe_input(info: Mapping[str, Any]) -> str:
    """One line: format, size, how intensities were mapped, pixel spacing when known."""
    how = dict(info.get("intensity") or {})
    text = f"{info.get('format', '?')} {'x'.join(str(v) for v in info.get('size', []))}, intensities: {how.pop('mode', '?')}"
    if how:
        text += " " + ", ".join(f"{k} {v}" for k, v in how.items())
    if info.get("photometric") == "MONOCHROME1":
        text += ", MONOCHROME1 inverted"
    if info.get("pixel_spacing_mm"):
        text += f", pixel spacing {' x '.join(f'{v:g}' for v in info['pixel_spacing_mm'])} mm"
    return text


def _write_outputs(args: argparse.Namespace, out: Any, model: Any, out_path: Path) -> None:
    """The overlay (or the components row) with the optional --box, and the optional .npy map."""
    from ..io import atomic_path

    box = None
    if args.box is not None:
        width, height = out.meta["inputs"][0]["size"]
        box, status = model.geometry.map_box(*args.box, width, height)
        if box is None:
            raise DataError(
                f"--box {args.box} lies outside the model input ({model.geometry.mode} "
                f"to {model.geometry.size} px) of this {width}x{height} image"
            )
    if args.components:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out_path, suffix=".png") as tmp:
            out.components_row(0, box=box, scale=2).save(tmp, format="PNG")
    else:
        out.save(out_path, 0, box=box)
    if args.npy:
        import numpy as np

        Path(args.npy).parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(args.npy, suffix=".npy") as tmp, open(tmp, "wb") as f:
            np.save(f, out.image[0].numpy())


def print_methods() -> None:
    """One line per method: name, reference, then its parameters with their defaults (read from the
    method catalogue, so no torch import: answers in a fraction of a second)."""
    from ..catalog import load_catalog

    for name, entry in sorted(load_catalog().items()):
        params = ", ".join(f"{k}={p['default']!r}" for k, p in entry["params"].items())
        print(f"{name:<15} {entry['reference'] or '-'}")
        if params:
            print(f"{'':<15} parameters: {params}")


def _read_mapping(path: str | Path) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file {path} must hold a mapping of keys, not a {type(data).__name__}")
    return data


def check_config(path: str, base: str | None) -> str:
    """Validate ``path`` merged onto ``base`` (as ``snakemake --configfile path`` merges it onto the
    Snakefile's config); returns the one-line verdict, raises ConfigError naming the bad key."""
    from ..config import deep_update, validate_config

    override = _read_mapping(path)
    if base is None:
        cfg, how = override, "checked alone"
    else:
        cfg, how = deep_update(_read_mapping(base), override), f"merged onto {base}"
    validate_config(cfg)
    return (
        f"{path}: valid ({how}; dataset {cfg['dataset']}, model {cfg['model']['name']}, "
        f"{len(cfg.get('attribution', {}).get('methods', []))} methods)"
    )
