"""matex: MATEX and baseline explanations of CLIP-style chest X-ray models, and their evaluation.

``from matex import load_model, explain`` is the public entry point; submodules load lazily so that
importing matex for a config check or a table does not import torch.
"""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__", "load_model", "explain", "spatial_prior"]


def __getattr__(name: str):
    if name == "load_model":
        from .models.loading import load_model

        return load_model
    if name == "explain":
        from .attribution import explain

        return explain
    if name == "spatial_prior":
        from .priors import spatial_prior

        return spatial_prior
    raise AttributeError(f"module 'matex' has no attribute {name!r}")
