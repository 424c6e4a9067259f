"""NIB (Zhu et al., ICLR 2025) against an independent re-derivation of its equations written here:
one pair at a time, a forward hook replaces the hidden states entering the scaled block by (k/n)·h,
plain ``backward`` gives ∂S/∂Z, A accumulates h ⊙ ∂S/∂Z / n. Nothing from matex.attribution is
used by the reference. Tiny random open_clip CLIP: 56 px, 8 px patches -> 7x7 grid, 3 blocks per
tower (the published depth, the input of block 9 of 12, scales to the input of block 1: at least two
blocks after the bottleneck)."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F

from matex.attribution import explain
from matex.attribution.nib import narrowing_attribution, scaled_input_block
from matex.data.transforms import InputGeometry
from matex.errors import ConfigError
from matex.models.base import MatexModel

SIZE = 56
TEXTS = ["small left basal pleural effusion", "cardiomegaly", "right upper lobe consolidation"]


@pytest.fixture(scope="module")
def model() -> MatexModel:
    torch.manual_seed(5)
    clip = open_clip.CLIP(
        embed_dim=32,
        vision_cfg=dict(image_size=SIZE, patch_size=8, width=32, layers=3, head_width=16),
        text_cfg=dict(context_length=16, vocab_size=49408, width=32, heads=2, layers=3),
    ).eval()
    return MatexModel(clip, open_clip.tokenizer.SimpleTokenizer(context_length=16), InputGeometry(SIZE))


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def minmax(x: torch.Tensor) -> torch.Tensor:
    return (x - x.min()) / (x.max() - x.min())


def nib_reference(clip, x, tokens, tower: str, block: int, steps: int) -> torch.Tensor:
    """One pair: h = the input of ``block`` (the output of block − 1, caught by a hook); for k = 1..n
    the same hook returns (k/n)·h, S = cos of the two embeddings (the other fixed), A += h·∂S/∂Z / n.
    Image: Σ_d A on the patches, 7x7, bilinear to 56, min-max. Text: Σ_d A on SOT..EOT, min-max."""
    blocks = clip.visual.transformer.resblocks if tower == "image" else clip.transformer.resblocks
    eot = int(tokens.argmax(-1))
    with torch.no_grad():
        img_f = F.normalize(clip.encode_image(x), dim=-1)
        txt_f = F.normalize(clip.encode_text(tokens), dim=-1)
        seen = []
        handle = blocks[block - 1].register_forward_hook(lambda m, i, o: seen.append(o))
        clip.encode_image(x) if tower == "image" else clip.encode_text(tokens)
        handle.remove()
        h = seen[0]
    total = torch.zeros_like(h)
    for k in range(1, steps + 1):
        z = (h * k / steps).clone().requires_grad_(True)
        handle = blocks[block - 1].register_forward_hook(lambda m, i, o, z=z: z)
        if tower == "image":
            s = (F.normalize(clip.encode_image(x), dim=-1) * txt_f).sum()
        else:
            s = (F.normalize(clip.encode_text(tokens), dim=-1) * img_f).sum()
        handle.remove()
        s.backward()
        total += h * z.grad / steps
    per_token = total[0].sum(-1)
    if tower == "text":
        return minmax(per_token[: eot + 1])
    grid = per_token[1:].reshape(1, 1, 7, 7)
    return minmax(F.interpolate(grid, size=(SIZE, SIZE), mode="bilinear", align_corners=False)[0, 0])


def test_nib_block_is_the_published_depth_scaled():
    assert scaled_input_block(None, 12, "k") == 9  # ViT-B/32: the input of block 9 (after block 8)
    assert scaled_input_block(None, 4, "k") == 2  # the demo's 4 blocks: two blocks after it
    assert scaled_input_block(None, 3, "k") == 1
    assert scaled_input_block(None, 1, "k") == 0  # the embeddings
    assert scaled_input_block(-1, 3, "k") == 2  # explicit: any block
    with pytest.raises(ConfigError, match="attribution.params.nib.layer"):
        scaled_input_block(5, 3, "attribution.params.nib.layer")


@pytest.mark.parametrize("steps", [1, 4])
def test_nib_equals_an_independent_rederivation(model, images, steps):
    out = explain(model, images, TEXTS, "nib", steps=steps)
    opts = out.meta["options"]
    assert (opts["input_of_block"], opts["text_input_of_block"]) == (1, 1)
    tokens = model.tokenize(TEXTS)
    for p in model.clip.parameters():
        p.requires_grad_(False)
    try:
        for i in range(len(TEXTS)):
            ref = nib_reference(model.clip, images[i : i + 1], tokens[i : i + 1], "image", 1, steps)
            torch.testing.assert_close(out.image[i], ref, atol=1e-5, rtol=0)
            ref_t = nib_reference(model.clip, images[i : i + 1], tokens[i : i + 1], "text", 1, steps)
            np.testing.assert_allclose(out.text[i], ref_t.numpy(), atol=1e-5, rtol=0)
    finally:
        for p in model.clip.parameters():
            p.requires_grad_(True)


def test_nib_at_the_last_blocks_input_is_blind_to_the_patches(model, images):
    """Why the default keeps two blocks after the bottleneck: entering the last pre-norm block, a
    patch token reaches the score only through LayerNorm, so Σ_d h_d·∂S/∂h_d vanishes (rounding
    level) for every patch, while one block earlier it does not."""
    from matex.attribution.wrapper import ForwardContext

    ctx = ForwardContext(model=model, images=images, tokens=model.tokenize(TEXTS), texts=TEXTS)
    per_patch = {}
    for block in (1, 2):
        h = ctx.vision_tokens_after(block - 1)

        def similarity(z: torch.Tensor, block=block, b=h.shape[0]) -> torch.Tensor:
            return ctx.image_similarity(ctx.vision_features_from(z, block), repeat=z.shape[0] // b)

        per_patch[block] = narrowing_attribution(h, similarity, 4).sum(-1)[:, 1:].abs().max()
    assert per_patch[2] < 1e-3 * per_patch[1], per_patch


def test_nib_is_deterministic_batch_independent_and_differs_from_m2ib(model, images):
    out = explain(model, images, TEXTS, "nib")
    again = explain(model, images, TEXTS, "nib")
    assert torch.equal(out.image, again.image)
    single = torch.cat([explain(model, images[i : i + 1], TEXTS[i : i + 1], "nib").image for i in range(3)])
    torch.testing.assert_close(out.image, single, atol=1e-5, rtol=0)
    for i in range(3):  # text: the padding of longer phrases in the batch changes nothing
        one = explain(model, images[i : i + 1], TEXTS[i : i + 1], "nib").text[0]
        np.testing.assert_allclose(out.text[i], one, atol=1e-5)
    m2ib = explain(model, images, TEXTS, "m2ib", steps=4, n_noise=3).image
    assert (m2ib - out.image).abs().amax() > 0.05
    assert explain(model, images[:1], TEXTS[:1], "nib", text_side=False).text is None
    with pytest.raises(ConfigError, match="attribution.params.nib.steps"):
        explain(model, images, TEXTS, "nib", steps=0)
