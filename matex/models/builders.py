"""The open_clip model each source of :func:`matex.models.loading.load_model` builds: the demo
architecture, an open_clip name with its pretrained weights, or what a checkpoint file holds (a matex
checkpoint, an OpenAI-format state dict, an open_clip one). Each returns a :class:`Built`, which
``load_model`` finishes into the handle; errors are :class:`ConfigError` naming the file or setting.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch

from ..errors import ConfigError
from ..io import file_sha256
from .checkpoints import load_weights, openai_clip, read_checkpoint


class Built(NamedTuple):
    """A source's model before the common finish: the open_clip module, its tokenizer, the
    normalisation its preprocess config or file gives (None: none given) and the architecture name."""

    clip: torch.nn.Module
    tokenizer: Any
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    arch: str | None


def build_clip(model_cfg: Mapping[str, Any]) -> torch.nn.Module:
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


def simple_tokenizer(context_length: int):
    """open_clip's own BPE tokenizer with ``context_length`` tokens."""
    import open_clip

    return open_clip.tokenizer.SimpleTokenizer(context_length=int(context_length))


def preprocess_mean_std(clip: torch.nn.Module) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """The normalisation the model's preprocess config gives, (None, None) when it gives none."""
    pp = getattr(getattr(clip, "visual", None), "preprocess_cfg", None) or {}
    mean, std = pp.get("mean"), pp.get("std")
    return (tuple(float(m) for m in mean) if mean else None, tuple(float(s) for s in std) if std else None)


def build_demo(
    model_cfg: dict[str, Any],
    demo_given: bool,
    seed: int,
    checkpoint: str | None,
    arch: str | None,
    meta: dict[str, Any],
) -> Built:
    """The demo architecture ``model_cfg`` (from the ``demo`` settings or, without them,
    :data:`~matex.models.loading.DEMO_ARCH`) initialised from ``seed``, with a checkpoint's weights
    when one is named; a matex checkpoint of another architecture is refused when ``demo_given``,
    else its own architecture is built. Fills ``meta``."""
    torch.manual_seed(seed)
    clip = build_clip(model_cfg)
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
            clip = build_clip(model_cfg)
            meta["model_cfg"] = model_cfg
        load_weights(clip, ckpt)
        if ckpt.meta is not None:
            meta["trained"] = ckpt.trained
    return Built(clip, simple_tokenizer(model_cfg["text_cfg"]["context_length"]), None, None, arch)


def build_hub(arch: str | None, pretrained: str | None, names: Mapping[str, str], meta: dict[str, Any]) -> Built:
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
    pp_mean, pp_std = preprocess_mean_std(clip)
    try:
        meta["model_cfg"] = open_clip.get_model_config(arch)
    except Exception:  # noqa: BLE001 - an hf-hub config read from the cache only: not worth a failure
        meta["model_cfg"] = None
    if pretrained and os.path.isfile(pretrained):
        meta.update(checkpoint=str(pretrained), checkpoint_sha256=file_sha256(pretrained))
    return Built(clip, tokenizer, pp_mean, pp_std, arch)


def build_from_checkpoint(
    checkpoint: str | None, arch: str | None, names: Mapping[str, str], meta: dict[str, Any]
) -> Built:
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
        return Built(clip, simple_tokenizer(context_length), None, None, arch)
    return _build_open_clip_checkpoint(ckpt, checkpoint, arch, names, meta)


def _build_matex_checkpoint(ckpt: Any, arch: str | None, meta: dict[str, Any]) -> Built:
    """A matex checkpoint: the model its config describes, its weights, and the tokenizer and
    normalisation the file records. Fills ``meta``."""
    import open_clip

    model_cfg = ckpt.model_cfg
    clip = build_clip(model_cfg)
    file_meta = ckpt.meta or {}
    arch = arch or file_meta.get("arch")
    meta.update(model_cfg=model_cfg, arch=arch, trained=ckpt.trained)
    # the file's own text config decides the tokenizer (a config's model.arch, e.g. the default
    # ViT-B-32, must not impose another context length on a demo-architecture checkpoint)
    tokenizer = (
        open_clip.get_tokenizer(arch)
        if model_cfg["text_cfg"].get("hf_tokenizer_name") and arch and open_clip.get_model_config(arch)
        else simple_tokenizer(model_cfg["text_cfg"].get("context_length", 77))
    )
    pp_mean = pp_std = None
    if file_meta.get("mean") and file_meta.get("std"):
        pp_mean, pp_std = tuple(file_meta["mean"]), tuple(file_meta["std"])
    load_weights(clip, ckpt)
    return Built(clip, tokenizer, pp_mean, pp_std, arch)


def _build_open_clip_checkpoint(
    ckpt: Any, checkpoint: str, arch: str | None, names: Mapping[str, str], meta: dict[str, Any]
) -> Built:
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
    pp_mean, pp_std = preprocess_mean_std(clip)
    load_weights(clip, ckpt)
    return Built(clip, tokenizer, pp_mean, pp_std, arch)
