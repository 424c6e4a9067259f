"""Checkpoint files: reading any torch/safetensors file into a state dict, strict loading with
mismatches reported by key, OpenAI-format CLIP state dicts (CheXzero), and the demo model's own
``matex-clip-v1`` format, written atomically and byte-reproducibly."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ..io import atomic_path
from .base import MatexModel

CHECKPOINT_FORMAT = "matex-clip-v1"


def _read_checkpoint(path: str | os.PathLike) -> Any:
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


def _load_weights(clip: torch.nn.Module, state: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Strictly load ``state`` into ``clip``; mismatches are reported by key, first few of each kind."""
    expected = clip.state_dict()
    state = dict(state)
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


def _openai_clip(state: dict[str, torch.Tensor], path: str, arch_name: str) -> torch.nn.Module:
    """Build the CLIP an OpenAI-format state dict describes (QuickGELU, heads = width / 64) in float32.

    open_clip's builder casts the weights to float16 before loading (OpenAI's release is float16);
    that cast is skipped here so float32 checkpoints (CheXzero's fine-tuned ones) keep their precision."""
    from unittest import mock

    import open_clip.model as oc_model

    try:
        with mock.patch.object(oc_model, "convert_weights_to_fp16", lambda model: None):
            return oc_model.build_model_from_openai_state_dict(dict(state), cast_dtype=None).float()
    except Exception as e:  # noqa: BLE001 - shape inference or strict loading failed
        raise ConfigError(
            f"{arch_name}: checkpoint file {path} is not a matex checkpoint and reading it as an "
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
