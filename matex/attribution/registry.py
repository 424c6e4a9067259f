"""The method registry and the single public entry point ``explain``.

A method is a function ``fn(ctx: ForwardContext, **params) -> ExplainOutput`` in its own module,
registered with ``@register("name")``; its parameters and their defaults are the function's
keyword-only arguments (read with ``inspect.signature``). The package imports every module in this
folder, so adding a method means adding one file and nothing else."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..catalog import check_param_type  # torch-free, shared with the config checks
from ..errors import ConfigError, MapError
from .common import check_finite


@dataclass
class ExplainOutput:
    """What every method returns.

    image: (B, H, W) float32 in [0, 1] on CPU, H, W the model input size.
    text: per-token scores, one array per text (real tokens incl. SOT/EOT), or None.
    components: named (B, H, W) maps the method fused (MATEX: its six terms).
    meta: method name, the params used (defaults filled in) and method options."""

    image: torch.Tensor
    text: list[np.ndarray] | None = None
    components: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its function, and its parameters read from the function's signature
    (keyword-only arguments after ``ctx``: name, default, annotation). The signature is the one
    source of defaults; configs hold only overrides."""

    name: str
    fn: Callable[..., ExplainOutput]
    defaults: Mapping[str, Any]
    annotations: Mapping[str, str]
    reference: str = ""


_REGISTRY: dict[str, MethodSpec] = {}


def _signature_params(name: str, fn: Callable) -> tuple[dict[str, Any], dict[str, str]]:
    """Defaults and annotation strings of ``fn``'s keyword-only parameters; every one needs a default."""
    sig = inspect.signature(fn)
    defaults: dict[str, Any] = {}
    annotations: dict[str, str] = {}
    for p in list(sig.parameters.values())[1:]:
        if p.kind is not inspect.Parameter.KEYWORD_ONLY:
            raise ConfigError(f"method {name!r}: parameter {p.name!r} must be keyword-only (after '*')")
        if p.default is inspect.Parameter.empty:
            raise ConfigError(f"method {name!r}: parameter {p.name!r} needs a default value")
        defaults[p.name] = p.default
        ann = p.annotation
        annotations[p.name] = ann if isinstance(ann, str) else getattr(ann, "__name__", str(ann))
    return defaults, annotations


def register(name: str, reference: str = "") -> Callable:
    """Decorator: register ``fn(ctx, *, param: type = default, ...)`` as attribution method ``name``.

    ``reference``: the paper the method comes from (shown by ``matex.methods()``)."""

    def deco(fn: Callable[..., ExplainOutput]) -> Callable[..., ExplainOutput]:
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ConfigError(
                f"attribution method {name!r} is registered twice ({_REGISTRY[name].fn.__module__} and {fn.__module__})"
            )
        defaults, annotations = _signature_params(name, fn)
        _REGISTRY[name] = MethodSpec(name, fn, defaults, annotations, reference)
        return fn

    return deco


def get_method(name: str) -> MethodSpec:
    _load_methods()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown attribution method {name!r}; available: {available_methods()}") from None


def available_methods() -> list[str]:
    _load_methods()
    return sorted(_REGISTRY)


def _load_methods() -> None:
    """Import every module of this package so their @register decorators run (the package holds only
    methods and the helpers they share; importing a helper registers nothing)."""
    import importlib
    import pkgutil

    from . import __name__ as pkg_name
    from . import __path__ as pkg_path

    for info in pkgutil.iter_modules(pkg_path):
        importlib.import_module(f"{pkg_name}.{info.name}")


