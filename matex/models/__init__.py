"""Model loading (open_clip by name + pretrained tag, local checkpoint, or the demo config)."""
from .base import MatexModel

__all__ = ["MatexModel"]
