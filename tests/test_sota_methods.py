"""LeGrad and Grad-ECLIP against independent computations: an explicit ViT forward written here
(every block's attention probabilities, queries, keys, values and context are graph tensors of this
file, not of the wrapper), differentiated with plain ``torch.autograd.grad``. Tiny random open_clip
CLIPs, 56 px with 8 px patches (7x7 grid)."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F

from matex.attribution import explain
from matex.attribution.common import minmax_norm, upsample
from matex.data.transforms import InputGeometry
from matex.errors import ConfigError
from matex.models.base import MatexModel

SIZE = 56
TEXTS = ["small left basal pleural effusion", "cardiomegaly", "right upper lobe consolidation"]


def make_model(vision_layers: int = 3, seed: int = 0) -> MatexModel:
    torch.manual_seed(seed)
    clip = open_clip.CLIP(
        embed_dim=32,
        vision_cfg=dict(image_size=SIZE, patch_size=8, width=32, layers=vision_layers, head_width=16),
        text_cfg=dict(context_length=16, vocab_size=49408, width=32, heads=2, layers=2),
    ).eval()
    return MatexModel(clip, open_clip.tokenizer.SimpleTokenizer(context_length=16), InputGeometry(SIZE))


@pytest.fixture(scope="module")
def model() -> MatexModel:
    return make_model()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


def grid_map(patch_scores: torch.Tensor) -> torch.Tensor:
    g = patch_scores.reshape(patch_scores.shape[0], 7, 7)
    return minmax_norm(upsample(g, (SIZE, SIZE)))


def explicit_blocks(blocks, t: torch.Tensor, mask: torch.Tensor | None = None) -> list[dict]:
    """Run open_clip residual blocks by hand on batch-first tokens ``t``; per block the attention
    probabilities a, the queries/keys/values (B, T, D), the context (B, T, D) and the output."""
    out = []
    for blk in blocks:
        h = blk.ln_1(t)
        q, k, v = (h @ blk.attn.in_proj_weight.T + blk.attn.in_proj_bias).chunk(3, dim=-1)
        heads = blk.attn.num_heads
        split = lambda z, heads=heads: z.reshape(z.shape[0], z.shape[1], heads, -1).transpose(1, 2)  # noqa: E731
        scores = split(q) @ split(k).transpose(-1, -2) / (q.shape[-1] // heads) ** 0.5
        if mask is not None:
            scores = scores + mask
        a = scores.softmax(-1)
        ctx = (a @ split(v)).transpose(1, 2).reshape_as(t)
        t = t + blk.attn.out_proj(ctx)
        t = t + blk.mlp(blk.ln_2(t))
        out.append({"a": a, "q": q, "k": k, "v": v, "ctx": ctx, "out": t})
    return out


def text_features(m: MatexModel, texts) -> torch.Tensor:
    with torch.no_grad():
        return F.normalize(m.clip.encode_text(m.tokenize(texts)), dim=-1)


# ------------------------------------------------------------------------------------------- LeGrad
def legrad_reference(m: MatexModel, x: torch.Tensor, texts, start: int = 0, pooling: str = "model"):
    visual = m.clip.visual
    ft = text_features(m, texts)
    with torch.enable_grad():
        recs = explicit_blocks(visual.transformer.resblocks, visual._embeds(x))
        torch.testing.assert_close(
            visual._pool(recs[-1]["out"])[0] @ visual.proj, m.clip.encode_image(x), atol=1e-5, rtol=1e-5
        )
        per_layer = []
        for r in recs[start:]:
            tok = r["out"]
            pooled = visual.ln_post(tok.mean(1)) if pooling == "mean" else visual.ln_post(tok[:, 0])
            s = (F.normalize(pooled @ visual.proj, dim=-1) * ft).sum(-1)
            per_layer.append(
                torch.stack([torch.autograd.grad(s[i], [r["a"]], retain_graph=True)[0][i] for i in range(len(texts))])
            )  # one pair at a time
    e = [g.clamp_min(0).mean(1).mean(1)[:, 1:] for g in per_layer]
    return grid_map(torch.stack(e).mean(0))


@pytest.mark.parametrize("start, pooling", [(0, "model"), (-2, "mean")])
def test_legrad_equals_explicit_per_layer_attention_gradients(model, images, start, pooling):
    out = explain(model, images, TEXTS, "legrad", start_layer=start, pooling=pooling)
    expected = legrad_reference(model, images, TEXTS, start=start % 3, pooling=pooling)
    assert out.image.abs().sum() > 0
    torch.testing.assert_close(out.image, expected, atol=1e-5, rtol=0)
    assert out.meta["options"]["layers"] == list(range(start % 3, 3))


def test_legrad_is_not_the_whole_network_gradient(model, images):
    """Reading s_l at every layer differs from differentiating the final score alone (the test can
    fail: a wrong implementation that reuses dS/dA_l gives this map)."""
    out = explain(model, images, TEXTS, "legrad", start_layer=0, pooling="model")
    visual = model.clip.visual
    ft = text_features(model, TEXTS)
    with torch.enable_grad():
        recs = explicit_blocks(visual.transformer.resblocks, visual._embeds(images))
        s = (F.normalize(visual._pool(recs[-1]["out"])[0] @ visual.proj, dim=-1) * ft).sum()
        grads = torch.autograd.grad(s, [r["a"] for r in recs])
    wrong = grid_map(torch.stack([g.clamp_min(0).mean((1, 2))[:, 1:] for g in grads]).mean(0))
    assert (out.image - wrong).abs().max() > 1e-3


def test_legrad_default_is_the_authors_lewrapper(model, images):
    """Default = the released code (last two blocks, mean over all tokens); the paper's prose reading
    (every block, CLS) is another map on this model."""
    out = explain(model, images, TEXTS, "legrad")
    assert out.meta["params"]["start_layer"] == -2 and out.meta["params"]["pooling"] == "mean"
    torch.testing.assert_close(
        out.image, legrad_reference(model, images, TEXTS, start=1, pooling="mean"), atol=1e-5, rtol=0
    )
    prose = explain(model, images, TEXTS, "legrad", start_layer=0, pooling="model").image
    assert (prose - out.image).abs().amax() > 0.05
    one_block = explain(make_model(vision_layers=1), images, TEXTS, "legrad")  # "last two" of one block: all
    assert one_block.meta["options"]["layers"] == [0]


def test_legrad_rejects_bad_pooling(model, images):
    with pytest.raises(ConfigError, match="attribution.params.legrad.pooling"):
        explain(model, images, TEXTS, "legrad", pooling="max")


# --------------------------------------------------------------------------------------- Grad-ECLIP
def loosened(q_row: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """min-max of cos(q_row, k_j) over the keys given, per pair."""
    c = (F.normalize(q_row, dim=-1).unsqueeze(1) * F.normalize(k, dim=-1)).sum(-1)
    lo, hi = c.amin(1, keepdim=True), c.amax(1, keepdim=True)
    return (c - lo) / (hi - lo)


def grad_eclip_image_reference(m: MatexModel, x: torch.Tensor, texts, loosen: bool = True):
    visual = m.clip.visual
    ft = text_features(m, texts)
    with torch.enable_grad():
        recs = explicit_blocks(visual.transformer.resblocks, visual._embeds(x))
        last = recs[-1]
        s = (F.normalize(visual._pool(last["out"])[0] @ visual.proj, dim=-1) * ft).sum(-1)
        (g,) = torch.autograd.grad(s.sum(), [last["ctx"]])
    w = g[:, 0]  # channel weights at the CLS row
    lam = loosened(last["q"][:, 0], last["k"][:, 1:]) if loosen else torch.ones(x.shape[0], 49)
    maps = torch.stack([torch.relu((w[i] * last["v"][i, 1:] * lam[i, :, None]).sum(-1)) for i in range(len(texts))])
    return grid_map(maps.detach())


@pytest.mark.parametrize("loosen", [True, False])
def test_grad_eclip_image_equals_explicit_decomposition(model, images, loosen):
    out = explain(model, images, TEXTS, "grad_eclip", loosen=loosen)
    expected = grad_eclip_image_reference(model, images, TEXTS, loosen=loosen)
    assert out.image.abs().sum() > 0
    torch.testing.assert_close(out.image, expected, atol=1e-5, rtol=0)


def grad_eclip_text_reference(m: MatexModel, x: torch.Tensor, texts, n_layers: int = 1):
    clip = m.clip
    tokens = m.tokenize(texts)
    with torch.no_grad():
        fi = F.normalize(clip.encode_image(x), dim=-1)
    with torch.enable_grad():
        t = clip.token_embedding(tokens) + clip.positional_embedding
        recs = explicit_blocks(clip.transformer.resblocks, t, mask=clip.attn_mask)
        eot = tokens.argmax(-1)
        rows = torch.arange(len(texts))
        ft = clip.ln_final(recs[-1]["out"])[rows, eot] @ clip.text_projection
        s = (F.normalize(ft, dim=-1) * fi).sum(-1)
        grads = torch.autograd.grad(s.sum(), [r["ctx"] for r in recs[-n_layers:]])
    scores = []
    for i, e in enumerate(eot.tolist()):
        total = 0
        for r, g in zip(recs[-n_layers:], grads):
            lam = loosened(r["q"][i : i + 1, e], r["k"][i : i + 1])[0][: e + 1]  # range: every position
            total = total + (g[i, e] * r["v"][i, : e + 1] * lam[:, None]).sum(-1)
        sc = torch.relu(total).detach().numpy().copy()
        sc[0] = sc[e] = 0.0  # start and end tokens carry no word
        inner = sc[1:e]
        sc[1:e] = (inner - inner.min()) / (inner.max() - inner.min())
        scores.append(sc)
    return scores


@pytest.mark.parametrize("n_layers", [1, 2, 8])
def test_grad_eclip_text_equals_explicit_decomposition(model, images, n_layers):
    """The authors' text side: the last 8 blocks (here clamped to the tower's 2), λ rescaled over
    every context position."""
    out = explain(model, images, TEXTS, "grad_eclip", text_layers=n_layers)
    used = min(n_layers, 2)
    assert out.meta["options"]["text_layers"] == used
    if n_layers == 8:
        assert out.meta["params"]["text_layers"] == 8  # the default is the authors' 8
        assert explain(model, images, TEXTS, "grad_eclip").meta["options"]["text_layers"] == 2
    expected = grad_eclip_text_reference(model, images, TEXTS, used)
    assert out.text is not None and len(out.text) == len(TEXTS)
    for got, want in zip(out.text, expected):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-5)
        assert got.max() == pytest.approx(1.0)


def test_grad_eclip_channel_weights_matter(model, images):
    """Fails for a map that drops the gradient weighting (the sum of values weighted by λ alone)."""
    out = explain(model, images, TEXTS, "grad_eclip")
    visual = model.clip.visual
    with torch.no_grad():
        recs = explicit_blocks(visual.transformer.resblocks, visual._embeds(images))
    last = recs[-1]
    lam = loosened(last["q"][:, 0], last["k"][:, 1:])
    unweighted = grid_map(torch.relu((last["v"][:, 1:] * lam[..., None]).sum(-1)))
    assert (out.image - unweighted).abs().max() > 1e-3


@pytest.mark.parametrize("method", ["legrad", "grad_eclip"])
def test_batch_equals_one_by_one(model, images, method):
    batch = explain(model, images, TEXTS, method).image
    single = torch.cat([explain(model, images[i : i + 1], TEXTS[i : i + 1], method).image for i in range(3)])
    torch.testing.assert_close(batch, single, atol=1e-5, rtol=0)


def test_benchmark_reports_newer_methods_as_ratios_to_matex():
    import pandas as pd

    from matex.bench.methods import target_summary

    rows = [
        ("demo", 1, "matex", 20.0, 40),
        ("demo", 1, "legrad", 30.0, 20),
        ("demo", 1, "grad_eclip", 10.0, 60),
        ("demo", 8, "matex", 5.0, 60),
    ]
    df = pd.DataFrame(rows, columns=["model", "batch", "method", "ms_per_pair", "peak_mb"])
    df["pairs_per_s"] = 1000.0 / df["ms_per_pair"]
    text = target_summary(df)
    assert "LeGrad/MATEX time 1.50, peak memory 0.50" in text
    assert "Grad-ECLIP/MATEX time 0.50, peak memory 1.50" in text
    assert "batch 8, newer" not in text  # not measured at batch 8: no line rather than nan
