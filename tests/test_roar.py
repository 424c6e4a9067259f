"""ROAR+ pieces: pixel and token removal, the ROAR+ formula and its summary, and (tiny model) one
text-side run."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from matex.errors import ConfigError, MapError
from matex.metrics.localisation import top_fraction_masks
from matex.roar.degrade import degrade_images, degrade_tokens, random_token_maps, roar_plus
from matex.roar.finetune import summarise_roar

SOT, EOT = 49406, 49407  # open_clip's start and end ids; EOT is the largest, so argmax finds it


def _tiny(make_tiny_model):
    """tiny_model(seed=0): a fresh random tiny CLIP at 56 px, context length 8 (tests/conftest.py)."""
    return lambda seed=0: make_tiny_model(input_size=56, context_length=8, seed=seed)


def test_top_fraction_removes_exactly_k_pixels_even_with_ties():
    maps = np.zeros((2, 10, 10), dtype=np.float32)  # all tied
    mask = top_fraction_masks(maps, 0.1)
    assert mask.sum(axis=(1, 2)).tolist() == [10, 10]
    # ties broken by a seeded random order, never by the lower flat index (the first row)
    assert not mask[:, 0, :].all(axis=1).any()


def test_degrade_replaces_the_highest_pixels_with_the_fill_value():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(3, 8, 8), dtype=np.uint8)
    maps = rng.random((3, 8, 8)).astype(np.float32)
    out = degrade_images(images, maps, 0.25, fill=100.4)  # a number: a grey fill at that level
    k = math.ceil(0.25 * 64)
    for i in range(3):
        top = np.argsort(-maps[i].ravel(), kind="stable")[:k]
        assert (out[i].ravel()[top] == 100).all()
        rest = np.setdiff1d(np.arange(64), top)
        assert np.array_equal(out[i].ravel()[rest], images[i].ravel()[rest])
    assert not np.shares_memory(out, images)


def test_roar_plus_random_control_is_seeded_smooth_patch_grid_noise(monkeypatch):
    """ROAR+'s control removes blobs like ROAR's (smooth random maps), not scattered pixels."""
    from scipy import ndimage

    from matex.roar import finetune
    from matex.roar.retrain import smooth_random_maps

    cfg = {"retrain": {"random_grid": 7}}
    a = finetune.random_control_maps(None, cfg, 2, 56, 3)
    assert np.array_equal(a, smooth_random_maps(2, 56, 7, 3))
    assert not np.array_equal(a, finetune.random_control_maps(None, cfg, 2, 56, 4))
    blobs = ndimage.label(top_fraction_masks(a, 0.1)[0])[1]
    assert blobs <= 49  # at most one blob per grid cell (pixel noise: hundreds)


def test_roar_plus_fills_with_the_configured_fill(monkeypatch):
    """roar.fill reaches ROAR+'s degradation: noisy linear by default, grey when asked."""
    from matex.roar import finetune

    seen = []
    monkeypatch.setattr(finetune, "degrade_images", lambda imgs, maps, frac, fill, seed: seen.append(fill) or imgs)
    monkeypatch.setattr("matex.models.train.train_clip", lambda *a, **k: [])
    monkeypatch.setattr("matex.models.train.validation_loss", lambda *a, **k: 1.0)
    images = np.zeros((4, 8, 8), np.uint8)
    pairs = pd.DataFrame({"phrase": ["a", "b", "c", "d"]})
    maps = np.random.default_rng(0).random((2, 8, 8))
    for fill in (None, "grey"):
        cfg = {"top_fraction": 0.1, "epochs": 1, "lr": 1e-5, "batch_size": 2, **({"fill": fill} if fill else {})}
        finetune.roar_run(None, pairs, images, np.arange(2), np.arange(2, 4), "m", maps, cfg, 0, progress=False)
    assert [f.kind for f in seen] == ["noisy_linear", "grey"]


def test_roar_plus_formula_and_seed_pairing():
    assert math.isclose(roar_plus(1.2, 1.0), 20.0) and math.isclose(roar_plus(0.9, 1.0), -10.0)
    runs = pd.DataFrame(
        {
            "variant": ["clean", "clean", "m", "m", "random", "random"],
            "seed": [0, 1, 0, 1, 0, 1],
            "val_loss": [1.0, 2.0, 1.5, 2.0, 1.1, 2.2],
        }
    )
    s = summarise_roar(runs).set_index("method")
    # seed-paired: (50 %, 0 %) -> mean 25, sd 35.36
    assert math.isclose(s.at["m", "roar_plus_mean"], 25.0)
    assert math.isclose(s.at["m", "roar_plus_sd"], np.std([50.0, 0.0], ddof=1))
    assert math.isclose(s.at["random", "roar_plus_mean"], 10.0)


