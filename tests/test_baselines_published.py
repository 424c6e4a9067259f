"""Baselines as their papers define them, each against an independent re-derivation written here
(plain loops and hooks on open_clip, nothing from matex.attribution): M2IB (Wang et al. 2023, image
and text side), Grad-CAM read as pytorch-grad-cam reads ViTs, and the controls mean_box,
category_box and matex_noprior. Tiny random open_clip CLIP: 56 px, 8 px patches -> 7x7 grid."""

from __future__ import annotations

import numpy as np
import open_clip
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from matex.attribution import explain
from matex.attribution.m2ib import scaled_block
from matex.attribution.mean_box import TrainingBoxes
from matex.data.transforms import InputGeometry
from matex.errors import DataError
from matex.maps.store import attribute_rows
from matex.models.base import MatexModel

SIZE = 56
TEXTS = ["small left basal pleural effusion", "cardiomegaly", "right upper lobe consolidation"]


@pytest.fixture(scope="module")
def model() -> MatexModel:
    torch.manual_seed(3)
    clip = open_clip.CLIP(
        embed_dim=32,
        vision_cfg=dict(image_size=SIZE, patch_size=8, width=32, layers=3, head_width=16),
        text_cfg=dict(context_length=16, vocab_size=49408, width=32, heads=2, layers=3),
    ).eval()
    return MatexModel(clip, open_clip.tokenizer.SimpleTokenizer(context_length=16), InputGeometry(SIZE))


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


def minmax(x: torch.Tensor) -> torch.Tensor:
    return (x - x.min()) / (x.max() - x.min())


def to_image(patch_scores: torch.Tensor) -> torch.Tensor:
    """(49,) patch scores -> (56, 56): 7x7 grid, bilinear (align_corners False), min-max."""
    grid = patch_scores.reshape(1, 1, 7, 7)
    return minmax(F.interpolate(grid, size=(SIZE, SIZE), mode="bilinear", align_corners=False)[0, 0])


