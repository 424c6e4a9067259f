"""Attribution engine: every method against an independent computation where one exists, plus the
contract (shape, range, finiteness, batching, seeding) for every registered method. Tiny random
open_clip CLIPs (56 px, 8 px patches -> 7x7 grid, like ViT-B/32 at 224 px)."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from matex.attribution import available_methods, explain, get_method, record_tower
from matex.attribution.common import masked_minmax, minmax_norm, upsample
from matex.attribution.rise import rise_masks
from matex.data.transforms import InputGeometry
from matex.errors import ConfigError, DataError, MatexError
from matex.models.base import MatexModel

SIZE = 56
TEXTS = ["small left basal pleural effusion", "cardiomegaly", "right upper lobe consolidation"]
# fast settings for the two iterative methods; everything else runs at its defaults
FAST = {
    "rise": {"n_masks": 40, "batch": 30},
    "m2ib": {"steps": 3, "n_noise": 2},
    "m2ib_token": {"steps": 3, "n_noise": 2},
    "m2ib_cxr": {"steps": 3, "n_noise": 2},
    "nib": {"steps": 3},
}
# what the bias controls (mean_box, category_box) read besides the pairs: training boxes and categories
CATEGORIES = ["Pleural effusion", "Cardiomegaly", "Consolidation"]


def training_boxes():
    from matex.attribution.mean_box import TrainingBoxes

    return TrainingBoxes(
        boxes=[[(4.0, 30.0, 20.0, 50.0)], [(14.0, 20.0, 44.0, 40.0)], [(36.0, 6.0, 52.0, 24.0)]],
        categories=CATEGORIES,
        size=(SIZE, SIZE),
    )


def context(n: int) -> dict:
    return {"training_boxes": training_boxes(), "categories": CATEGORIES[:n]}


def make_model(vision_layers: int = 3, seed: int = 0) -> MatexModel:
    torch.manual_seed(seed)
    clip = open_clip.CLIP(
        embed_dim=32,
        vision_cfg=dict(image_size=SIZE, patch_size=8, width=32, layers=vision_layers, head_width=16),
        text_cfg=dict(context_length=16, vocab_size=49408, width=32, heads=2, layers=2),
    ).eval()
    return MatexModel(clip, open_clip.tokenizer.SimpleTokenizer(context_length=16), InputGeometry(SIZE))


@pytest.fixture(autouse=True)
def _prior_available(monkeypatch):
    """Use matex.priors.spatial_prior when it exists; otherwise a simple stand-in (left half boosted)."""
    import matex.priors as priors

    if not hasattr(priors, "spatial_prior"):

        def stand_in(text, size, sigma=0.1, strength=2.5):
            p = np.ones(size, np.float32)
            if "left" in text:
                p[:, size[1] // 2 :] = strength
            return p

        monkeypatch.setattr(priors, "spatial_prior", stand_in, raising=False)
    from matex.attribution import matex_method

    matex_method._prior_cached.cache_clear()


@pytest.fixture(scope="module")
def model() -> MatexModel:
    return make_model()


@pytest.fixture(scope="module")
def one_block_model() -> MatexModel:
    return make_model(vision_layers=1, seed=1)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


def similarity_with_graph(m: MatexModel, x: torch.Tensor, texts) -> torch.Tensor:
    fi = F.normalize(m.clip.encode_image(x), dim=-1)
    ft = F.normalize(m.clip.encode_text(m.tokenize(texts)), dim=-1)
    return (fi * ft).sum(-1)


def grid_map(patch_scores: torch.Tensor) -> torch.Tensor:
    """Reference path: (B, 49) -> 7x7 -> bilinear to 56x56 -> min-max."""
    g = patch_scores.reshape(patch_scores.shape[0], 7, 7)
    return minmax_norm(upsample(g, (SIZE, SIZE)))


# ------------------------------------------------------------------------------------------ helpers
def test_minmax_constant_map_is_zero_and_range_is_unit():
    x = torch.stack([torch.full((4, 4), 3.0), torch.arange(16.0).view(4, 4)])
    out = minmax_norm(x)
    assert torch.equal(out[0], torch.zeros(4, 4))
    assert out[1].min() == 0 and out[1].max() == 1 and torch.isfinite(out).all()


@pytest.mark.parametrize(
    "grid,size", [((7, 7), (224, 224)), ((7, 7), (225, 100)), ((3, 5), (17, 16)), ((1, 1), (4, 4))]
)
def test_upsample_equals_torch_bilinear(grid, size):
    g = torch.rand(3, *grid, generator=torch.Generator().manual_seed(0))
    reference = torch.nn.functional.interpolate(
        g.unsqueeze(1), size=size, mode="bilinear", align_corners=False
    ).squeeze(1)
    torch.testing.assert_close(upsample(g, size), reference, atol=1e-6, rtol=0)


def test_minmax_normalises_every_map_of_a_batch_on_its_own():
    x = torch.stack([torch.rand(8, 8, generator=torch.Generator().manual_seed(i)) * (i + 1) - i for i in range(3)])
    out = minmax_norm(x)
    for xi, oi in zip(x, out):
        torch.testing.assert_close(oi, (xi - xi.min()) / (xi.max() - xi.min()), atol=1e-6, rtol=0)


def test_masked_minmax_ignores_padding():
    x = torch.tensor([[1.0, 3.0, 100.0]])
    out = masked_minmax(x, torch.tensor([[True, True, False]]))
    assert torch.allclose(out, torch.tensor([[0.0, 1.0, 0.0]]))


def test_discard_lowest_zeroes_the_smallest_but_keeps_cls_to_cls():
    from matex.attribution.rollout import discard_lowest

    a = torch.arange(1.0, 17.0).view(1, 4, 4)  # CLS->CLS (1.0) is the smallest entry
    out = discard_lowest(a, 0.25)  # the 4 smallest are chosen, CLS->CLS survives
    assert out[0, 0, 0] == 1.0 and int((out == 0).sum()) == 3
    assert torch.equal(out.flatten()[4:], a.flatten()[4:])
    assert torch.equal(discard_lowest(a, 0.0), a)


def test_rise_masks_keep_about_p_and_lie_in_unit_range():
    m = rise_masks(400, 8, 0.25, (SIZE, SIZE), torch.Generator().manual_seed(0))
    assert m.shape == (400, SIZE, SIZE) and m.min() >= 0 and m.max() <= 1
    assert abs(float(m.mean()) - 0.25) < 0.03


# ------------------------------------------------------------------------------------------ wrapper
def test_patched_forward_equals_unpatched(model, images):
    tokens = model.tokenize(TEXTS)
    with torch.no_grad():
        ref_i, ref_t = model.clip.encode_image(images), model.clip.encode_text(tokens)
        with record_tower(model.clip.visual.transformer) as vrec, record_tower(model.clip.transformer) as trec:
            got_i, got_t = model.clip.encode_image(images), model.clip.encode_text(tokens)
    torch.testing.assert_close(got_i, ref_i, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got_t, ref_t, atol=1e-6, rtol=1e-5)
    assert len(vrec.attention) == 3 and vrec.attention[0].shape == (3, 2, 50, 50)
    assert len(trec.inputs) == 2
    # the causal mask reached the text attention: nothing above the diagonal
    assert float(trec.attention[0].triu(1).abs().max()) == 0.0
    # restored: no instance override and no hooks left behind
    for blk in list(model.clip.visual.transformer.resblocks) + list(model.clip.transformer.resblocks):
        assert "attention" not in blk.__dict__ and not blk._forward_pre_hooks


def test_explain_leaves_model_untouched(model, images):
    model.clip.train()
    try:
        explain(model, images, TEXTS, "matex")
        assert model.clip.training
    finally:
        model.clip.eval()
    assert all(p.grad is None for p in model.clip.parameters())


# ------------------------------------------------------------------------- methods vs references
def test_saliency_equals_input_gradient(model, images):
    x = images.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(similarity_with_graph(model, x, TEXTS).sum(), [x])
    expected = minmax_norm(g.abs().amax(1))
    torch.testing.assert_close(explain(model, images, TEXTS, "saliency").image, expected, atol=1e-5, rtol=0)
    expected_gi = minmax_norm((g * images).sum(1).abs())
    torch.testing.assert_close(explain(model, images, TEXTS, "grad_input").image, expected_gi, atol=1e-5, rtol=0)


def last_block_attention_by_mha(m: MatexModel, x: torch.Tensor) -> torch.Tensor:
    """Per-head attention of the last vision block from nn.MultiheadAttention itself."""
    last = m.clip.visual.transformer.resblocks[-1]
    seen = {}
    handle = last.register_forward_pre_hook(lambda mod, args: seen.setdefault("x", args[0]))
    with torch.no_grad():
        m.clip.encode_image(x)
        h = last.ln_1(seen["x"])
        _, w = last.attn(h, h, h, need_weights=True, average_attn_weights=False)
    handle.remove()
    return w


def test_raw_attention_equals_mha_weights(model, images):
    w = last_block_attention_by_mha(model, images)
    expected = grid_map(w.mean(1)[:, 0, 1:])
    torch.testing.assert_close(explain(model, images, TEXTS, "raw_attention").image, expected, atol=1e-5, rtol=0)


def test_rollout_over_one_block_is_half_attention_plus_identity(one_block_model, images):
    a = last_block_attention_by_mha(one_block_model, images).mean(1)
    a_bar = 0.5 * a + 0.5 * torch.eye(a.shape[-1])
    expected = grid_map(a_bar[:, 0, 1:])
    out = explain(one_block_model, images, TEXTS, "rollout")
    torch.testing.assert_close(out.image, expected, atol=1e-5, rtol=0)
    assert out.meta["options"]["head_fusion"] == "mean" and out.meta["options"]["discard_ratio"] == 0.0
    # a different head fusion changes the map (the option is honoured) and is recorded
    out_max = explain(one_block_model, images, TEXTS, "rollout", head_fusion="max")
    assert out_max.meta["params"]["head_fusion"] == "max"
    assert not torch.allclose(out_max.image, out.image)


def test_chefer_one_block_is_gradient_weighted_attention(one_block_model, images):
    """Reference: an explicit one-block ViT forward written here, with A a graph tensor."""
    m = one_block_model
    visual = m.clip.visual
    blk = visual.transformer.resblocks[0]
    with torch.enable_grad():
        t = visual._embeds(images)
        h = blk.ln_1(t)
        q, k, v = (h @ blk.attn.in_proj_weight.T + blk.attn.in_proj_bias).chunk(3, dim=-1)
        heads = blk.attn.num_heads
        split = lambda z: z.reshape(z.shape[0], z.shape[1], heads, -1).transpose(1, 2)  # noqa: E731
        q, k, v = split(q), split(k), split(v)
        a = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
        o = blk.attn.out_proj((a @ v).transpose(1, 2).reshape_as(t))
        t = t + o
        t = t + blk.mlp(blk.ln_2(t))
        feats = visual._pool(t)[0] @ visual.proj
        torch.testing.assert_close(feats, m.clip.encode_image(images), atol=1e-5, rtol=1e-5)
        ft = F.normalize(m.clip.encode_text(m.tokenize(TEXTS)), dim=-1).detach()
        s = (F.normalize(feats, dim=-1) * ft).sum(-1)
        (ga,) = torch.autograd.grad(s.sum(), [a])
    expected = grid_map((ga * a).clamp_min(0).mean(1)[:, 0, 1:])
    out = explain(m, images, TEXTS, "chefer")
    assert out.image.abs().sum() > 0
    torch.testing.assert_close(out.image, expected, atol=1e-5, rtol=0)


def block_input_gradients(m: MatexModel, x: torch.Tensor, texts):
    """Block inputs of every vision block and dS/d(input), via plain forward pre-hooks."""
    seen = []
    blocks = m.clip.visual.transformer.resblocks
    handles = [b.register_forward_pre_hook(lambda mod, args: seen.append(args[0])) for b in blocks]
    try:
        with torch.enable_grad():
            s = similarity_with_graph(m, x.clone().requires_grad_(True), texts)
            grads = torch.autograd.grad(s.sum(), seen)
    finally:
        for h in handles:
            h.remove()
    return [t.detach() for t in seen], grads


def test_matex_gradient_term_alone(model, images):
    tokens, grads = block_input_gradients(model, images, TEXTS)
    g = torch.stack([(gr * h).sum(-1).relu() for gr, h in zip(grads, tokens)]).mean(0)[:, 1:]
    expected = grid_map(g)
    assert expected.flatten(1).amax(1).min() > 0, "reference gradient map is all zeros"
    out = explain(model, images, TEXTS, "matex", beta=0.0, gamma=0.0, delta=0.0, prior_strength=1.0)
    torch.testing.assert_close(out.image, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.components["gradient"], expected, atol=1e-5, rtol=0)


def test_requested_token_gradients_equal_the_full_backward(model, images):
    """trace(token_grads={tower: blocks}) stops autograd at the lowest requested block; the gradients
    it returns must equal those of the full backward pass, and the others are None."""
    from matex.attribution.wrapper import ForwardContext

    ctx = ForwardContext(model=model, images=model.preprocess(images), tokens=model.tokenize(TEXTS), texts=TEXTS)
    full = ctx.trace(text=True, token_grads=True)
    n = len(full.vision.attention)
    part = ctx.trace(text=True, token_grads={"vision": [n - 1, n - 2], "text": [0]})
    for i in range(n):
        if i >= n - 2:
            torch.testing.assert_close(part.vision.token_grads[i], full.vision.token_grads[i])
        else:
            assert part.vision.token_grads[i] is None
    torch.testing.assert_close(part.text.token_grads[0], full.text.token_grads[0])
    assert all(g is None for g in part.text.token_grads[1:])
    with pytest.raises(MatexError, match="vision blocks"):
        ctx.trace(token_grads={"vision": [n]})


def test_text_features_from_the_prefix_equal_the_full_context(model):
    from matex.attribution.wrapper import encode_text_prefix

    texts = ["effusion", "small right pleural effusion and basal atelectasis", "cardiomegaly"]
    tokens = model.tokenize(texts)
    assert int(tokens.argmax(-1).max()) + 1 < tokens.shape[1], "test needs padding after the longest text"
    with torch.no_grad():
        torch.testing.assert_close(
            encode_text_prefix(model.clip, tokens), model.clip.encode_text(tokens), atol=1e-5, rtol=1e-5
        )


def test_text_prefix_falls_back_without_argmax_pooling(model, monkeypatch):
    from matex.attribution.wrapper import encode_text_prefix

    monkeypatch.setattr(model.clip, "text_pool_type", "last")
    tokens = model.tokenize(["cardiomegaly"])
    with torch.no_grad():
        torch.testing.assert_close(encode_text_prefix(model.clip, tokens), model.clip.encode_text(tokens))


def test_gradient_maps_are_not_all_zero(model, images):
    """CLS pooling zeroes the last block's OUTPUT patch gradients; block inputs must carry signal."""
    out = explain(model, images, TEXTS, "matex")
    assert (out.components["gradient"].flatten(1).amax(1) > 0).all()
    # even the last block alone gives a non-zero gradient term
    last = explain(model, images, TEXTS, "matex", gradient_layers=1, beta=0.0, gamma=0.0, delta=0.0, prior_strength=1.0)
    assert (last.image.flatten(1).amax(1) > 0).all()
    assert (explain(model, images, TEXTS, "gradcam").image.flatten(1).amax(1) > 0).all()
    with pytest.raises(ConfigError, match="gradcam.layer"):
        explain(model, images, TEXTS, "gradcam", layer=99)