@pytest.mark.slow
def test_roar_plus_of_random_maps_is_near_the_random_control_and_an_oracle_is_far(make_tiny_model):
    """Real fine-tuning of a tiny CLIP that has learned where a bright blob is. Removing the top 10 %
    of a random map is the same intervention as the random-removal control (with other noise), so
    their ROAR+ must agree; removing the blob itself (an oracle map) must hurt far more. The bound
    compares the two gaps measured in the same run, not a fixed number."""
    import copy

    from test_train import blob_pairs

    from matex.models.train import train_clip
    from matex.roar.finetune import random_control_maps, roar_run

    tiny_model = _tiny(make_tiny_model)

    images, texts = blob_pairs(260, 0)
    model = tiny_model()
    train_clip(
        model,
        images[:200],
        texts[:200],
        epochs=8,
        batch_size=8,
        lr=1e-3,
        weight_decay=0.0,
        warmup_steps=5,
        seed=0,
        progress=False,
    )
    pairs = pd.DataFrame({"phrase": texts})
    train_rows, val_rows = np.arange(200), np.arange(200, 260)
    oracle = images.astype(np.float32)[train_rows]  # the bright blob is the top of the map
    cfg = {"top_fraction": 0.10, "epochs": 2, "lr": 1e-3, "batch_size": 16}
    runs = []
    for seed in (0, 1):
        variants = {
            "clean": None,
            "random": None,
            "oracle": oracle,
            "random_map": random_control_maps(model, cfg, len(oracle), oracle.shape[1], 1000 + seed),
        }
        for variant, maps in variants.items():
            runs.append(
                roar_run(
                    copy.deepcopy(model), pairs, images, train_rows, val_rows, variant, maps, cfg, seed, progress=False
                )
            )
    s = summarise_roar(pd.DataFrame(runs)).set_index("method")["roar_plus_mean"]
    print(s.to_dict())
    gap_random = abs(s["random_map"] - s["random"])
    gap_oracle = s["oracle"] - s["random"]
    assert gap_oracle > 0
    assert gap_random < 0.2 * gap_oracle


# ------------------------------------------------------------------------------------ text side
def _tokens(*texts):
    """(B, 10) ids: SOT, the given word ids, EOT, padding 0."""
    out = torch.zeros(len(texts), 10, dtype=torch.long)
    for i, words in enumerate(texts):
        out[i, : len(words) + 2] = torch.tensor([SOT, *words, EOT])
    return out


@pytest.mark.parametrize(
    "fraction, n_words, expected", [(0.1, 5, 1), (0.1, 3, 1), (0.5, 5, 3), (0.3, 7, 3), (0.07, 7, 1), (1.0, 4, 4)]
)
def test_degrade_tokens_removes_ceil_k_n_highest_words_never_sot_or_eot(fraction, n_words, expected):
    rng = np.random.default_rng(n_words)
    tokens = _tokens(list(range(100, 100 + n_words)))
    scores = rng.permutation(n_words + 2).astype(np.float32)
    scores[0] = scores[-1] = 1e6  # SOT and EOT score highest, and still stay
    out = degrade_tokens(tokens, [scores], fraction)
    removed = (out[0] != tokens[0]).nonzero().ravel().tolist()
    assert len(removed) == expected == math.ceil(round(fraction * n_words, 9))
    words = scores[1 : n_words + 1]
    assert sorted(removed) == sorted((np.argsort(-words, kind="stable")[:expected] + 1).tolist())
    assert (out[0, removed] == 0).all() and out[0, 0] == SOT and out[0, n_words + 1] == EOT
    assert torch.equal(out[0, n_words + 2 :], tokens[0, n_words + 2 :])  # padding untouched
    assert tokens[0, 1] == 100  # input untouched


def test_degrade_tokens_ties_take_the_earlier_position_and_context_length_maps():
    tokens = _tokens([11, 12, 13, 14], [21, 22, 23])
    tied = np.r_[0.0, 0.5, 0.9, 0.9, 0.9, 0.0]  # words 2-4 tie: the first two go
    full = np.r_[np.zeros(5), np.full(5, 9.0)]  # a context-length map: only SOT..EOT counts
    out = degrade_tokens(tokens, [tied, full], 0.5)
    assert out[0].tolist() == [SOT, 11, 0, 0, 14, EOT, 0, 0, 0, 0]
    assert out[1].tolist() == [SOT, 0, 0, 23, EOT, 0, 0, 0, 0, 0]  # ceil(1.5) = 2 of 3 tied words
    assert torch.equal(out, degrade_tokens(tokens, [tied, full], 0.5))


