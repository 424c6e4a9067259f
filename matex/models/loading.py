"""Build a :class:`MatexModel` from one of three sources, and save the demo model's checkpoints.

From Python, ``load_model`` takes open_clip's naming: ``load_model("ViT-B-32", pretrained="openai")``,
``load_model("hf-hub:org/repo")``, ``load_model("local-dir:/path")``, a local checkpoint path (a matex
checkpoint, an open_clip one with ``arch=``, or an OpenAI-format CLIP state dict such as CheXzero's),
or ``"demo"``. The config form ``load_model("hub", arch=..., pretrained=...)`` keeps working.

Sources (config key ``model.source``):

* ``demo``: a small open_clip ``CLIP`` from ``model.demo`` (same 7x7 patch grid as ViT-B/32), random
  weights from ``seed`` or the weights of a checkpoint our training wrote.
* ``hub``: ``open_clip.create_model_and_transforms(arch, pretrained=...)``; ``pretrained`` is a tag,
  ``hf-hub:...`` or a local file.
* ``checkpoint``: a file written by :func:`save_checkpoint` (format ``matex-clip-v1``), or an open_clip
  checkpoint / raw state dict for the open_clip architecture ``arch``.

This module resolves what is asked for and finishes the handle; :mod:`matex.models.builders` builds
each source's open_clip model.

Loading failures (missing file, unknown architecture, mismatched keys or shapes) raise
:class:`ConfigError` naming the file or config key, never a deep torch traceback.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import Any

import torch

from ..data.transforms import CLIP_MEAN, CLIP_STD, InputGeometry
from ..errors import ConfigError
from ..io import file_sha256
from .base import MatexModel
from .builders import Built, build_demo, build_from_checkpoint, build_hub
from .checkpoints import CHECKPOINT_FORMAT as CHECKPOINT_FORMAT  # re-exported for matex.models
from .checkpoints import save_checkpoint as save_checkpoint  # re-exported: callers load and save here

VOCAB_SIZE = 49408  # open_clip's SimpleTokenizer (bundled BPE vocabulary)
VIT_B32_GRID = 7  # ViT-B/32 at 224 px: 7x7 patches
SOURCES = ("demo", "hub", "checkpoint")


def resolve_device(pref: str) -> str:
    """``auto`` -> ``cuda`` when available else ``cpu``; ``cpu``/``cuda`` pass through."""
    if pref == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if pref not in ("cpu", "cuda") and not str(pref).startswith("cuda:"):
        raise ConfigError(f"config key attribution.device: unknown device {pref!r} (expected auto, cpu or cuda)")
    if str(pref).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {pref!r} requested but CUDA is not available")
    return pref


def demo_model_cfg(demo: Mapping[str, Any], input_size: int, key: str = "config key model.demo") -> dict:
    """open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``) from ``model.demo``.

    The vision grid must be 7x7 like ViT-B/32 (``input_size / patch_size == 7``), so every map the
    attribution methods compute has the paper's geometry."""
    try:
        vision, text = demo["vision"], demo["text"]
        patch = int(vision["patch_size"])
        if patch <= 0 or input_size % patch or input_size // patch != VIT_B32_GRID:
            raise ConfigError(
                f"{key}.vision.patch_size: input.size {input_size} / patch_size {patch} "
                f"must be exactly {VIT_B32_GRID} (a {VIT_B32_GRID}x{VIT_B32_GRID} grid like ViT-B/32); "
                f"use patch_size {input_size / VIT_B32_GRID:g} or input.size {VIT_B32_GRID * patch}"
            )
        stem_channels = int(vision.get("stem_channels", 0) or 0)
        model_cfg = {
            "embed_dim": int(demo["embed_dim"]),
            "vision_cfg": {
                "image_size": int(input_size),
                "layers": int(vision["layers"]),
                "width": int(vision["width"]),
                "head_width": int(vision["width"]) // int(vision["heads"]),
                "patch_size": patch,
                "mlp_ratio": float(vision.get("mlp_ratio", 4.0)),
            },
            "text_cfg": {
                "context_length": int(text["context_length"]),
                "vocab_size": VOCAB_SIZE,
                "width": int(text["width"]),
                "heads": int(text["heads"]),
                "layers": int(text["layers"]),
            },
        }
        if stem_channels:  # matex's own key, popped before open_clip sees the config (models/stem.py)
            model_cfg["matex_stem_channels"] = stem_channels
        return model_cfg
    except KeyError as e:
        raise ConfigError(f"{key}: missing key {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{key}: bad value ({e})") from None


