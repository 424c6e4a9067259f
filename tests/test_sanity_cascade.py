"""The sanity cascade randomises every parameter tensor of both towers (Adebayo et al. 2018;
issue: the stem, embeddings, ln_pre and the text tower used to stay trained): image tower top down,
text tower separately with the image tower trained, "full" = both. Checked on open_clip's ViT, the
demo's convolutional stem and a timm + BERT (BiomedCLIP-like) model."""

from __future__ import annotations

import numpy as np
import open_clip
import pandas as pd
import pytest
import torch

from matex.data.transforms import InputGeometry
from matex.errors import MatexError
from matex.metrics.cascade import SHARED, cascade_plan, randomize_cascading, reinitialised_state
from matex.metrics.studies import sanity_curve
from matex.models.base import MatexModel
from matex.models.stem import install_conv_stem

SIZE = 64


def tiny_model(stem: bool) -> MatexModel:
    torch.manual_seed(0)
    clip = open_clip.CLIP(
        embed_dim=32,
        vision_cfg=dict(image_size=SIZE, patch_size=16, width=32, layers=3, head_width=16),
        text_cfg=dict(context_length=16, vocab_size=49408, width=32, heads=2, layers=2),
    )
    if stem:
        install_conv_stem(clip, channels=4)
    return MatexModel(clip.eval(), open_clip.tokenizer.SimpleTokenizer(context_length=16), InputGeometry(SIZE))


def perturb(model: MatexModel) -> MatexModel:
    """Move every parameter and BatchNorm statistic off its initial value, as training does."""
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for t in [*model.clip.parameters(), *(b for b in model.clip.buffers() if b.is_floating_point())]:
            if t.ndim == 2 and t.shape[0] == t.shape[1] and not torch.isfinite(t).all():
                continue  # the text tower's causal mask (-inf above the diagonal) is not a weight
            t.add_((torch.randn(t.shape, generator=gen) * 0.1 + 0.05).abs())
    return model


def tower_params(model: MatexModel) -> tuple[set[str], set[str]]:
    names = [n for n, _ in model.clip.named_parameters() if n not in SHARED]
    image = {n for n in names if n.startswith("visual.")}
    return image, set(names) - image


def changed(model: MatexModel, other: MatexModel) -> set[str]:
    before, after = model.clip.state_dict(), other.clip.state_dict()
    return {k for k in before if before[k].is_floating_point() and not torch.equal(before[k], after[k])}


def constant_init(model: MatexModel) -> dict[str, float]:
    """Tensors whose initialiser is a constant: norm weights (1) and biases (0), the attention and
    MLP biases (0 under torch's MultiheadAttention init; open_clip's Linear biases are drawn)."""
    out = {}
    for mod_name, module in model.clip.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        if isinstance(module, (torch.nn.LayerNorm, torch.nn.BatchNorm2d)):
            out[prefix + "weight"], out[prefix + "bias"] = 1.0, 0.0
        if isinstance(module, torch.nn.MultiheadAttention):
            out[prefix + "in_proj_bias"], out[prefix + "out_proj.bias"] = 0.0, 0.0
    return out


@pytest.fixture(params=[False, True], ids=["patch_embedding", "conv_stem"])
def model(request) -> MatexModel:
    return perturb(tiny_model(request.param))


def test_full_step_reinitialises_every_parameter_of_both_towers(model):
    plan = cascade_plan(model)
    full = randomize_cascading(model, len(plan.steps), seed=1)
    image, text = tower_params(model)
    assert plan.steps[-1].tower == "full" and plan.steps[-1].names == image | text
    assert changed(model, full) >= image | text  # every tensor of both towers differs from the trained one
    assert "logit_scale" not in changed(model, full)  # the temperature is neither tower's
    # constant-initialised tensors are reset to their initial value, not left trained
    state = full.clip.state_dict()
    for name, value in constant_init(model).items():
        assert torch.equal(state[name], torch.full_like(state[name], value)), name
    if any(".running_var" in k for k in state):  # the stem's BatchNorm statistics are reset too
        assert all(torch.equal(state[k], torch.ones_like(state[k])) for k in state if k.endswith("running_var"))
    assert full.meta["fallback_init"] == []  # every tensor reached by a library initialiser