def test_degrade_tokens_keeps_a_text_without_words_and_rejects_bad_maps():
    tokens = _tokens([], [31, 32])
    out = degrade_tokens(tokens, [np.array([1.0, 2.0]), np.array([0.0, 1.0, 0.5, 0.0])], 0.1)
    assert out[0].tolist() == tokens[0].tolist() and out[1].tolist() == [SOT, 0, 32, EOT, 0, 0, 0, 0, 0, 0]
    with pytest.raises(MapError, match="text 1 has 3 scores, expected 4"):
        degrade_tokens(tokens, [np.zeros(2), np.zeros(3)], 0.1)
    with pytest.raises(MapError, match="text 1 is not finite"):
        degrade_tokens(tokens, [np.zeros(2), np.array([0.0, np.nan, 1.0, 0.0])], 0.1)
    with pytest.raises(MapError, match="2 texts but 1 token maps"):
        degrade_tokens(tokens, [np.zeros(2)], 0.1)
    with pytest.raises(MapError, match="fraction"):
        degrade_tokens(tokens, [np.zeros(2), np.zeros(4)], 0.0)


def test_random_token_maps_are_seeded_with_one_score_per_real_token():
    tokens = _tokens([1, 2, 3], [4])
    a, b, c = (random_token_maps(tokens, s) for s in (5, 5, 6))
    assert [len(m) for m in a] == [5, 3]
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and not np.array_equal(a[0], c[0])


def test_summarise_roar_per_modality_against_the_shared_clean_run():
    runs = pd.DataFrame(
        {
            "variant": ["clean", "clean", "m", "m", "m", "m", "random", "random"],
            "modality": ["both", "both", "image", "image", "text", "text", "text", "text"],
            "seed": [0, 1, 0, 1, 0, 1, 0, 1],
            "val_loss": [1.0, 2.0, 1.5, 2.0, 1.2, 2.4, 1.0, 2.2],
        }
    )
    s = summarise_roar(runs).set_index(["modality", "method"])
    assert sorted(s.index) == [("image", "m"), ("text", "m"), ("text", "random")]
    assert math.isclose(s.at[("image", "m"), "roar_plus_mean"], 25.0)
    assert math.isclose(s.at[("text", "m"), "roar_plus_mean"], 20.0) and math.isclose(
        s.at[("text", "m"), "roar_plus_sd"], 0.0
    )
    assert math.isclose(s.at[("text", "random"), "roar_plus_mean"], 5.0)
    # runs without a modality column (written before text ROAR+) are image runs
    legacy = summarise_roar(runs[runs["modality"] != "text"].drop(columns="modality"))
    assert legacy["modality"].tolist() == ["image"]
    with pytest.raises(ValueError, match=r"no clean run for seed\(s\) \[1\]"):
        summarise_roar(runs.drop(index=1))


def test_roar_table_has_image_and_text_columns_in_paper_order():
    from matex.metrics.aggregate import with_roar

    table = pd.DataFrame(
        {
            "Img conf. drop ↓": ["1", "2"],
            "Img conf. incr. ↑": ["3", "4"],
            "Txt conf. drop ↓": ["5", "–"],
            "Txt conf. incr. ↑": ["6", "–"],
            "Pointing ↑": ["7", "8"],
        },
        index=["matex", "gradcam"],
    )
    roar = pd.DataFrame(
        {
            "modality": ["image", "image", "text"],
            "method": ["matex", "gradcam", "matex"],
            "roar_plus_mean": [1.0, 2.0, 3.0],
            "roar_plus_sd": [0.5, 0.25, float("nan")],
            "n_seeds": [2, 2, 1],
        }
    )
    out = with_roar(table, roar)
    assert list(out.columns) == [
        "Img conf. drop ↓",
        "Img conf. incr. ↑",
        "Img ROAR+ ↑",
        "Txt conf. drop ↓",
        "Txt conf. incr. ↑",
        "Txt ROAR+ ↑",
        "Pointing ↑",
    ]
    assert out["Img ROAR+ ↑"].tolist() == ["1.00 ± 0.50", "2.00 ± 0.25"]
    assert out["Txt ROAR+ ↑"].tolist() == ["3.00", "–"]


