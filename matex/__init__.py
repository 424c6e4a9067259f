"""matex: MATEX and baseline explanations of CLIP-style chest X-ray models, and their evaluation.

Public API (``import matex``):

    load_model(name, pretrained=None, ...)   a CLIP model handle ("demo", an open_clip name such as
                                             "ViT-B-32", "hf-hub:...", or a checkpoint path)
    explain(model, images, texts, method="matex", **params) -> Explanation
                                             maps for image-phrase pairs; one image and phrase or lists
    Explanation                              .image (B, H, W) maps in [0, 1], .components, .text,
                                             .overlay(i, box=None) -> PIL image, .save("map.png")
    methods() -> {name: reference}           the registered attribution methods
    spatial_prior(text, size)                MATEX's text-guided spatial prior of a phrase

Example (a small random demo model, so the map itself means nothing)::

    >>> import matex
    >>> model = matex.load_model("demo")
    >>> out = matex.explain(model, "docs/img/example_chest.jpg", "left mid zone consolidation")
    >>> out.save("map.png").name
    'map.png'

The pipeline runs with Snakemake (``./run.sh pipeline``); the command line is ``matex --help``.
Submodules load lazily, so that importing matex for a config check or a table does not import torch.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__", "Explanation", "explain", "load_model", "methods", "spatial_prior"]

_LAZY = {
    "load_model": ("matex.models.loading", "load_model"),
    "explain": ("matex.api", "explain"),
    "Explanation": ("matex.api", "Explanation"),
    "methods": ("matex.api", "methods"),
    "spatial_prior": ("matex.priors", "spatial_prior"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value  # cache: the next access is a plain attribute
        return value
    raise AttributeError(f"module 'matex' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public names too, so that ``help(matex)`` and tab completion show them."""
    return sorted(set(globals()) | set(__all__))