def _check_image_size(clip: torch.nn.Module, geometry: InputGeometry, what: str, key: str) -> None:
    size = getattr(getattr(clip, "visual", None), "image_size", None)
    if size is None:
        return
    size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
    if size != (geometry.size, geometry.size):
        raise ConfigError(f"{key}: {what} expects {size[0]}x{size[1]} inputs, the input size is {geometry.size}")


# the demo architecture of config/config.yaml (model.demo), for load_model("demo") without a config
DEMO_ARCH = {
    "embed_dim": 128,
    "vision": {"layers": 4, "width": 128, "heads": 4, "patch_size": 32, "mlp_ratio": 2.0, "stem_channels": 32},
    "text": {"layers": 3, "width": 128, "heads": 4, "context_length": 32},
}

# how messages name what the user set: the arguments of a Python call, or the keys of a config
PYTHON_NAMES = {
    "model": "argument model",
    "arch": "argument arch",
    "pretrained": "argument pretrained",
    "checkpoint": "argument checkpoint",
    "demo": "argument demo",
    "size": "argument geometry",
}
CONFIG_NAMES = {
    "model": "config key model.source",
    "arch": "config key model.arch",
    "pretrained": "config key model.pretrained",
    "checkpoint": "config key model.checkpoint",
    "demo": "config key model.demo",
    "size": "config key input.size",
}


def _resolve(model: str, arch: str | None, checkpoint: str | None, names: dict[str, str]):
    """(source, arch, checkpoint, names) for ``model``: a source, an open_clip name or a file."""
    import open_clip

    model = os.fspath(model)
    if model in SOURCES:
        return model, arch, checkpoint, names
    if model.startswith(("hf-hub:", "local-dir:")) or open_clip.get_model_config(model) is not None:
        return "hub", model, checkpoint, {**names, "arch": names["model"]}
    if os.path.isfile(model):
        return "checkpoint", arch, model, {**names, "checkpoint": names["model"]}
    raise ConfigError(
        f"{names['model']}: {model!r} is none of: a source ({', '.join(SOURCES)}), an open_clip "
        "architecture (e.g. ViT-B-32, see open_clip.list_models()), an hf-hub:/local-dir: name, "
        "an existing checkpoint file"
    )


# how messages name the settings in the current load_model call: the arguments of a Python call, or the
# config keys while load_model_from_config calls (one signature for both, no private parameter)
_MESSAGE_NAMES: ContextVar[Mapping[str, str]] = ContextVar("matex_load_model_names", default=PYTHON_NAMES)


@contextlib.contextmanager
def _messages_naming(names: Mapping[str, str]) -> Iterator[None]:
    """Within the block, :func:`load_model`'s errors name each setting as ``names`` does."""
    token = _MESSAGE_NAMES.set(names)
    try:
        yield
    finally:
        _MESSAGE_NAMES.reset(token)


