"""Contrastive training: the loss is CLIP's, training is seeded and deterministic, a tiny model
learns where a bright blob is, and train_demo writes a checkpoint and log the loader reads back."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from matex.models.demo_training import train_demo
from matex.models.loading import load_model_from_config
from matex.models.train import (
    contrastive_loss,
    evaluate_retrieval,
    laterality_accuracy,
    train_clip,
    validation_loss,
)

SIDES, ZONES = ("left", "right"), ("upper", "lower")


def blob_pairs(n: int, seed: int):
    """56x56 noisy images with one bright blob; the phrase names its side and zone ("left upper")."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:56, 0:56]
    images = np.zeros((n, 56, 56), np.uint8)
    texts = []
    for i in range(n):
        side, zone = rng.integers(2), rng.integers(2)
        cx = (14 if side == 0 else 42) + rng.integers(-4, 5)
        cy = (14 if zone == 0 else 42) + rng.integers(-4, 5)
        image = rng.normal(60, 15, (56, 56))
        image[(xx - cx) ** 2 + (yy - cy) ** 2 < 49] += 150
        images[i] = np.clip(image, 0, 255)
        texts.append(f"{SIDES[side]} {ZONES[zone]}")
    return images, texts


@pytest.fixture
def new_model(make_tiny_model):
    """new_model(seed=0): a fresh random tiny model (tests/conftest.py) at 56 px, context length 8."""
    return lambda seed=0: make_tiny_model(input_size=56, context_length=8, seed=seed)


def test_contrastive_loss_is_clip_loss_for_distinct_phrases(new_model):
    import open_clip

    model = new_model()
    images = model.preprocess(blob_pairs(4, 0)[0])
    tokens = model.tokenize(["one", "two", "three", "four"])
    with torch.no_grad():
        ours = contrastive_loss(model, images, tokens)
        fi = model.clip.encode_image(images, normalize=True)
        ft = model.clip.encode_text(tokens, normalize=True)
        reference = open_clip.ClipLoss()(fi, ft, model.clip.logit_scale.exp())
    assert torch.allclose(ours, reference, atol=1e-6)


def test_training_is_deterministic_for_a_seed(new_model):
    images, texts = blob_pairs(48, 1)
    weights = []
    for seed in (0, 0, 1):
        model = new_model()
        history = train_clip(
            model,
            images,
            texts,
            epochs=1,
            batch_size=16,
            lr=1e-3,
            weight_decay=0.01,
            warmup_steps=2,
            seed=seed,
            progress=False,
        )
        assert [row["epoch"] for row in history] == [1] and np.isfinite(history[0]["train_loss"])
        assert not model.clip.training
        weights.append(torch.cat([p.detach().flatten() for p in model.clip.parameters()]))
    assert torch.equal(weights[0], weights[1])
    assert not torch.equal(weights[0], weights[2])  # the seed drives the shuffling


def test_validation_loss_is_fixed_and_gradient_free(new_model):
    model = new_model()
    images, texts = blob_pairs(40, 2)
    a = validation_loss(model, images, texts, batch_size=16, seed=0)
    b = validation_loss(model, images, texts, batch_size=16, seed=0)
    assert a == b and np.isfinite(a)
    assert all(p.grad is None for p in model.clip.parameters())
    # equals the training loss of the same seeded batches, computed directly on each batch
    from matex.data.transforms import normalize_batch
    from matex.models.train import _batches

    tokens = model.tokenizer(texts)
    with torch.no_grad():
        direct = [
            (
                float(
                    contrastive_loss(model, normalize_batch(images[idx.numpy()], model.mean, model.std), tokens[idx])
                ),
                len(idx),
            )
            for idx in _batches(len(texts), 16, torch.Generator().manual_seed(0))
        ]
    assert a == pytest.approx(sum(loss * n for loss, n in direct) / sum(n for _, n in direct), rel=1e-5)


def test_retrieval_chance_levels(new_model):
    model = new_model()
    images = np.random.default_rng(0).integers(0, 256, (130, 56, 56), dtype=np.uint8)
    distinct = [f"phrase {i}" for i in range(130)]
    out = evaluate_retrieval(model, images, distinct, ["A", "b", "C", "a"] * 32 + ["b", "c"])
    assert out["n_categories"] == 3 and out["zero_shot_chance"] == pytest.approx(1 / 3)
    # chunks of 100 and 30 distinct phrases
    assert out["r_at_1_chance"] == pytest.approx((100 * 0.01 + 30 / 30) / 130)
    assert out["r_at_5_chance"] == pytest.approx((100 * 0.05 + 30 * 5 / 30) / 130)
    assert 0 <= out["r_at_1"] <= out["r_at_5"] <= 1