def test_matex_fusion_and_components(model, images):
    out = explain(model, images, TEXTS, "matex")
    c = out.components
    assert set(c) == {"rollout", "consistency", "gradient", "prior", "grad_prior", "grad_consistency"}
    p = out.meta["params"]
    fused = minmax_norm(
        p["alpha"] * c["grad_prior"]
        + p["beta"] * c["rollout"]
        + p["gamma"] * c["grad_consistency"]
        + p["delta"] * c["prior"]
    )
    torch.testing.assert_close(out.image, fused, atol=1e-6, rtol=0)
    assert float(c["consistency"].min()) > 0 and float(c["consistency"].max()) <= 1 + 1e-6
    w = out.meta["options"]["layer_weights"]
    assert abs(sum(w) - 1) < 1e-6 and w == sorted(w)  # deeper layers weigh more
    # text side: one score per real token (SOT .. EOT), in [0, 1]
    eot = model.tokenize(TEXTS).argmax(-1)
    assert [len(t) for t in out.text] == [int(e) + 1 for e in eot]
    assert all(t.dtype == np.float32 and t.min() >= 0 and t.max() <= 1 for t in out.text)


def test_consistency_is_one_with_a_single_layer(model, images):
    out = explain(model, images, TEXTS, "matex", rollout_layers=[-1])
    assert torch.allclose(out.components["consistency"], torch.ones(3, SIZE, SIZE))


