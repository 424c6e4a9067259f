"""What ``matex explain``, ``matex methods`` and ``matex check-config`` do (the parsers are in cli.py)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, DataError


def demo_checkpoint(config_path: str | Path | None) -> tuple[Path, dict | None]:
    """Where ``./run.sh pipeline`` wrote the demo model: ``{results_dir}/{dataset}/{model.name}/model.pt``
    of the config (default ``config/config.yaml``), and that config (None when there is none)."""
    from .cli import default_config_path
    from .config import load_config, model_dir

    found = config_path or default_config_path()
    path = Path(found) if found else None
    if path is not None and path.is_file():
        cfg = load_config(path)
        if cfg["model"].get("source", "demo") == "demo":
            return model_dir(cfg) / "model.pt", cfg
    return Path("results/synthetic/demo/model.pt"), None


def load_cli_model(
    name: str,
    pretrained: str | None = None,
    arch: str | None = None,
    config_path: str | None = None,
    device: str = "cpu",
):
    """The model ``--model`` names: ``demo`` (the pipeline's trained checkpoint), a checkpoint file, or
    an open_clip hub name (``ViT-B-32`` with ``--pretrained``, ``hf-hub:ORG/REPO``)."""
    from .models.loading import load_model, load_model_from_config, resolve_device

    device = resolve_device(device)
    if name == "demo":
        ckpt, cfg = demo_checkpoint(config_path)
        if not ckpt.is_file():
            raise ConfigError(
                f"no demo model at {ckpt}: run ./run.sh pipeline first (it trains one, ~5 min), "
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


def run_explain(args: argparse.Namespace) -> Path:
    """Load the model, explain the pair, write the picture (and the map as .npy); print what was written."""
    from tqdm import tqdm

    import matex

    image = Path(args.image)
    if not image.is_file():
        raise DataError(f"image file not found: {image}")
    params = _parse_params(args.param)
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
        bar.set_description(f"explaining ({args.method})")
        bar.update()
        out = matex.explain(model, image, args.phrase, method=args.method, **params)
        bar.set_description("writing")
        bar.update()
        box = None
        if args.box is not None:
            from PIL import Image

            with Image.open(image) as im:
                width, height = im.size
            box, status = model.geometry.map_box(*args.box, width, height)
            if box is None:
                raise DataError(
                    f"--box {args.box} lies outside the model input ({model.geometry.mode} "
                    f"to {model.geometry.size} px) of this {width}x{height} image"
                )
        if args.components:
            out_path.parent.mkdir(parents=True, exist_ok=True)
            from .io import atomic_path

            with atomic_path(out_path, suffix=".png") as tmp:
                out.components_row(0, box=box, scale=2).save(tmp, format="PNG")
        else:
            out.save(out_path, 0, box=box)
        if args.npy:
            import numpy as np

            from .io import atomic_path

            Path(args.npy).parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(args.npy, suffix=".npy") as tmp, open(tmp, "wb") as f:
                np.save(f, out.image[0].numpy())
        bar.update()
    m = out.image[0]
    y, x = divmod(int(m.argmax()), m.shape[1])
    parts = f", components: {', '.join(out.components)}" if args.components and out.components else ""
    print(
        f"wrote {out_path} ({args.method} on {model.name}, {time.perf_counter() - t0:.1f} s; map maximum at "
        f"x={x}, y={y} of the {m.shape[1]}x{m.shape[0]} input{parts})"
    )
    if args.npy:
        print(f"wrote {args.npy} (map, {m.shape[0]}x{m.shape[1]} float32 in [0, 1])")
    return out_path


def print_methods() -> None:
    """One line per method: name, reference, then its parameters with their defaults."""
    from .api import methods
    from .attribution import get_method

    for name, ref in methods().items():
        spec = get_method(name)
        params = ", ".join(f"{k}={v!r}" for k, v in spec.defaults.items())
        print(f"{name:<15} {ref or '-'}")
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
    from .config import deep_update, validate_config

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