def resolve_params(spec: MethodSpec, params: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults overridden by ``params``; an unknown key or a value of the wrong type is a ConfigError
    naming the config path ``attribution.params.<method>.<key>``."""
    unknown = sorted(set(params) - set(spec.defaults))
    if unknown:
        raise ConfigError(f"attribution.params.{spec.name}: unknown key(s) {unknown}; known: {sorted(spec.defaults)}")
    for key, value in params.items():
        check_param_type(spec.name, key, value, spec.annotations.get(key, ""))
    return {**spec.defaults, **dict(params)}


def _film_sizes(images, image_sizes, n: int) -> list[tuple[int, int]] | None:
    """Each film's (height, width): given, read off PIL images, or None (the input is the film)."""
    from ..errors import DataError

    if image_sizes is None:
        from PIL import Image

        if isinstance(images, (list, tuple)) and images and all(isinstance(i, Image.Image) for i in images):
            return [(int(i.height), int(i.width)) for i in images]
        return None
    sizes = [(int(h), int(w)) for h, w in image_sizes]
    if len(sizes) != n or any(h <= 0 or w <= 0 for h, w in sizes):
        raise DataError(f"image_sizes needs one positive (height, width) per text, got {image_sizes!r:.120}")
    return sizes


def explain(
    model,
    images,
    texts: Sequence[str],
    method: str = "matex",
    *,
    image_sizes: Sequence[tuple[int, int]] | None = None,
    training_boxes: Any = None,
    categories: Sequence[str] | None = None,
    **params: Any,
) -> ExplainOutput:
    """Explain each (image, text) pair with ``method``.

    images: normalised (B, 3, H, W) tensor, (B, H, W) uint8 array or list of PIL images.
    texts: one phrase per image. image_sizes: each original film's (height, width), so that the
    text prior is laid on the input as the film was (taken from PIL images when not given; otherwise
    the image is taken to be the input itself). Returns maps (B, H, W) float32 in [0, 1] on CPU.
    training_boxes, categories: only the bias controls read them (``mean_box``: the training pairs'
    boxes, a ``mean_box.TrainingBoxes``; ``category_box``: those and each pair's finding category).

    Thread-safe: a call holds a per-model lock while it runs (the methods patch and hook the model),
    so threads sharing one model take turns and get the maps serial calls give; the model is left as
    it was found (training flags, no patch or hook), also when the call raises."""
    from ..errors import DataError
    from .recording import model_session
    from .wrapper import ForwardContext

    spec = get_method(method)
    used = resolve_params(spec, params)
    texts = checked_texts(texts)
    x = model.preprocess(images)
    if x.ndim != 4 or x.shape[0] != len(texts):
        raise DataError(f"method {method!r}: {x.shape[0] if x.ndim == 4 else '?'} images but {len(texts)} texts")
    # one call at a time per model (the methods patch and hook it), eval mode, flags restored after
    with model_session(model.clip):
        ctx = ForwardContext(
            model=model,
            images=x,
            tokens=model.tokenize(texts),
            texts=texts,
            image_sizes=_film_sizes(images, image_sizes, len(texts)),
            training_boxes=training_boxes,
            categories=None if categories is None else [str(c) for c in categories],
        )
        out = spec.fn(ctx, **used)
    return _checked_output(out, (x.shape[0], x.shape[2], x.shape[3]), method, used)


def checked_texts(texts: Sequence[str]) -> list[str]:
    """``texts`` as a list: one non-empty string per image, else a DataError naming the empty ones.
    The one check of the phrases (``matex.explain`` wraps a single phrase in a list first)."""
    from ..errors import DataError

    if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence) or not all(isinstance(t, str) for t in texts):
        raise DataError("texts must be a list of strings, one phrase per image")
    texts = list(texts)
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty:
        raise DataError(f"texts {empty} are empty: a phrase is needed to explain an image-text match")
    return texts


def _checked_output(
    out: ExplainOutput, expected: tuple[int, int, int], method: str, used: Mapping[str, Any]
) -> ExplainOutput:
    """A method's output on the CPU as float32: maps of the ``expected`` (B, H, W) shape, finite and
    clamped to [0, 1], finite components, and the meta (method, parameters used, options)."""
    image = out.image.detach().to("cpu", torch.float32)
    if tuple(image.shape) != expected:
        raise MapError(f"method {method!r} returned maps of shape {tuple(image.shape)}, expected {expected}")
    check_finite(image, method)
    out.image = image.clamp(0.0, 1.0)
    out.components = {
        k: check_finite(v.detach().to("cpu", torch.float32), method, f"component {k!r}")
        for k, v in out.components.items()
    }
    out.meta = {"method": method, "params": used, "options": dict(out.meta.get("options", {}))}
    return out