# ------------------------------------------------------------------------------- the contract
@pytest.mark.parametrize("method", available_methods())
def test_contract_shape_range_finite(model, images, method):
    params = FAST.get(method, {})
    for x in (images, torch.zeros(2, 3, SIZE, SIZE), np.full((2, SIZE, SIZE), 128, np.uint8)):
        n = x.shape[0]
        out = explain(model, x, TEXTS[:n], method, **context(n), **params)
        assert out.image.shape == (n, SIZE, SIZE) and out.image.dtype == torch.float32
        assert out.image.device.type == "cpu"
        assert torch.isfinite(out.image).all() and out.image.min() >= 0 and out.image.max() <= 1
        assert out.meta["method"] == method
        assert set(out.meta["params"]) == set(get_method(method).defaults)


@pytest.mark.parametrize("method", available_methods())
def test_batch_equals_one_by_one_and_runs_repeat(model, images, method):
    params = FAST.get(method, {})
    batched = explain(model, images, TEXTS, method, **context(3), **params).image
    single = torch.cat(
        [
            explain(
                model,
                images[i : i + 1],
                TEXTS[i : i + 1],
                method,
                training_boxes=training_boxes(),
                categories=CATEGORIES[i : i + 1],
                **params,
            ).image
            for i in range(len(TEXTS))
        ]
    )
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)
    assert torch.equal(explain(model, images, TEXTS, method, **context(3), **params).image, batched)


