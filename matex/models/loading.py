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

Loading failures (missing file, unknown architecture, mismatched keys or shapes) raise
:class:`ConfigError` naming the file or config key, never a deep torch traceback.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, NamedTuple

import torch

from ..data.transforms import CLIP_MEAN, CLIP_STD, InputGeometry
from ..errors import ConfigError
from ..io import file_sha256
from .base import MatexModel
from .checkpoints import CHECKPOINT_FORMAT as CHECKPOINT_FORMAT  # re-exported for matex.models
from .checkpoints import load_weights, openai_clip, read_checkpoint
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


def _build_clip(model_cfg: Mapping[str, Any]) -> torch.nn.Module:
    """An open_clip CLIP (or CustomTextCLIP for HF/custom text towers) from a model config dict."""
    import open_clip

    kwargs = copy.deepcopy(dict(model_cfg))
    custom_text = kwargs.pop("custom_text", False) or "hf_model_name" in kwargs.get("text_cfg", {})
    kwargs.pop("multimodal_cfg", None)
    stem_channels = int(kwargs.pop("matex_stem_channels", 0) or 0)
    cls = open_clip.CustomTextCLIP if custom_text else open_clip.CLIP
    try:
        clip = cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"model config cannot build an open_clip model: {e}") from None
    if stem_channels:
        from .stem import install_conv_stem

        install_conv_stem(clip, stem_channels)
    return clip


def _simple_tokenizer(context_length: int):
    import open_clip

    return open_clip.tokenizer.SimpleTokenizer(context_length=int(context_length))


def _preprocess_mean_std(clip: torch.nn.Module) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    pp = getattr(getattr(clip, "visual", None), "preprocess_cfg", None) or {}
    mean, std = pp.get("mean"), pp.get("std")
    return (tuple(float(m) for m in mean) if mean else None, tuple(float(s) for s in std) if std else None)


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


class _Built(NamedTuple):
    """A source's model before the common finish: the open_clip module, its tokenizer, the
    normalisation its preprocess config or file gives (None: none given) and the architecture name."""

    clip: torch.nn.Module
    tokenizer: Any
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    arch: str | None


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
        built = _build_demo(demo, geometry, seed, checkpoint, arch, names, meta)
    elif source == "hub":
        built = _build_hub(arch, pretrained, names, meta)
    else:  # checkpoint
        built = _build_from_checkpoint(checkpoint, arch, names, meta)
    if checkpoint is not None:
        meta.update(checkpoint=str(checkpoint), checkpoint_sha256=file_sha256(checkpoint))
    return _finish(built, geometry, mean, std, device, name or built.arch or source, names, meta)


def _build_demo(
    demo: Mapping[str, Any] | None,
    geometry: InputGeometry,
    seed: int,
    checkpoint: str | None,
    arch: str | None,
    names: Mapping[str, str],
    meta: dict[str, Any],
) -> _Built:
    """The demo architecture (``demo``, else :data:`DEMO_ARCH`) initialised from ``seed``, with a
    checkpoint's weights when one is named; a matex checkpoint of another architecture is refused
    when ``demo`` is given, else its own architecture is built. Fills ``meta``."""
    demo_given = demo is not None
    model_cfg = demo_model_cfg(demo if demo_given else DEMO_ARCH, geometry.size, names["demo"])
    torch.manual_seed(seed)
    clip = _build_clip(model_cfg)
    meta.update(arch=None, model_cfg=model_cfg, seed=seed)
    if checkpoint is not None:
        ckpt = read_checkpoint(checkpoint)
        if ckpt.kind == "matex" and ckpt.model_cfg != model_cfg:
            if demo_given:
                raise ConfigError(
                    f"checkpoint file {checkpoint} was trained with a different model.demo/input.size "
                    f"config: {ckpt.model_cfg} != {model_cfg}"
                )
            model_cfg = ckpt.model_cfg  # no demo config given: the checkpoint's own architecture
            clip = _build_clip(model_cfg)
            meta["model_cfg"] = model_cfg
        load_weights(clip, ckpt)
        if ckpt.meta is not None:
            meta["trained"] = ckpt.trained
    return _Built(clip, _simple_tokenizer(model_cfg["text_cfg"]["context_length"]), None, None, arch)


