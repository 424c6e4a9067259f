"""Checkpoint files, owned here: reading any torch/safetensors file and telling what it holds (the
demo model's own ``matex-clip-v1`` format, an OpenAI-format CLIP state dict such as CheXzero's, or
another state dict), strict weight loading with mismatches reported by key, and writing the
``matex-clip-v1`` format atomically and byte-reproducibly. :mod:`matex.models.loading` builds models
and calls this module; this module never calls back into it."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from ..errors import ConfigError
from ..io import atomic_path
from .base import MatexModel

CHECKPOINT_FORMAT = "matex-clip-v1"


@dataclass(frozen=True)
class CheckpointFile:
    """What one checkpoint file holds.

    kind: ``"matex"`` (written by :func:`save_checkpoint`), ``"openai"`` (an OpenAI-format CLIP state
    dict: open_clip's key names, no config) or ``"state_dict"`` (any other state dict of tensors).
    model_cfg: a matex file's open_clip model config, else None. meta: the metadata recorded beside the
    state dict (a matex file's ``meta``), None when the file has none."""

    path: str
    kind: Literal["matex", "openai", "state_dict"]
    state_dict: dict[str, torch.Tensor]
    model_cfg: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None

    @property
    def trained(self) -> dict[str, Any]:
        """The training record a matex file carries, without its per-epoch history (for model meta)."""
        return {k: v for k, v in (self.meta or {}).items() if k != "history"}


def read_checkpoint(path: str | os.PathLike) -> CheckpointFile:
    """Read ``path`` and tell what it holds; a missing or unreadable file, or one without a state
    dict of tensors, is a ConfigError naming the file."""
    obj = _read_file(path)
    state = _extract_state_dict(obj, path)
    meta = obj.get("meta") if isinstance(obj, Mapping) else None
    meta = dict(meta) if isinstance(meta, Mapping) else None
    if isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT:
        return CheckpointFile(str(path), "matex", state, obj.get("model_cfg"), meta)
    return CheckpointFile(str(path), "openai" if _is_openai_state_dict(state) else "state_dict", state, None, meta)


def _read_file(path: str | os.PathLike) -> Any:
    """The object a torch or safetensors file holds."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means "not a checkpoint"
        raise ConfigError(
            f"checkpoint file {path} could not be read as a torch/safetensors checkpoint: "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from None


def _extract_state_dict(obj: Any, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A plain state dict from a raw dict, ``{"state_dict": ...}`` or a DataParallel (``module.``) one."""
    if isinstance(obj, Mapping) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError(f"checkpoint file {path} holds no state dict of tensors")
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in obj.items()}


def load_weights(clip: torch.nn.Module, ckpt: CheckpointFile) -> None:
    """Strictly load the file's weights into ``clip``; mismatches are reported by key, first few of each kind."""
    expected = clip.state_dict()
    state, path = dict(ckpt.state_dict), ckpt.path
    for key in ("logit_scale", "logit_bias"):  # scalar vs 1-d parameter, as open_clip tolerates
        if (
            key in state
            and key in expected
            and state[key].shape != expected[key].shape
            and state[key].numel() == expected[key].numel()
        ):
            state[key] = state[key].reshape(expected[key].shape)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or wrong_shape:
        parts = []
        for label, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches (file != model)", wrong_shape),
        ):
            if keys:
                more = f" (+{len(keys) - 5} more)" if len(keys) > 5 else ""
                parts.append(f"{len(keys)} {label}: {', '.join(keys[:5])}{more}")
        raise ConfigError(f"checkpoint file {path} does not match the model: " + "; ".join(parts))
    clip.load_state_dict(state, strict=True)


def _is_openai_state_dict(state: Mapping[str, torch.Tensor]) -> bool:
    """An OpenAI-format CLIP ViT state dict (OpenAI's release, CheXzero): open_clip's key names, no config."""
    return all(k in state for k in ("visual.proj", "visual.conv1.weight", "text_projection", "positional_embedding"))


def openai_clip(ckpt: CheckpointFile, arch_name: str) -> torch.nn.Module:
    """Build the CLIP an OpenAI-format state dict describes (QuickGELU, heads = width / 64) in float32,
    with the file's weights; ``arch_name`` is how messages name the architecture setting.

    open_clip's builder casts the weights to float16 before loading (OpenAI's release is float16);
    that cast is skipped here so float32 checkpoints (CheXzero's fine-tuned ones) keep their precision."""
    from unittest import mock

    import open_clip.model as oc_model

    try:
        with mock.patch.object(oc_model, "convert_weights_to_fp16", lambda model: None):
            return oc_model.build_model_from_openai_state_dict(dict(ckpt.state_dict), cast_dtype=None).float()
    except Exception as e:  # noqa: BLE001 - shape inference or strict loading failed
        raise ConfigError(
            f"{arch_name}: checkpoint file {ckpt.path} is not a matex checkpoint and reading it as an "
            f"OpenAI-format CLIP failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); name "
            "its open_clip architecture"
        ) from None


def save_checkpoint(
    model: MatexModel, path: str | os.PathLike, model_cfg: Mapping[str, Any], meta: Mapping[str, Any]
) -> None:
    """Write ``{"format": "matex-clip-v1", "model_cfg", "state_dict", "meta"}`` atomically (CPU tensors)."""
    state = {k: v.detach().to("cpu").clone() for k, v in model.clip.state_dict().items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model_cfg": copy.deepcopy(dict(model_cfg)),
        "state_dict": state,
        "meta": {"mean": list(model.mean), "std": list(model.std), **copy.deepcopy(dict(meta))},
    }
    with atomic_path(path, suffix=".pt") as tmp:
        # through a file object: torch.save names the zip's top folder after a path it is given (the
        # random temporary name), which would make identical checkpoints differ byte-wise
        with open(tmp, "wb") as f:
            torch.save(payload, f)
