"""Prior only (docs/method.md): the text-guided spatial prior P alone, normalised: how much of a map
comes from the phrase rather than the model. A phrase with no location gives a flat prior, i.e. an
all-zero map."""

from __future__ import annotations

from .matex_method import spatial_priors
from .registry import ExplainOutput, register
from .wrapper import ForwardContext


@register("prior_only", reference="control: MATEX's text-guided spatial prior alone")
def prior_only(ctx: ForwardContext, *, prior_sigma: float = 0.1, prior_strength: float = 2.5) -> ExplainOutput:
    prior = spatial_priors(
        ctx.texts, ctx.size, prior_sigma, prior_strength, ctx.images.device, ctx.image_sizes, ctx.input_mode
    )
    return ExplainOutput(image=prior.normalised.clone(), meta={"options": {"prior_present": prior.present}})