@pytest.mark.parametrize("method", ["random", "rise", "m2ib", "m2ib_token"])
def test_seed_changes_the_draw(model, images, method):
    params = FAST.get(method, {})
    a = explain(model, images, TEXTS, method, seed=0, **params).image
    b = explain(model, images, TEXTS, method, seed=1, **params).image
    assert not torch.allclose(a, b)


def test_random_maps_differ_between_pairs(model, images):
    out = explain(model, images, TEXTS, "random").image
    assert not torch.allclose(out[0], out[1])


def test_input_forms_agree(model):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (2, SIZE, SIZE), dtype=np.uint8)
    from_array = explain(model, grey, TEXTS[:2], "saliency").image
    from_pil = explain(model, [Image.fromarray(g) for g in grey], TEXTS[:2], "saliency").image
    torch.testing.assert_close(from_pil, from_array, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------ registry / config
# Compute budgets a config may set below the method's default (the demo keeps 2 CPU cores busy for minutes,
# the paper run uses more); every other value in a shipped config must be the method's default.
BUDGET_KEYS = {("rise", "n_masks")}


@pytest.mark.parametrize("config_file", ["config/config.yaml", "config/mscxr.yaml"])
def test_registry_defaults_match_config(config_file):
    from matex.config import load_config

    cfg = load_config(config_file)  # mscxr.yaml is an overlay of config.yaml
    params = cfg["attribution"]["params"]
    assert set(cfg["attribution"]["methods"]) <= set(available_methods())
    for method, values in params.items():
        defaults = get_method(method).defaults
        for key, value in (values or {}).items():
            assert key in defaults, f"{config_file}: {method}.{key} is not a parameter of {method}"
            if (method, key) not in BUDGET_KEYS:
                assert defaults[key] == value, f"{method}.{key}: registry {defaults[key]!r} != config {value!r}"


def test_unknown_method_and_param_are_config_errors(model, images):
    with pytest.raises(ConfigError, match="unknown attribution method 'nope'"):
        explain(model, images, TEXTS, "nope")
    with pytest.raises(ConfigError, match=r"attribution\.params\.rollout.*discard"):
        explain(model, images, TEXTS, "rollout", discard=0.1)
    with pytest.raises(ConfigError, match="head_fusion"):
        explain(model, images, TEXTS, "rollout", head_fusion="median")


def test_mismatched_batch_is_an_error(model, images):
    with pytest.raises(DataError, match="3 images but 2 texts"):
        explain(model, images, TEXTS[:2], "sobel")


def test_sobel_of_constant_image_is_zero_and_edges_are_found(model):
    flat = np.full((1, SIZE, SIZE), 90, np.uint8)
    assert float(explain(model, flat, TEXTS[:1], "sobel").image.abs().max()) == 0.0
    step = flat.copy()
    step[:, :, SIZE // 2 :] = 200
    m = explain(model, step, TEXTS[:1], "sobel").image[0]
    assert float(m[:, SIZE // 2 - 1 : SIZE // 2 + 1].min()) == 1.0 and float(m[:, :10].max()) == 0.0


@pytest.mark.slow
def test_vit_b32_architecture_patched_forward_and_matex():
    """The real ViT-B/32 layout (random weights, no download): patched forward equals the original
    and MATEX's gradient term is non-zero at 224 px."""
    torch.manual_seed(0)
    clip = open_clip.create_model("ViT-B-32").eval()
    m = MatexModel(clip, open_clip.get_tokenizer("ViT-B-32"), InputGeometry(224))
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    tokens = m.tokenize(TEXTS[:1])
    with torch.no_grad():
        ref = clip.encode_image(x), clip.encode_text(tokens)
        with record_tower(clip.visual.transformer) as vrec, record_tower(clip.transformer):
            got = clip.encode_image(x), clip.encode_text(tokens)
    assert len(vrec.attention) == 12 and vrec.attention[0].shape == (1, 12, 50, 50)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-4)
    out = explain(m, x, TEXTS[:1], "matex")
    assert out.image.shape == (1, 224, 224) and float(out.components["gradient"].max()) > 0
