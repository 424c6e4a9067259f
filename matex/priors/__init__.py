"""Text-guided spatial priors (docs/method.md): a rule-based anatomical phrase parser and the soft
region prior of Eqs. 3-5. Region boxes, finding defaults and weights live in ``regions.yaml``."""

from matex.priors.parser import (
    FindingMention,
    PhraseParse,
    Region,
    load_regions,
    parse_phrase,
)
from matex.priors.prior import region_mask, spatial_prior

__all__ = ["FindingMention", "PhraseParse", "Region", "load_regions", "parse_phrase", "region_mask", "spatial_prior"]
