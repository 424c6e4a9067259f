"""A convolutional stem for the demo ViT: patch tokens from a few small convolutions instead of one
linear projection of each 32x32 patch.

A ViT trained from scratch on a few thousand films learns slowly through its patch embedding (one
3072 -> width matrix per 32-px patch, no weight sharing inside the patch). Replacing it with a short
stack of strided convolutions makes optimisation faster and more stable at the same token grid
(Xiao et al., "Early convolutions help transformers see better", NeurIPS 2021). The stem is a drop-in
for open_clip's ``VisionTransformer.conv1``: same input, same (B, width, grid, grid) output, so the
transformer blocks, the 7x7 token grid, the attention maps and every attribution method are unchanged.

Layout for patch size P (P divisible by 8): a P/8 x P/8 patchify convolution to ``channels``, then
three 3x3 stride-2 convolutions doubling the channels (BatchNorm + GELU after each), then a 1x1
convolution to the transformer width. At P = 32: strides 4, 2, 2, 2.
"""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError


def conv_stem(patch_size: int, width: int, channels: int, in_channels: int = 3) -> nn.Sequential:
    """The stem described in the module docstring, output stride ``patch_size``."""
    if patch_size % 8 or patch_size < 8:
        raise ConfigError(
            f"config key model.demo.vision.stem_channels: needs a patch size divisible by 8, got {patch_size}"
        )
    if channels <= 0:
        raise ConfigError(f"config key model.demo.vision.stem_channels: must be positive, got {channels}")
    first = patch_size // 8
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, channels, first, first, bias=False),
        nn.BatchNorm2d(channels),
        nn.GELU(),
    ]
    c = channels
    for _ in range(3):
        layers += [nn.Conv2d(c, 2 * c, 3, 2, 1, bias=False), nn.BatchNorm2d(2 * c), nn.GELU()]
        c *= 2
    layers.append(nn.Conv2d(c, width, 1))
    return nn.Sequential(*layers)


def install_conv_stem(clip: nn.Module, channels: int) -> None:
    """Replace ``clip.visual.conv1`` (open_clip's linear patch embedding) with :func:`conv_stem`."""
    visual = clip.visual
    conv1 = getattr(visual, "conv1", None)
    if not isinstance(conv1, nn.Conv2d):
        raise ConfigError("model.demo.vision.stem_channels: the vision tower has no patch embedding (conv1) to replace")
    stem = conv_stem(int(conv1.kernel_size[0]), int(conv1.out_channels), int(channels), int(conv1.in_channels))
    visual.conv1 = stem.to(device=conv1.weight.device, dtype=conv1.weight.dtype)
