"""MATEX without its text prior (a control, docs/method.md): δ = 0 and λ_s = 1, so P ≡ 1 and the fused
map is norm(α'·norm(G) + β'·M_roll + γ'·norm(G⊙C)); α', β', γ' are MATEX's α, β, γ rescaled to keep
MATEX's total weight α + β + γ + δ (with MATEX's default δ). The final min-max makes that rescaling
leave the map unchanged; it only keeps the recorded weights comparable. Every other setting (layers,
τ, ε) is MATEX's. Gap to ``matex`` = what the phrase's location words add; gap to the model-only
baselines = what MATEX's fusion adds without the text."""

from __future__ import annotations

from ..errors import ConfigError
from .matex_method import ALPHA, BETA, CONSISTENCY_EPS, DELTA, GAMMA, GRADIENT_LAYERS, TAU, matex
from .registry import ExplainOutput, register
from .wrapper import ForwardContext


def renormalised_weights(alpha: float, beta: float, gamma: float) -> tuple[float, float, float]:
    """α, β, γ scaled so that they sum to MATEX's default α + β + γ + δ."""
    if alpha + beta + gamma <= 0:
        raise ConfigError(
            f"attribution.params.matex_noprior: alpha + beta + gamma must be > 0, got {alpha + beta + gamma}"
        )
    k = (ALPHA + BETA + GAMMA + DELTA) / (alpha + beta + gamma)
    return alpha * k, beta * k, gamma * k


@register("matex_noprior", reference="ablation of MATEX: no text prior (δ = 0, λ_s = 1)")
def matex_noprior(
    ctx: ForwardContext,
    *,
    alpha: float = ALPHA,
    beta: float = BETA,
    gamma: float = GAMMA,
    tau: float = TAU,
    rollout_layers: int | list[int] | None = None,
    gradient_layers: int | list[int] = GRADIENT_LAYERS,
    consistency_eps: float = CONSISTENCY_EPS,
) -> ExplainOutput:
    a, b, g = renormalised_weights(alpha, beta, gamma)
    out = matex(
        ctx,
        alpha=a,
        beta=b,
        gamma=g,
        delta=0.0,
        tau=tau,
        rollout_layers=rollout_layers,
        gradient_layers=gradient_layers,
        consistency_eps=consistency_eps,
        prior_strength=1.0,
    )
    out.meta.setdefault("options", {})["fusion_weights"] = {"alpha": a, "beta": b, "gamma": g, "delta": 0.0}
    return out
