"""The demo model's training aids (issue 14): augmentation that keeps left and right, the
convolutional stem, and the held-out metrics (per-film zero-shot, text->image retrieval)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from matex.data.transforms import InputGeometry
from matex.errors import ConfigError, MapError
from matex.models.augment import Augmentation
from matex.models.loading import demo_model_cfg, load_model, save_checkpoint
from matex.models.retrieval import _chance_any, evaluate_retrieval

TINY = {
    "embed_dim": 32,
    "vision": {"layers": 1, "width": 32, "heads": 2, "patch_size": 8, "mlp_ratio": 2.0},
    "text": {"layers": 1, "width": 32, "heads": 2, "context_length": 8},
}


def test_augmentation_is_seeded_small_and_never_mirrors():
    image = torch.zeros(1, 64, 64)
    image[0, 20:44, 4:16] = 1.0  # a bar on the left
    batch = image.repeat(16, 1, 1)
    aug = Augmentation(shift=0.05, scale=0.05, rotate_deg=3, contrast=0.1, brightness=0.05)
    a = aug.apply(batch, torch.Generator().manual_seed(0))
    b = aug.apply(batch, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == batch.shape
    assert not torch.equal(a[0], a[1])  # each image its own transform
    bar = (a > 0.5).float()
    centre_x = (bar * torch.arange(64.0)).sum((1, 2)) / bar.sum((1, 2))
    assert bool((centre_x < 16).all())  # the bar (centre x = 9.5) stays on the left
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0


def test_augmentation_config_names_a_bad_key():
    assert Augmentation.from_config(None) is None
    assert Augmentation.from_config({"shift": 0.0}) is None
    with pytest.raises(ConfigError, match="model.demo.augment.*flip"):
        Augmentation.from_config({"flip": 0.5})


def test_conv_stem_keeps_the_token_grid_and_survives_a_checkpoint(tmp_path):
    demo = {**TINY, "vision": {**TINY["vision"], "stem_channels": 4}}
    geometry = InputGeometry(56)
    model = load_model("demo", demo=demo, geometry=geometry, seed=0)
    plain = load_model("demo", demo=TINY, geometry=geometry, seed=0)
    x = torch.randn(2, 3, 56, 56)
    assert isinstance(model.clip.visual.conv1, torch.nn.Sequential)
    assert model.clip.visual.conv1(x).shape == plain.clip.visual.conv1(x).shape == (2, 32, 7, 7)
    path = tmp_path / "stem.pt"
    save_checkpoint(model, path, demo_model_cfg(demo, 56), {})
    again = load_model("checkpoint", checkpoint=str(path), geometry=geometry)
    with torch.no_grad():
        assert torch.allclose(model.clip.encode_image(x), again.clip.encode_image(x))
    with pytest.raises(ConfigError, match="stem_channels"):
        load_model("demo", demo={**demo, "vision": {**demo["vision"], "patch_size": 4}}, geometry=InputGeometry(28))


def test_zero_shot_per_film_credits_either_finding_of_a_two_finding_film(monkeypatch):
    import matex.models.retrieval as retrieval

    names = ["cardiomegaly", "edema"]
    prompt = torch.eye(4)[:2]  # prompt features: e0 = cardiomegaly, e1 = edema
    monkeypatch.setattr(retrieval, "_encode_texts", lambda model, texts, bs: prompt[[names.index(t) for t in texts]])
    model = load_model("demo", demo=TINY, geometry=InputGeometry(56), seed=0)
    # film A (two findings) looks like cardiomegaly; film B (edema) looks like cardiomegaly too
    image_feats = torch.stack([torch.eye(4)[0], torch.eye(4)[0], torch.eye(4)[0]])
    text_feats = torch.eye(4)[[2, 3, 2]]
    out = evaluate_retrieval(
        model,
        np.zeros((3, 56, 56), np.uint8),
        ["big heart", "edema", "haze"],
        ["Cardiomegaly", "Edema", "Edema"],
        features=(image_feats, text_feats),
        image_ids=["A", "A", "B"],
    )
    assert out["zero_shot_accuracy"] == 0.5  # A right (one of its findings), B wrong
    assert out["zero_shot_accuracy_pairs"] == pytest.approx(1 / 3)
    assert out["n_images"] == 2


def test_text_to_image_retrieval_finds_the_film_of_each_phrase():
    model = load_model("demo", demo=TINY, geometry=InputGeometry(56), seed=0)
    n = 6
    feats = torch.eye(8)[:n]
    texts = [f"phrase {i}" for i in range(n)]
    perfect = evaluate_retrieval(model, np.zeros((n, 56, 56), np.uint8), texts, None, features=(feats, feats))
    assert perfect["t2i_r_at_1"] == 1.0 and perfect["r_at_1"] == 1.0
    shuffled = evaluate_retrieval(model, None, texts, None, features=(feats, feats[[1, 2, 3, 4, 5, 0]]))
    assert shuffled["t2i_r_at_1"] == 0.0 and shuffled["r_at_1"] == 0.0
    assert perfect["t2i_r_at_1_chance"] == pytest.approx(1 / 6)
    assert _chance_any(6, 1, 5) == pytest.approx(5 / 6) and _chance_any(6, 2, 5) == 1.0


def test_learning_curves_draw_the_targets_and_fall_back_for_old_logs():
    from matex.figures.training import learning_curves

    row = {"epoch": 1, "train_loss": 3.0, "val_loss": 3.1, "zero_shot_accuracy": 0.6, "zero_shot_chance": 0.125}
    new = [dict(row, zero_shot_accuracy_pairs=0.5, t2i_r_at_5=0.3, t2i_r_at_5_chance=0.06, r_at_5=0.2)]
    fig = learning_curves({"epochs": new, "n_train": 10})
    retrieval = fig.axes[2]
    assert retrieval.get_title() == "Text-to-image R@5"
    assert [round(v, 6) for v in retrieval.lines[0].get_ydata()] == [30.0]  # t2i in front, i2t lighter
    old = learning_curves({"epochs": [dict(row, r_at_5=0.2, r_at_5_chance=0.06)]})
    assert [round(v, 6) for v in old.axes[2].lines[0].get_ydata()] == [20.0]


def test_roar_retraining_goes_through_the_demo_training_helper_with_the_demo_recipe(monkeypatch, tmp_path):
    """train_demo and ROAR's retraining of the demo model (from init, and fine-tuning the explained
    model) call the one helper with the same recipe: text aids, augmentation, and (from init) the
    optimiser settings; the categories of the training pairs reach the category prompts."""
    import pandas as pd

    from matex.models import demo_training
    from matex.roar import retrain as rt

    calls = []

    def fake_train_clip(model, images, texts, **kw):
        calls.append({"n": len(texts), **kw})
        return []

    monkeypatch.setattr(demo_training, "train_clip", fake_train_clip)
    demo = {
        **TINY,
        "epochs": 3,
        "batch_size": 4,
        "lr": 1e-3,
        "weight_decay": 0.05,
        "warmup_steps": 2,
        "category_prompt_fraction": 0.25,
        "side_swap_negatives": True,
        "augment": {"shift": 0.04, "contrast": 0.1},
    }
    cfg = {
        "seed": 0,
        "input": {"size": 56, "mode": "center_crop"},
        "model": {"source": "demo", "name": "tiny", "demo": demo},
        "roar": {"batch_size": 8, "retrain": {"epochs": 1, "mode": "from_init", "finetune_lr": 1e-4}},
    }
    cats = ["Edema", "Pneumothorax", "Edema", "Cardiomegaly", "Edema", "Pneumonia"]
    pd.DataFrame(
        {"phrase": [f"left finding {i}" for i in range(6)], "category": cats, "split": ["train"] * 4 + ["val"] * 2}
    ).to_parquet(tmp_path / "pairs.parquet")
    images = np.zeros((6, 56, 56), np.uint8)
    np.save(tmp_path / "images.npy", images)
    demo_training.train_demo(
        tmp_path / "pairs.parquet",
        tmp_path / "images.npy",
        cfg,
        tmp_path / "m.pt",
        tmp_path / "log.json",
        progress=False,
    )
    texts = [f"right finding {i}" for i in range(4)]
    rt.retrain(cfg, None, images[:4], texts, seed=1, threads=1, categories=cats[:4])
    base = load_model("demo", demo=demo, geometry=InputGeometry(56), seed=0)
    rt.retrain({**cfg, "roar": {**cfg["roar"], "retrain": {**cfg["roar"]["retrain"], "mode": "finetune"}}},
               base, images[:4], texts, seed=1, threads=1, categories=cats[:4])  # fmt: skip
    demo_call, from_init, finetune = calls
    for key in ("category_prompt_fraction", "side_swap_negatives", "augment"):
        assert demo_call[key] == from_init[key] == finetune[key], key
    assert demo_call["augment"] is not None and demo_call["side_swap_negatives"] is True
    for key in ("lr", "weight_decay"):
        assert demo_call[key] == from_init[key]
    assert finetune["lr"] == 1e-4 and finetune["weight_decay"] == 0.0  # ROAR's fine-tuning settings
    assert demo_call["categories"] == cats[:4] and from_init["categories"] == cats[:4]
    assert from_init["epochs"] == 1 and demo_call["epochs"] == 3  # ROAR's own epochs
    with pytest.raises(MapError, match="category"):
        rt.retrain(cfg, None, images[:4], texts, seed=1, threads=1)
