"""Attribution engine: MATEX and the baselines behind one batched entry point.

    from matex.attribution import explain
    out = explain(model, images, texts, method="matex", **params)

Every method lives in its own module and registers itself with ``@register``; see registry.py."""

from .registry import ExplainOutput, MethodSpec, available_methods, explain, get_method, register
from .wrapper import ForwardContext, TowerTrace, Trace, record_tower

__all__ = [
    "ExplainOutput",
    "ForwardContext",
    "MethodSpec",
    "Trace",
    "TowerTrace",
    "available_methods",
    "explain",
    "get_method",
    "record_tower",
    "register",
]