# ---------------------------------------------------------------------------------------- M2IB
def m2ib_reference(
    clip,
    x,
    tokens,
    tower: str,
    block: int,
    *,
    steps: int,
    n_noise: int,
    beta: float = 0.1,
    lr: float = 1.0,
    init: float = 5.0,
    seed: int = 0,
) -> torch.Tensor:
    """One pair, as the authors' code does it: a bottleneck module after ``block`` of ``tower``,
    gates α (1, T, D), Z = λ·h + (1−λ)·ε, capacity −½(1 + log var − μ² − var), loss
    β·mean(capacity) − mean cos over the noisy copies, Adam; the map is the capacity of the last
    forward pass summed over features. Noise convention: randn((n_noise, T, D)) per step from one
    generator seeded with ``seed`` (T = the full context for text)."""
    for p in clip.parameters():
        p.requires_grad_(False)
    blocks = clip.visual.transformer.resblocks if tower == "image" else clip.transformer.resblocks
    eot = int(tokens.argmax(-1))
    with torch.no_grad():
        img_f = F.normalize(clip.encode_image(x), dim=-1)
        txt_f = F.normalize(clip.encode_text(tokens), dim=-1)
        seen = []
        handle = blocks[block].register_forward_hook(lambda m, i, o: seen.append(o))
        clip.encode_image(x) if tower == "image" else clip.encode_text(tokens)
        handle.remove()
        h = seen[0]  # (1, T, D), batch first
    t, d = h.shape[1:]
    counted = t if tower == "image" else eot + 1  # the authors' text has no padding
    alpha = torch.full((1, t, d), init, requires_grad=True)
    opt = torch.optim.Adam([alpha], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    last_capacity = None
    for _ in range(steps):
        eps = torch.randn(n_noise, t, d, generator=gen)
        lam = torch.sigmoid(alpha)
        mu, var = h * lam, (1 - lam) ** 2
        cap = -0.5 * (1 + torch.log(var) - mu**2 - var)
        last_capacity = cap.detach()
        z = mu + var.sqrt() * eps
        handle = blocks[block].register_forward_hook(lambda m, i, o, z=z: z)
        if tower == "image":
            f = F.normalize(clip.encode_image(x.expand(n_noise, -1, -1, -1)), dim=-1)
            cos = (f * txt_f).sum(-1)
        else:
            f = F.normalize(clip.encode_text(tokens.expand(n_noise, -1)), dim=-1)
            cos = (f * img_f).sum(-1)
        handle.remove()
        loss = beta * cap[:, :counted].mean() - cos.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    for p in clip.parameters():
        p.requires_grad_(True)
    per_token = last_capacity[0].sum(-1)
    return to_image(per_token[1:]) if tower == "image" else minmax(per_token[: eot + 1])


def test_m2ib_block_is_the_published_depth_scaled():
    assert scaled_block(None, 12, "k") == 9  # ViT-B/32: after block 9 of 12
    assert scaled_block(None, 6, "k") == 4
    assert scaled_block(None, 4, "k") == 2  # the demo's 4 blocks
    assert scaled_block(None, 3, "k") == 1  # never after the last block
    assert scaled_block(None, 1, "k") == 0
    assert scaled_block(-2, 6, "k") == 4


def test_m2ib_equals_an_independent_rederivation(model, images):
    """Image and text maps of every pair equal the one-pair reference (float32 rounding only: the
    method uses log-sigmoid for log(1−λ), the reference log((1−λ)²))."""
    steps, n_noise = 4, 3
    out = explain(model, images, TEXTS, "m2ib", steps=steps, n_noise=n_noise)
    vblock, tblock = out.meta["options"]["block"], out.meta["options"]["text_block"]
    assert (vblock, tblock) == (1, 1)
    tokens = model.tokenize(TEXTS)
    for i in range(len(TEXTS)):
        ref_img = m2ib_reference(
            model.clip, images[i : i + 1], tokens[i : i + 1], "image", vblock, steps=steps, n_noise=n_noise
        )
        torch.testing.assert_close(out.image[i], ref_img, atol=2e-4, rtol=0)
        ref_txt = m2ib_reference(
            model.clip, images[i : i + 1], tokens[i : i + 1], "text", tblock, steps=steps, n_noise=n_noise
        )
        np.testing.assert_allclose(out.text[i], ref_txt.numpy(), atol=2e-4, rtol=0)
    # the per-token gate (one α per token, noise from the pair's token statistics) is another method
    token = explain(model, images, TEXTS, "m2ib_token", layer=vblock, steps=steps, n_noise=n_noise).image
    assert (token - out.image).abs().amax() > 0.05


def test_m2ib_cxr_is_the_authors_chest_xray_demo(model, images):
    """β = 1 on both sides, text bottleneck after text block 7 of 12 (scaled), image after block 9;
    equal to the one-pair reference with those settings."""
    assert scaled_block(None, 12, "k", published=7) == 7 and scaled_block(None, 12, "k") == 9
    steps, n_noise = 3, 2
    out = explain(model, images[:1], TEXTS[:1], "m2ib_cxr", steps=steps, n_noise=n_noise)
    assert out.meta["params"]["beta"] == 1.0
    vblock, tblock = out.meta["options"]["block"], out.meta["options"]["text_block"]
    assert tblock == scaled_block(None, 3, "k", published=7)
    tokens = model.tokenize(TEXTS[:1])
    kw = dict(steps=steps, n_noise=n_noise, beta=1.0)
    ref_img = m2ib_reference(model.clip, images[:1], tokens, "image", vblock, **kw)
    torch.testing.assert_close(out.image[0], ref_img, atol=2e-4, rtol=0)
    ref_txt = m2ib_reference(model.clip, images[:1], tokens, "text", tblock, **kw)
    np.testing.assert_allclose(out.text[0], ref_txt.numpy(), atol=2e-4, rtol=0)
    general = explain(model, images[:1], TEXTS[:1], "m2ib", steps=steps, n_noise=n_noise).image
    assert (general - out.image).abs().amax() > 0.01  # β matters


def test_m2ib_capacity_is_in_the_raw_feature_coordinates(model, images):
    """Before any step (α = init everywhere) the capacity per token is Σ_d ½(λ²h_d² + (1−λ)² − 1) −
    log(1−λ): up to a constant, Σ_d h_d² of the RAW block output h (no per-pair standardisation)."""
    still = explain(model, images[:2], TEXTS[:2], "m2ib", steps=0, text_side=False)
    assert still.text is None
    seen = []
    blocks = model.clip.visual.transformer.resblocks
    handle = blocks[still.meta["options"]["block"]].register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        model.clip.encode_image(images[:2])
    handle.remove()
    energy = (seen[0][:, 1:] ** 2).sum(-1)
    for i in range(2):
        torch.testing.assert_close(still.image[i], to_image(energy[i]), atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------ Grad-CAM
def gradcam_reference(clip, x, tokens) -> torch.Tensor:
    """Grad-CAM on the last block's ln_1 output, the block run by hand: w_d = mean over patches of
    ∂S/∂a_d, map = ReLU(Σ_d w_d a_d) on the patch tokens."""
    visual = clip.visual
    blocks = visual.transformer.resblocks
    with torch.no_grad():
        txt_f = F.normalize(clip.encode_text(tokens), dim=-1)
        h = visual._embeds(x)
        for blk in blocks[:-1]:
            h = blk(h)
    last = blocks[-1]
    a = last.ln_1(h).detach().requires_grad_(True)
    y = h + last.ls_1(last.attn(a, a, a, need_weights=False)[0])
    y = y + last.ls_2(last.mlp(last.ln_2(y)))
    img_f = F.normalize(visual.ln_post(y[:, 0]) @ visual.proj, dim=-1)
    (grad,) = torch.autograd.grad((img_f * txt_f).sum(), [a])
    cam = (grad[:, 1:].mean(1, keepdim=True) * a[:, 1:]).sum(-1).relu().detach()
    return torch.stack([to_image(c) for c in cam])


def test_gradcam_reads_the_last_blocks_ln1_like_pytorch_grad_cam(model, images):
    out = explain(model, images, TEXTS, "gradcam")
    assert out.meta["options"]["block"] == 2 and "ln_1" in out.meta["options"]["tokens"]
    assert (out.image.flatten(1).amax(1) > 0).all()  # CLS pooling does not zero it
    ref = gradcam_reference(model.clip, images, model.tokenize(TEXTS))
    torch.testing.assert_close(out.image, ref, atol=1e-5, rtol=0)
    other = explain(model, images, TEXTS, "gradcam", layer=-2, point="input").image
    assert (other - out.image).abs().amax() > 0.05


# ------------------------------------------------------------------------------------- Chefer
def chefer_reference(clip, x, tokens, start_layer: int = -1, scale: float | None = None) -> torch.Tensor:
    """The authors' CLIP notebook, one pair at a time: blocks run by hand with A a graph tensor; the
    target is the diagonal logit y = exp(logit_scale)·cos (``scale`` overrides the factor); R = I,
    and for each block from the start layer (−1: the last) R += mean_h((∂y/∂A ⊙ A)^+)·R; map R[0, 1:]."""
    visual = clip.visual
    blocks = list(visual.transformer.resblocks)
    start = start_layer % len(blocks)
    factor = float(clip.logit_scale.detach().exp()) if scale is None else scale
    maps = []
    for i in range(x.shape[0]):
        with torch.no_grad():
            txt_f = F.normalize(clip.encode_text(tokens[i : i + 1]), dim=-1)
        with torch.enable_grad():
            t = visual._embeds(x[i : i + 1])
            attn = []
            for blk in blocks:
                h = blk.ln_1(t)
                q, k, v = (h @ blk.attn.in_proj_weight.T + blk.attn.in_proj_bias).chunk(3, dim=-1)
                nh = blk.attn.num_heads
                q, k, v = (z.reshape(1, z.shape[1], nh, -1).transpose(1, 2) for z in (q, k, v))
                a = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
                attn.append(a)
                t = t + blk.attn.out_proj((a @ v).transpose(1, 2).reshape_as(t))
                t = t + blk.mlp(blk.ln_2(t))
            img_f = F.normalize(visual._pool(t)[0] @ visual.proj, dim=-1)
            logit = factor * (img_f * txt_f).sum()
            grads = torch.autograd.grad(logit, attn)
        n = attn[0].shape[-1]
        r = torch.eye(n)
        for a, g in list(zip(attn, grads))[start:]:
            cam = (g * a).clamp(min=0).mean(1)[0]
            r = r + cam @ r
        maps.append(to_image(r[0, 1:].detach()))
    return torch.stack(maps)


def test_chefer_default_is_the_authors_clip_notebook(model, images):
    """Default: last block only, logit target; equals the one-pair re-derivation of the notebook's
    equations, and equals the explicit logit-target variant."""
    out = explain(model, images, TEXTS, "chefer")
    assert out.meta["params"] == {"start_layer": -1, "target": "logit"}
    assert out.meta["options"]["start_layer"] == 2
    tokens = model.tokenize(TEXTS)
    torch.testing.assert_close(out.image, chefer_reference(model.clip, images, tokens), atol=1e-5, rtol=0)
    assert torch.equal(out.image, explain(model, images, TEXTS, "chefer", target="logit", start_layer=-1).image)


def test_chefer_options_start_layer_and_cosine_target(model, images):
    """start_layer=0 (every block) is another map; with several blocks the logit's scale changes the
    map (R's identity is not scaled), so the cosine target is a real option, and each matches its
    re-derivation."""
    tokens = model.tokenize(TEXTS)
    default = explain(model, images, TEXTS, "chefer").image
    every = explain(model, images, TEXTS, "chefer", start_layer=0)
    torch.testing.assert_close(every.image, chefer_reference(model.clip, images, tokens, 0), atol=1e-5, rtol=0)
    assert (every.image - default).abs().amax() > 0.05
    cosine = explain(model, images, TEXTS, "chefer", start_layer=0, target="cosine").image
    torch.testing.assert_close(cosine, chefer_reference(model.clip, images, tokens, 0, scale=1.0), atol=1e-5, rtol=0)
    assert (cosine - every.image).abs().amax() > 1e-4
    last_cosine = explain(model, images, TEXTS, "chefer", target="cosine").image  # one block: scale-free
    torch.testing.assert_close(last_cosine, default, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- rollout, RISE
def attention_by_mha(clip, x) -> list[torch.Tensor]:
    """Every vision block's attention probabilities (B, heads, T, T), from open_clip's own
    nn.MultiheadAttention (need_weights) on each block's recorded input."""
    blocks = clip.visual.transformer.resblocks
    inputs = []
    handles = [b.register_forward_pre_hook(lambda m, a: inputs.append(a[0])) for b in blocks]
    with torch.no_grad():
        clip.encode_image(x)
        for h in handles:
            h.remove()
        out = []
        for blk, t in zip(blocks, inputs):
            h = blk.ln_1(t)
            out.append(blk.attn(h, h, h, need_weights=True, average_attn_weights=False)[1])
    return out


def test_rollout_equals_abnar_zuidema_over_every_block(model, images):
    """R = Π_l rownorm(½·mean_h A_l + ½·I) (later blocks on the left), row CLS, rows normalised
    with keepdim (the fix of vit-explain's broadcast)."""
    r = None
    for a in attention_by_mha(model.clip, images):
        a_bar = 0.5 * a.mean(1) + 0.5 * torch.eye(a.shape[-1])
        a_bar = a_bar / a_bar.sum(-1, keepdim=True)
        r = a_bar if r is None else a_bar @ r
    expected = torch.stack([to_image(row) for row in r[:, 0, 1:]])
    torch.testing.assert_close(explain(model, images, TEXTS, "rollout").image, expected, atol=1e-5, rtol=0)


def test_rise_mean_fill_is_the_authors_masking_and_grey_differs(model, images):
    """fill='mean' multiplies the normalised input by the mask (eclique/RISE: 0 = the mean colour);
    the map is Σ_m S(x⊙m)·m / (N·p) with the same seeded masks; the default grey fill is another map."""
    from matex.attribution.rise import rise_masks

    n, p = 24, 0.1
    masks = rise_masks(n, 8, p, (SIZE, SIZE), torch.Generator().manual_seed(0))
    txt_f = F.normalize(model.clip.encode_text(model.tokenize(TEXTS)), dim=-1).detach()
    with torch.no_grad():
        sal = torch.zeros(len(TEXTS), SIZE, SIZE, dtype=torch.float64)
        for m in masks:
            s = (F.normalize(model.clip.encode_image(images * m), dim=-1) * txt_f).sum(-1)
            sal += s.double()[:, None, None] * m.double()
    expected = torch.stack([minmax(x) for x in (sal / (n * p)).float()])
    mean_fill = explain(model, images, TEXTS, "rise", n_masks=n, batch=8, fill="mean").image
    torch.testing.assert_close(mean_fill, expected, atol=1e-5, rtol=0)
    grey = explain(model, images, TEXTS, "rise", n_masks=n, batch=8).image
    assert (grey - mean_fill).abs().amax() > 0.01


# ---------------------------------------------------------------------------- bias controls
def pairs_table() -> pd.DataFrame:
    """Six pairs: four train (one without a box), two val; boxes (x0, y0, x1, y1) in input pixels."""
    return pd.DataFrame(
        {
            "pair_id": [f"p{i}" for i in range(6)],
            "phrase": ["left effusion", "cardiomegaly", "left effusion", "opacity", "cardiomegaly", "effusion"],
            "category": [
                "Pleural effusion",
                "Cardiomegaly",
                "Pleural effusion",
                "Lung Opacity",
                "Cardiomegaly",
                "Pleural effusion",
            ],
            "split": ["train", "train", "train", "train", "val", "val"],
            "boxes": [
                [[30.0, 30.0, 50.0, 50.0]],
                [[10.0, 20.0, 40.0, 40.0]],
                [[28.0, 34.0, 54.0, 52.0], [2.0, 2.0, 6.0, 6.0]],
                [],
                [[0.0, 0.0, 56.0, 56.0]],
                [[0.0, 0.0, 10.0, 10.0]],
            ],
        }
    )


def hand_mask(boxes) -> np.ndarray:
    """Pixel (r, c) is inside a box when its centre (c + ½, r + ½) lies in [x0, x1) × [y0, y1)."""
    m = np.zeros((SIZE, SIZE))
    for r in range(SIZE):
        for c in range(SIZE):
            m[r, c] = any(x0 <= c + 0.5 < x1 and y0 <= r + 0.5 < y1 for x0, y0, x1, y1 in boxes)
    return m


def hand_minmax(m: np.ndarray) -> np.ndarray:
    return (m - m.min()) / (m.max() - m.min())


def test_mean_box_is_the_mean_training_mask_and_ignores_image_and_phrase(model, images):
    pairs = pairs_table()
    tb = TrainingBoxes.from_pairs(pairs, SIZE)
    expected = hand_minmax(np.mean([hand_mask(b) for b in pairs["boxes"][:3]], axis=0))  # train, with a box
    out = explain(model, images, TEXTS, "mean_box", training_boxes=tb)
    for m in out.image:
        np.testing.assert_allclose(m.numpy(), expected, atol=1e-6)
    other = explain(model, torch.zeros_like(images), ["nothing"] * 3, "mean_box", training_boxes=tb)
    assert torch.equal(other.image, out.image)


def test_category_box_differs_per_category_and_falls_back_to_mean_box(model, images):
    pairs = pairs_table()
    tb = TrainingBoxes.from_pairs(pairs, SIZE)
    cats = ["Pleural effusion", "Cardiomegaly", "Fracture"]
    out = explain(model, images, TEXTS, "category_box", training_boxes=tb, categories=cats)
    effusion = hand_minmax((hand_mask(pairs["boxes"][0]) + hand_mask(pairs["boxes"][2])) / 2)
    np.testing.assert_allclose(out.image[0].numpy(), effusion, atol=1e-6)
    np.testing.assert_allclose(out.image[1].numpy(), hand_mask(pairs["boxes"][1]), atol=1e-6)
    assert (out.image[0] - out.image[1]).abs().amax() > 0.5
    mean = explain(model, images[:1], TEXTS[:1], "mean_box", training_boxes=tb).image[0]
    assert torch.equal(out.image[2], mean) and out.meta["options"]["fallback_to_mean_box"] == [2]
    # the category, not the image or the phrase, decides
    swapped = explain(model, images.flip(0), TEXTS[::-1], "category_box", training_boxes=tb, categories=cats)
    assert torch.equal(swapped.image, out.image)


def test_bias_controls_need_training_boxes_and_get_them_from_the_pairs_table(model, images, tmp_path):
    with pytest.raises(DataError, match="training_boxes"):
        explain(model, images, TEXTS, "mean_box")
    with pytest.raises(DataError, match="categor"):
        explain(model, images, TEXTS, "category_box", training_boxes=TrainingBoxes.from_pairs(pairs_table(), SIZE))
    pairs_table().to_parquet(tmp_path / "pairs.parquet")  # boxes come back as nested arrays
    pairs = pd.read_parquet(tmp_path / "pairs.parquet")
    images_u8 = np.random.default_rng(0).integers(0, 256, (len(pairs), SIZE, SIZE), dtype=np.uint8)
    maps, table = attribute_rows(model, "category_box", {}, pairs, images_u8, [4, 5], batch_size=2, progress=False)
    np.testing.assert_allclose(maps["p4"], hand_mask(pairs_table()["boxes"][1]), atol=1e-6)  # Cardiomegaly (train)
    assert not np.allclose(maps["p4"], maps["p5"])


def test_matex_noprior_is_matex_without_prior_renormalised(model, images):
    out = explain(model, images, TEXTS, "matex_noprior")
    k = (0.5 + 0.2 + 0.35 + 0.2) / (0.5 + 0.2 + 0.35)
    ref = explain(
        model, images, TEXTS, "matex", alpha=0.5 * k, beta=0.2 * k, gamma=0.35 * k, delta=0.0, prior_strength=1.0
    )
    assert torch.equal(out.image, ref.image)
    assert all(np.array_equal(a, b) for a, b in zip(out.text, ref.text))
    assert abs(sum(out.meta["options"]["fusion_weights"].values()) - 1.25) < 1e-9
    assert float(out.components["prior"].abs().max()) == 0.0  # P ≡ 1 normalises to zeros
    # the final min-max makes the rescaling immaterial; the prior is what changes the map
    unscaled = explain(model, images, TEXTS, "matex", delta=0.0, prior_strength=1.0).image
    torch.testing.assert_close(out.image, unscaled, atol=1e-5, rtol=0)
    with_prior = explain(model, images, TEXTS, "matex").image
    assert (with_prior[0] - out.image[0]).abs().amax() > 0.05  # "left basal" has a location


# ------------------------------------------------------------------------ seed-to-seed agreement
def test_seed_agreement_separates_noise_stochastic_and_deterministic_methods(model, images):
    from matex.errors import ConfigError
    from matex.metrics.seed_agreement import seed_agreement

    noise = seed_agreement(model, images, TEXTS, "random")
    assert noise.shape == (3,) and np.abs(noise).max() < 0.15  # two independent noise maps
    rise = seed_agreement(model, images, TEXTS, "rise", n_masks=16, batch=8)
    assert (rise < 0.999).all()  # another draw of masks, another map
    assert np.allclose(seed_agreement(model, images, TEXTS, "nib", steps=2), 1.0)  # no seed: deterministic
    with pytest.raises(ConfigError, match="two different seeds"):
        seed_agreement(model, images, TEXTS, "rise", seeds=(0, 0))
