"""RISE (Petsiuk et al. 2018; docs/method.md, docs/fidelity.md): random binary ``cells``×``cells``
grids, kept with probability ``p``, upsampled bilinearly with a random sub-cell shift; the map is
Σ_m S(x⊙m)·m / (N·p). The same seeded masks serve every pair, so a pair's map does not depend on
the batch it is in. ``batch`` is the number of masked images per forward pass.

``fill``: what a removed pixel becomes. ``grey`` (default): the dataset's mean grey, the same value
in every channel, as the faithfulness metrics fill removed pixels (a radiograph has no colour, so a
coloured hole is out of distribution). ``mean``: the authors' code (eclique/RISE), which multiplies
the normalised input by the mask: 0 in normalised space, the per-channel mean colour of the
normalisation. The difference and its measured effect are in docs/fidelity.md."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .common import minmax_norm
from .registry import ExplainOutput, register
from .wrapper import ForwardContext


def rise_masks(n_masks: int, cells: int, p: float, size: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """(n_masks, H, W) float masks in [0, 1], generated on the CPU from ``generator``."""
    h, w = size
    ch, cw = math.ceil(h / cells), math.ceil(w / cells)
    grid = (torch.rand(n_masks, 1, cells, cells, generator=generator) < p).float()
    up = F.interpolate(grid, size=((cells + 1) * ch, (cells + 1) * cw), mode="bilinear", align_corners=False)[:, 0]
    dy = torch.randint(0, ch, (n_masks,), generator=generator)
    dx = torch.randint(0, cw, (n_masks,), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, :, None]
    cols = (dx[:, None] + torch.arange(w))[:, None, :]
    return up[torch.arange(n_masks)[:, None, None], rows, cols].clamp_(0.0, 1.0)  # bilinear rounding


@register("rise", reference="Petsiuk, Das, Saenko, BMVC 2018")
def rise(
    ctx: ForwardContext,
    *,
    n_masks: int = 500,
    cells: int = 8,
    p: float = 0.1,
    batch: int = 100,
    seed: int = 0,
    fill: str = "grey",
) -> ExplainOutput:
    if fill not in ("grey", "mean"):
        raise ConfigError(f"attribution.params.rise.fill={fill!r}; expected grey or mean")
    if n_masks < 1 or cells < 1 or not 0 < p <= 1 or batch < 1:
        raise ConfigError(
            f"attribution.params.rise: need n_masks>=1, cells>=1, 0<p<=1, batch>=1 "
            f"(got n_masks={n_masks}, cells={cells}, p={p}, batch={batch})"
        )
    gen = torch.Generator().manual_seed(int(seed))
    masks = rise_masks(int(n_masks), int(cells), float(p), ctx.size, gen).to(ctx.images.device)
    from ..metrics.faithfulness import grey_fill

    x = ctx.images
    grey = grey_fill(ctx.model).to(x.device)[0] if fill == "grey" else torch.zeros(3, 1, 1, device=x.device)
    b = ctx.batch
    per_pass = max(1, int(batch) // b)
    sal = torch.zeros(b, *ctx.size, dtype=torch.float64, device=x.device)
    with torch.no_grad():
        for start in range(0, masks.shape[0], per_pass):
            m = masks[start : start + per_pass]  # (M, H, W)
            keep = m[:, None, None]  # (M, 1, 1, H, W)
            masked = (keep * x[None] + (1 - keep) * grey).reshape(-1, *x.shape[1:])  # (M·B, 3, H, W)
            s = ctx.image_similarity(ctx.clip.encode_image(masked), repeat=m.shape[0]).view(m.shape[0], b)
            sal += torch.einsum("mb,mhw->bhw", s.double(), m.double())
    sal /= n_masks * p
    return ExplainOutput(
        image=minmax_norm(sal.float()),
        meta={"options": {"masked_input": f"image x mask + {fill} x (1 - mask)", "seed": int(seed)}},
    )