def test_train_clip_on_tokens_equals_train_clip_on_the_strings(make_tiny_model):
    from test_train import blob_pairs

    tiny_model = _tiny(make_tiny_model)

    from matex.models.train import train_clip

    images, texts = blob_pairs(24, 4)
    runs = []
    for given in (texts, tiny_model().tokenizer(texts)):
        model = tiny_model()
        history = train_clip(
            model,
            images,
            given,
            epochs=2,
            batch_size=8,
            lr=1e-3,
            weight_decay=0.01,
            warmup_steps=1,
            seed=3,
            progress=False,
        )
        runs.append(
            ([row["train_loss"] for row in history], torch.cat([p.detach().flatten() for p in model.clip.parameters()]))
        )
    assert runs[0][0] == runs[1][0] and torch.equal(runs[0][1], runs[1][1])


def test_text_roar_run_degrades_the_texts_only_and_records_modality(monkeypatch, make_tiny_model):
    """A text run trains on the untouched images and the degraded tokens (spied on train_clip) and
    says so in its record; the clean run is labelled as shared by both sides."""
    from test_train import blob_pairs

    tiny_model = _tiny(make_tiny_model)

    import matex.models.train as train
    from matex.roar.finetune import roar_run

    images, texts = blob_pairs(32, 5)
    pairs = pd.DataFrame({"phrase": texts})
    train_rows, val_rows = np.arange(24), np.arange(24, 32)
    cfg = {"top_fraction": 0.5, "epochs": 1, "lr": 1e-3, "batch_size": 8}
    seen = []
    real = train.train_clip
    monkeypatch.setattr(
        train, "train_clip", lambda m, imgs, txt, **kw: seen.append((imgs, txt)) or real(m, imgs, txt, **kw)
    )
    tokens = tiny_model().tokenizer([texts[i] for i in train_rows])
    maps = [np.r_[0.0, 1.0, 0.0, 0.0] for _ in train_rows]  # "left upper": always drop the side word
    runs = [
        roar_run(
            tiny_model(), pairs, images, train_rows, val_rows, variant, m, cfg, 0, progress=False, modality=modality
        )
        for variant, m, modality in [("clean", None, "image"), ("matex", maps, "text"), ("random", None, "text")]
    ]
    assert [r["modality"] for r in runs] == ["both", "text", "text"]
    assert [r["removed_fraction"] for r in runs] == [0.0, 0.5, 0.5]
    assert all(np.array_equal(imgs, images[train_rows]) for imgs, _ in seen)
    assert seen[0][1] == [texts[i] for i in train_rows]
    assert torch.equal(seen[1][1], degrade_tokens(tokens, maps, 0.5))
    assert (seen[1][1][:, 1] == 0).all() and (seen[1][1][:, 2] == tokens[:, 2]).all()
    assert torch.equal(seen[2][1], degrade_tokens(tokens, random_token_maps(tokens, 0), 0.5))
    assert len({r["val_loss"] for r in runs}) == 3
    with pytest.raises(ValueError, match="need one token map per training pair"):
        roar_run(
            tiny_model(),
            pairs,
            images,
            train_rows,
            val_rows,
            "matex",
            maps[:3],
            cfg,
            0,
            progress=False,
            modality="text",
        )
    with pytest.raises(ValueError, match="modality"):
        roar_run(tiny_model(), pairs, images, train_rows, val_rows, "clean", None, cfg, 0, modality="audio")


def test_text_roar_step_names_a_method_without_token_maps(tmp_path):
    """roar.text_methods listing a method with no text side fails with the method and the key."""
    from types import SimpleNamespace

    from matex.io import write_npz
    from matex.pipeline.roar import roar_finetune_text

    pairs = pd.DataFrame(
        {"pair_id": ["a", "b", "c"], "phrase": ["x y", "y z", "z"], "split": ["train", "train", "val"]}
    )
    pairs.to_parquet(tmp_path / "pairs.parquet")
    np.save(tmp_path / "images.npy", np.zeros((3, 8, 8), np.uint8))
    write_npz(tmp_path / "gradcam.npz", {"a": np.zeros((8, 8), np.float32), "b": np.zeros((8, 8), np.float32)}, {})
    inp = SimpleNamespace(
        pairs=str(tmp_path / "pairs.parquet"), images=str(tmp_path / "images.npy"), npz=str(tmp_path / "gradcam.npz")
    )
    with pytest.raises(ConfigError, match=r"roar\.text_methods.*'gradcam'"):
        roar_finetune_text(
            {"roar": {"train_pairs": None}},
            inp,
            SimpleNamespace(json=str(tmp_path / "o.json")),
            None,
            SimpleNamespace(variant="gradcam", seed="0"),
            1,
        )


