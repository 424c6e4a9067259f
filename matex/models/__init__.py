"""Model loading (open_clip by name + pretrained tag, local checkpoint, or the demo config) and training."""

from .base import MatexModel
from .loading import (
    CHECKPOINT_FORMAT,
    demo_model_cfg,
    load_model,
    load_model_from_config,
    resolve_device,
    save_checkpoint,
)

__all__ = [
    "MatexModel",
    "CHECKPOINT_FORMAT",
    "demo_model_cfg",
    "load_model",
    "load_model_from_config",
    "resolve_device",
    "save_checkpoint",
]