@pytest.mark.slow
def test_tiny_model_learns_blob_location(new_model):
    train_images, train_texts = blob_pairs(200, 0)
    val_images, val_texts = blob_pairs(60, 1)
    model = new_model()
    before = evaluate_retrieval(model, val_images, val_texts, val_texts)
    before_laterality = laterality_accuracy(model, val_images, val_texts)
    history = train_clip(
        model,
        train_images,
        train_texts,
        epochs=8,
        batch_size=8,
        lr=1e-3,
        weight_decay=0.0,
        warmup_steps=5,
        seed=0,
        progress=False,
        val=(val_images, val_texts, val_texts),
    )
    final = history[-1]
    assert final["zero_shot_chance"] == pytest.approx(0.25)
    assert final["zero_shot_accuracy"] >= 0.6 > before["zero_shot_accuracy"]
    assert final["r_at_1"] >= 0.6 and final["r_at_1_chance"] == pytest.approx(0.25)
    assert final["train_loss"] < 0.8 * history[0]["train_loss"]
    assert final["val_loss"] < 0.8 * history[0]["val_loss"]
    # laterality: the true phrase beats the same phrase with left/right exchanged (chance 50 %)
    assert final["n_lateralised"] == 60
    assert final["laterality_accuracy"] >= 0.75 > before_laterality["laterality_accuracy"], (final, before_laterality)


def test_train_demo_writes_checkpoint_and_log(tmp_path, make_tiny_demo):
    images, texts = blob_pairs(40, 3)
    pairs = pd.DataFrame(
        {
            "pair_id": np.arange(40),
            "phrase": texts,
            "category": [t.split()[0].title() for t in texts],
            "split": ["train"] * 30 + ["val"] * 10,
        }
    )
    pairs.to_parquet(tmp_path / "pairs.parquet")
    np.save(tmp_path / "images.npy", images)
    demo = dict(
        make_tiny_demo(input_size=56, context_length=8),
        epochs=2,
        batch_size=16,
        lr=1e-3,
        weight_decay=0.05,
        warmup_steps=2,
        threads=1,
    )
    cfg = {
        "seed": 0,
        "data": {"source": "synthetic"},
        "input": {"size": 56, "mode": "center_crop", "mean": [0.5] * 3, "std": [0.25] * 3},
        "model": {
            "name": "demo",
            "source": "demo",
            "arch": "ViT-B-32",
            "pretrained": None,
            "checkpoint": None,
            "demo": demo,
        },
    }
    log = train_demo(
        tmp_path / "pairs.parquet",
        tmp_path / "images.npy",
        cfg,
        tmp_path / "m" / "model.pt",
        tmp_path / "m" / "train_log.json",
        progress=False,
    )
    assert json.loads((tmp_path / "m" / "train_log.json").read_text()) == json.loads(json.dumps(log))
    assert (log["n_train"], log["n_val"]) == (30, 10) and len(log["epochs"]) == 2
    assert log["final"]["zero_shot_chance"] == pytest.approx(0.5) and "val_loss" in log["final"]
    model = load_model_from_config(cfg, checkpoint=str(tmp_path / "m" / "model.pt"))
    assert model.meta["trained"]["config_hash"] == log["config_hash"]
    assert tuple(model.mean) == (0.5, 0.5, 0.5)
    # the loaded weights are the trained ones, not the seed's initialisation
    fresh = load_model_from_config(cfg)
    x, t = model.preprocess(images[:4]), model.tokenize(texts[:4])
    assert not torch.equal(model.similarity(x, t), fresh.similarity(x, t))


def test_swap_sides_and_lateralised_phrases():
    from matex.models.train import _lateralised, swap_sides

    assert swap_sides("Left apical pneumothorax, right effusion") == "Right apical pneumothorax, left effusion"
    assert swap_sides("leftover opacity") == "leftover opacity"  # whole words only
    assert _lateralised("small left pleural effusion")
    assert not _lateralised("bibasilar atelectasis") and not _lateralised("left and right effusions")


def test_side_swapped_hard_negatives_raise_the_loss_and_masked_ones_do_not(new_model):
    model = new_model()
    images = model.preprocess(blob_pairs(4, 0)[0])
    texts = ["left upper", "right lower", "left lower", "right upper"]
    tokens = model.tokenize(texts)
    swapped = model.tokenize(["right upper", "left lower"])
    with torch.no_grad():
        plain = contrastive_loss(model, images, tokens)
        harder = contrastive_loss(model, images, tokens, swapped)
        masked = contrastive_loss(model, images, tokens, swapped, torch.ones(4, 2, dtype=torch.bool))
    assert harder > plain
    assert torch.allclose(masked, plain)