def test_load_token_maps_in_pair_order_none_without_text_side(tmp_path):
    from matex.io import write_npz
    from matex.maps.store import load_token_maps

    image = np.zeros((4, 4), np.float32)
    write_npz(
        tmp_path / "m.npz",
        {"a": image, "b": image, "text/a": np.array([0.0, 1.0, 0.5]), "text/b": np.array([1.0, 0.0])},
        {},
    )
    got = load_token_maps(tmp_path / "m.npz", ["b", "a"])
    assert [m.tolist() for m in got] == [[1.0, 0.0], [0.0, 1.0, 0.5]] and got[0].dtype == np.float32
    with pytest.raises(MapError, match=r"no token map for pairs \['c'\]"):
        load_token_maps(tmp_path / "m.npz", ["a", "c"])
    write_npz(tmp_path / "image_only.npz", {"a": image}, {})
    assert load_token_maps(tmp_path / "image_only.npz", ["a"]) is None


def test_roar_run_record_keeps_its_fine_tuning_seed(tmp_path, monkeypatch):
    """The run JSON's "seed" pairs it with the clean run of that seed: the config's own seed (the
    artifact metadata's "seed") must not overwrite it (it did once, which paired every run with
    every clean run)."""
    import json
    from types import SimpleNamespace

    import matex.pipeline.roar as pipeline
    import matex.roar.finetune as finetune

    pairs = pd.DataFrame(
        {"pair_id": ["a", "b", "c"], "phrase": ["x y", "y z", "z"], "split": ["train", "train", "val"]}
    )
    pairs.to_parquet(tmp_path / "pairs.parquet")
    np.save(tmp_path / "images.npy", np.zeros((3, 8, 8), np.uint8))
    monkeypatch.setattr(pipeline, "load_configured_model", lambda *a, **k: None)
    monkeypatch.setattr(pipeline, "base_meta", lambda cfg, *s: {"config_hash": "h", "seed": 0, "matex_version": "v"})
    monkeypatch.setattr(finetune, "roar_run", lambda *a, **k: {"variant": "clean", "seed": a[8], "val_loss": 1.0})
    out = tmp_path / "clean.seed3.json"
    pipeline.roar_finetune(
        {"seed": 0, "roar": {"train_pairs": None}, "attribution": {"device": "cpu"}},
        SimpleNamespace(pairs=str(tmp_path / "pairs.parquet"), images=str(tmp_path / "images.npy")),
        SimpleNamespace(json=str(out)),
        None,
        SimpleNamespace(variant="clean", seed="3"),
        1,
    )
    record = json.loads(out.read_text())
    assert record["seed"] == 3 and record["config_seed"] == 0 and record["config_hash"] == "h"


def test_summarise_roar_refuses_runs_that_share_a_seed():
    runs = pd.DataFrame(
        {"variant": ["clean", "clean", "m", "m"], "seed": [0, 0, 0, 0], "val_loss": [1.0, 2.0, 1.5, 2.0]}
    )
    with pytest.raises(ValueError, match="more than one run per"):
        summarise_roar(runs)


def test_roar_table_leaves_out_a_side_that_was_not_run():
    """The demo runs no text ROAR+ (empty roar.text_methods): no all-dash Txt ROAR+ column, and the
    note says the text side was not run."""
    from matex.metrics.aggregate import with_roar
    from matex.pipeline.evaluation import _roar_plus_note

    table = pd.DataFrame({"Img conf. drop ↓": ["1"], "Txt conf. drop ↓": ["5"]}, index=["matex"])
    roar = pd.DataFrame(
        {"modality": ["image"], "method": ["matex"], "roar_plus_mean": [1.0], "roar_plus_sd": [0.5], "n_seeds": [2]}
    )
    assert list(with_roar(table, roar).columns) == ["Img conf. drop ↓", "Img ROAR+ ↑", "Txt conf. drop ↓"]
    cfg = {"roar": {"seeds": [0], "top_fraction": 0.1, "text_methods": []}}
    assert "Text ROAR+ was not run" in _roar_plus_note(cfg, "grey")
    cfg["roar"]["text_methods"] = ["matex"]
    note = _roar_plus_note(cfg, "grey")
    assert "not run" not in note and "top word tokens removed" in note