def test_image_cascade_runs_top_down_and_text_cascade_leaves_the_image_tower_trained(model):
    plan = cascade_plan(model)
    image, text = tower_params(model)
    groups = [g for g, _ in plan.image_groups]
    assert groups == [
        "projection + final norm",
        "block 3",
        "block 2",
        "block 1",
        "ln_pre",
        "positional + class embeddings",
        "patch embedding / stem",
    ]
    assert [g for g, _ in plan.text_groups] == [
        "projection + final norm",
        "block 2",
        "block 1",
        "positional embedding",
        "token embedding",
    ]
    assert set(plan.image_groups[0][1]) == {"visual.proj", "visual.ln_post.weight", "visual.ln_post.bias"}
    assert all(n.startswith("visual.conv1.") for n in plan.image_groups[-1][1])
    previous: set[str] = set()
    for k, step in enumerate(plan.steps[: plan.n_image], start=1):  # each step adds exactly its own group
        got = changed(model, randomize_cascading(model, k, seed=1)) & (image | text)
        assert got == previous | set(plan.image_groups[k - 1][1]), step.label
        previous = got
    assert previous == image
    for j in range(1, plan.n_text + 1):
        got = changed(model, randomize_cascading(model, plan.n_image + j, seed=1))
        assert not got & image  # the text cascade keeps the image tower trained
        assert got & text == {n for _, m in plan.text_groups[:j] for n in m}
    assert got & text == text


def test_cascade_is_seeded_nested_and_leaves_the_original_alone(model):
    before = {k: v.clone() for k, v in model.clip.state_dict().items()}
    fresh = reinitialised_state(model.clip, 3)
    two = randomize_cascading(model, 2, seed=3, fresh=fresh).clip.state_dict()
    five = randomize_cascading(model, 5, seed=3).clip.state_dict()
    other = randomize_cascading(model, 5, seed=4).clip.state_dict()
    top = "visual.transformer.resblocks.2.mlp.c_fc.weight"
    assert torch.equal(two[top], five[top]) and torch.equal(two["visual.proj"], five["visual.proj"])
    assert not torch.equal(five[top], other[top])
    assert all(torch.equal(before[k], v) for k, v in model.clip.state_dict().items())
    with pytest.raises(MatexError, match="cascade step 99"):
        randomize_cascading(model, 99, seed=0)


def test_a_gradient_map_changes_after_full_randomisation_and_sobel_does_not(model):
    rng = np.random.default_rng(6)
    images = rng.integers(0, 256, (3, SIZE, SIZE), dtype=np.uint8)
    pairs = pd.DataFrame(
        {
            "pair_id": ["a", "b", "c"],
            "patient_id": ["p1", "p1", "p2"],
            "category": ["x", "y", "x"],
            "phrase": ["left effusion", "cardiomegaly", "right upper opacity"],
        }
    )
    full = len(cascade_plan(model).steps)
    kept: dict = {}
    grads = sanity_curve(model, "saliency", {}, pairs, images, np.arange(3), 2, 0, steps=[full], keep_maps=kept)
    assert set(grads["tower"]) == {"full"} and list(grads["patient_id"]) == ["p1", "p1", "p2"]
    assert not np.allclose(kept["trained/a"], kept[f"step{full}/a"], atol=1e-2)
    assert (grads["abs_spearman"] < 0.9).all() and (grads["ssim"] < 0.9).all()
    edges = sanity_curve(model, "sobel", {}, pairs, images, np.arange(3), 2, 0, steps=[full])
    assert np.allclose(edges["abs_spearman"], 1.0) and np.allclose(edges["ssim"], 1.0)


def test_unknown_parameter_is_an_error_not_a_forgotten_tensor():
    model = tiny_model(False)
    model.clip.visual.extra_gain = torch.nn.Parameter(torch.ones(4))
    with pytest.raises(MatexError, match="'extra_gain' fits no cascade group"):
        cascade_plan(model)


def test_timm_and_bert_towers_are_randomised_whole(tmp_path):
    pytest.importorskip("transformers")
    from test_models_zoo import tiny_biomedclip_dir

    from matex.models.loading import load_model

    model = perturb(load_model(f"local-dir:{tiny_biomedclip_dir(tmp_path)}"))
    plan = cascade_plan(model)
    assert [g for g, _ in plan.image_groups] == [
        "projection + final norm",
        "block 3",
        "block 2",
        "block 1",
        "positional + class embeddings",
        "patch embedding / stem",
    ]  # timm's norm_pre is an Identity here: no ln_pre step
    assert [g for g, _ in plan.text_groups][:3] == ["projection + final norm", "block 2", "block 1"]
    image, text = tower_params(model)
    full = randomize_cascading(model, len(plan.steps), seed=2)
    assert changed(model, full) >= image | text and full.meta["fallback_init"] == []
    text_only = changed(model, randomize_cascading(model, plan.n_image + plan.n_text, seed=2))
    assert not text_only & image and text_only >= text