def _build_hub(arch: str | None, pretrained: str | None, names: Mapping[str, str], meta: dict[str, Any]) -> _Built:
    """open_clip's ``arch`` with ``pretrained`` weights (a tag, a file, or those of an hf-hub:/local-dir:
    name) and its preprocess normalisation. Fills ``meta``."""
    import open_clip

    from .hub import create_from_hub

    if not arch:
        raise ConfigError(f"{names['arch']}: required when model.source is hub")
    schema = arch.startswith(("hf-hub:", "local-dir:"))  # the repository or folder holds the weights
    clip = create_from_hub(
        arch, pretrained, names["pretrained"] if pretrained and not schema else names["arch"], names["arch"]
    )
    tokenizer = open_clip.get_tokenizer(arch)
    pp_mean, pp_std = _preprocess_mean_std(clip)
    try:
        meta["model_cfg"] = open_clip.get_model_config(arch)
    except Exception:  # noqa: BLE001 - an hf-hub config read from the cache only: not worth a failure
        meta["model_cfg"] = None
    if pretrained and os.path.isfile(pretrained):
        meta.update(checkpoint=str(pretrained), checkpoint_sha256=file_sha256(pretrained))
    return _Built(clip, tokenizer, pp_mean, pp_std, arch)


def _build_from_checkpoint(
    checkpoint: str | None, arch: str | None, names: Mapping[str, str], meta: dict[str, Any]
) -> _Built:
    """The model a checkpoint file holds, by what the file is: a matex checkpoint (its own config), an
    OpenAI-format state dict (architecture read from it, when no ``arch`` is named) or an open_clip
    state dict for the named ``arch``. Fills ``meta``."""
    if not checkpoint:
        raise ConfigError(f"{names['checkpoint']}: required when model.source is checkpoint")
    ckpt = read_checkpoint(checkpoint)
    if ckpt.kind == "matex":
        return _build_matex_checkpoint(ckpt, arch, meta)
    if not arch and ckpt.kind == "openai":
        clip = openai_clip(ckpt, names["arch"])
        context_length = int(ckpt.state_dict["positional_embedding"].shape[0])
        meta.update(
            arch="openai-format CLIP (architecture read from the state dict)",
            model_cfg={"context_length": context_length},
        )
        return _Built(clip, _simple_tokenizer(context_length), None, None, arch)
    return _build_open_clip_checkpoint(ckpt, checkpoint, arch, names, meta)


def _build_matex_checkpoint(ckpt: Any, arch: str | None, meta: dict[str, Any]) -> _Built:
    """A matex checkpoint: the model its config describes, its weights, and the tokenizer and
    normalisation the file records. Fills ``meta``."""
    import open_clip

    model_cfg = ckpt.model_cfg
    clip = _build_clip(model_cfg)
    file_meta = ckpt.meta or {}
    arch = arch or file_meta.get("arch")
    meta.update(model_cfg=model_cfg, arch=arch, trained=ckpt.trained)
    # the file's own text config decides the tokenizer (a config's model.arch, e.g. the default
    # ViT-B-32, must not impose another context length on a demo-architecture checkpoint)
    tokenizer = (
        open_clip.get_tokenizer(arch)
        if model_cfg["text_cfg"].get("hf_tokenizer_name") and arch and open_clip.get_model_config(arch)
        else _simple_tokenizer(model_cfg["text_cfg"].get("context_length", 77))
    )
    pp_mean = pp_std = None
    if file_meta.get("mean") and file_meta.get("std"):
        pp_mean, pp_std = tuple(file_meta["mean"]), tuple(file_meta["std"])
    load_weights(clip, ckpt)
    return _Built(clip, tokenizer, pp_mean, pp_std, arch)


def _build_open_clip_checkpoint(
    ckpt: Any, checkpoint: str, arch: str | None, names: Mapping[str, str], meta: dict[str, Any]
) -> _Built:
    """An open_clip checkpoint or raw state dict: the named open_clip ``arch`` with the file's
    weights. Fills ``meta``."""
    import open_clip

    if not arch:
        raise ConfigError(
            f"{names['arch']}: checkpoint file {checkpoint} is neither a matex checkpoint nor "
            "an OpenAI-format CLIP state dict, so the open_clip architecture must be named"
        )
    if open_clip.get_model_config(arch) is None:
        raise ConfigError(f"{names['arch']}: unknown open_clip architecture {arch!r}")
    clip = open_clip.create_model(arch, pretrained=None)
    meta["model_cfg"] = open_clip.get_model_config(arch)
    tokenizer = open_clip.get_tokenizer(arch)
    pp_mean, pp_std = _preprocess_mean_std(clip)
    load_weights(clip, ckpt)
    return _Built(clip, tokenizer, pp_mean, pp_std, arch)


def _finish(
    built: _Built,
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