def load_model(
    model: str | os.PathLike = "demo",
    pretrained: str | None = None,
    *,
    arch: str | None = None,
    checkpoint: str | None = None,
    demo: Mapping[str, Any] | None = None,
    geometry: InputGeometry | None = None,
    device: str = "cpu",
    name: str | None = None,
    seed: int = 0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> MatexModel:
    """Build the model handle, in eval mode on ``device``.

    ``model`` uses open_clip's naming: an architecture (``"ViT-B-32"``, random weights unless
    ``pretrained`` is a tag such as ``"openai"`` or a weights file), ``"hf-hub:org/repo"``,
    ``"local-dir:/path"``, a checkpoint file (matex, open_clip with ``arch=``, or OpenAI-format such
    as CheXzero's), or ``"demo"`` (the demo architecture, random unless ``checkpoint`` names its
    trained weights). The config form names a source: ``"demo"`` | ``"hub"`` | ``"checkpoint"``.
    Hub downloads fail within seconds when the Hub is unreachable (see :mod:`matex.models.hub`).

    ``mean``/``std`` override the normalisation; otherwise a hub/arch model's preprocess config
    gives them, else OpenAI CLIP's. ``meta`` records source, arch/model_cfg, pretrained tag and
    checkpoint path + sha256.

    >>> m = load_model("demo")
    >>> m.geometry.size, m.meta["source"]
    (224, 'demo')
    """
    source, arch, checkpoint, names = _resolve(model, arch, checkpoint, dict(_MESSAGE_NAMES.get()))
    meta: dict[str, Any] = {
        "source": source,
        "arch": arch,
        "pretrained": pretrained,
        "checkpoint": None,
        "checkpoint_sha256": None,
        "model_cfg": None,
    }
    if source == "demo":
        geometry = geometry or InputGeometry(224)
        model_cfg = demo_model_cfg(demo if demo is not None else DEMO_ARCH, geometry.size, names["demo"])
        built = build_demo(model_cfg, demo is not None, seed, checkpoint, arch, meta)
    elif source == "hub":
        built = build_hub(arch, pretrained, names, meta)
    else:  # checkpoint
        built = build_from_checkpoint(checkpoint, arch, names, meta)
    if checkpoint is not None:
        meta.update(checkpoint=str(checkpoint), checkpoint_sha256=file_sha256(checkpoint))
    return _finish(built, geometry, mean, std, device, name or built.arch or source, names, meta)


def _finish(
    built: Built,
    geometry: InputGeometry | None,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    device: str,
    name: str,
    names: Mapping[str, str],
    meta: dict[str, Any],
) -> MatexModel:
    """The handle: the input geometry (the model's own input size when none is given) checked against
    the model, the normalisation (given, else the source's, else OpenAI CLIP's), eval mode on ``device``."""
    clip = built.clip
    if geometry is None:
        size = getattr(clip.visual, "image_size", 224)
        geometry = InputGeometry(int(size[0] if isinstance(size, (tuple, list)) else size))
    _check_image_size(clip, geometry, f"model {built.arch or 'demo'}", names["size"])
    mean = tuple(mean) if mean is not None else (built.mean or CLIP_MEAN)
    std = tuple(std) if std is not None else (built.std or CLIP_STD)
    meta.update(mean=list(mean), std=list(std), input_size=geometry.size, input_mode=geometry.mode)
    clip = clip.to(device).eval()
    return MatexModel(clip=clip, tokenizer=built.tokenizer, geometry=geometry, mean=mean, std=std, name=name, meta=meta)


def load_model_from_config(cfg: Mapping[str, Any], checkpoint: str | None = None, device: str = "cpu") -> MatexModel:
    """The model ``cfg["model"]`` names, with geometry and normalisation from ``cfg["input"]``.

    ``checkpoint`` (e.g. the demo model the pipeline trained) overrides ``model.checkpoint``.
    Errors name the config keys."""
    m, inp = cfg["model"], cfg["input"]
    source = m.get("source", "demo")
    if source not in SOURCES:
        raise ConfigError(f"config key model.source: unknown source {source!r} (expected one of {', '.join(SOURCES)})")
    if source == "demo" and m.get("demo") is None:
        raise ConfigError("config key model.demo: required when model.source is demo")
    geometry = InputGeometry.from_config(inp)  # size, mode, intensity mapping, pixel limit
    with _messages_naming(CONFIG_NAMES):
        return load_model(
            source,
            pretrained=m.get("pretrained"),
            arch=m.get("arch"),
            checkpoint=checkpoint or m.get("checkpoint"),
            demo=m.get("demo"),
            geometry=geometry,
            device=device,
            name=m.get("name"),
            seed=int(cfg.get("seed", 0)),
            mean=inp.get("mean"),
            std=inp.get("std"),
        )
