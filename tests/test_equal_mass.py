"""Equal-mass confidence metrics (rank-normalised map, fixed top-k %): a strictly increasing
transform of a map leaves them unchanged, while M2IB's contrast-sensitive protocol moves; and
evaluate_maps writes every new column (grounding, box recall, tolerant pointing game)."""

import numpy as np
import open_clip
import pandas as pd
import pytest
import torch

from matex.data.transforms import InputGeometry
from matex.errors import MapError
from matex.io import write_npz
from matex.metrics.equal_mass import (
    equal_mass_confidence,
    equal_mass_similarity,
    fraction_label,
    rank_normalise,
    top_fraction_keep,
)
from matex.metrics.faithfulness import confidence_scores, image_confidence
from matex.models.base import MatexModel

SIZE = 56


def tiny_model() -> MatexModel:
    torch.manual_seed(0)
    clip = open_clip.CLIP(
        embed_dim=32,
        vision_cfg={"image_size": SIZE, "patch_size": 8, "width": 32, "layers": 2, "head_width": 16},
        text_cfg={"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    ).eval()
    return MatexModel(clip, open_clip.tokenizer.SimpleTokenizer(context_length=16), InputGeometry(SIZE))


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def batch(model):
    rng = np.random.default_rng(0)
    images = model.preprocess(rng.integers(0, 255, size=(3, SIZE, SIZE), dtype=np.uint8))
    tokens = model.tokenize(["left basal opacity", "enlarged heart", "right effusion"])
    # smooth maps with distinct values (a coarse grid upsampled bilinearly, plus a small ramp)
    coarse = torch.from_numpy(rng.random((3, 1, 7, 7)))
    maps = torch.nn.functional.interpolate(coarse, size=(SIZE, SIZE), mode="bilinear", align_corners=False)[:, 0]
    maps = maps.numpy() + 1e-6 * np.arange(SIZE * SIZE).reshape(SIZE, SIZE)
    maps = (maps - maps.min()) / (maps.max() - maps.min())
    return images, tokens, maps


def test_rank_normalise_depends_only_on_order_and_averages_ties():
    m = np.array([[[0.2, 0.9], [0.2, 0.5]]])
    np.testing.assert_allclose(rank_normalise(m)[0], [[1 / 6, 1.0], [1 / 6, 2 / 3]], rtol=1e-6)  # ranks 1.5, 4, 1.5, 3
    assert np.array_equal(rank_normalise(m), rank_normalise(np.exp(5 * m) - 3))
    assert np.all(rank_normalise(np.full((1, 4, 4), 0.3)) == 0.5)  # a constant map: one tie, mid-rank


def test_top_fraction_keep_has_exactly_k_pixels_and_ignores_monotone_transforms():
    rng = np.random.default_rng(1)
    maps = rng.random((2, 20, 20))
    keep = top_fraction_keep(maps, [0.05, 0.5], seeds=[3, 4])
    assert keep.shape == (2, 2, 20, 20)
    assert keep.sum(axis=(2, 3)).tolist() == [[20, 20], [200, 200]]
    assert np.array_equal(keep, top_fraction_keep(maps**0.25, [0.05, 0.5], seeds=[3, 4]))
    const = top_fraction_keep(np.zeros((1, 20, 20)), [0.05], seeds=[0])[0, 0]
    assert const.sum() == 20 and not const[0].all()  # ties by a seeded random order, not the first row
    assert [fraction_label(f) for f in (0.05, 0.1, 0.25, 0.5, 0.125)] == ["top5", "top10", "top25", "top50", "top12.5"]


def test_monotone_transforms_leave_equal_mass_metrics_unchanged_but_move_m2ib(model, batch):
    images, tokens, maps = batch
    s, s_m2ib = image_confidence(model, images, tokens, torch.from_numpy(maps))
    seeds = [11, 12, 13]
    base = equal_mass_similarity(model, images, tokens, maps, seeds)
    assert sorted(base) == ["rank", "top10", "top25", "top5", "top50"]
    assert np.ptp(np.stack(list(base.values())), axis=0).min() > 1e-3  # the variants differ from each other
    transforms = {"power 0.25": maps**0.25, "exp": np.exp(maps), "affine": 3.0 * maps + 0.5}
    for name, transformed in transforms.items():
        got = equal_mass_similarity(model, images, tokens, transformed, seeds)
        for variant, values in base.items():
            np.testing.assert_allclose(got[variant], values, rtol=0, atol=1e-7, err_msg=f"{name}: {variant}")
        _, s_transformed = image_confidence(model, images, tokens, torch.from_numpy(transformed))
        # M2IB's protocol multiplies by the map itself: the same order with another contrast moves it
        assert np.abs(s_transformed - s_m2ib).max() > 1e-3, name
    # the drop / increase columns are functions of these s' and the untouched s
    scores = equal_mass_confidence(model, images, tokens, maps, s, seeds)
    assert sorted(scores) == sorted(
        f"img_conf_{kind}_{name}"
        for kind in ("drop", "increase")
        for name in ("rank", "top5", "top10", "top25", "top50")
    )
    np.testing.assert_array_equal(scores["img_conf_drop_top25"], confidence_scores(s, base["top25"])["drop"])
    np.testing.assert_array_equal(scores["img_conf_increase_rank"], confidence_scores(s, base["rank"])["increase"])
    # keeping every pixel keeps the image: s' = s
    full = equal_mass_similarity(model, images, tokens, maps, seeds, fractions=[1.0], rank=False)
    np.testing.assert_allclose(full["top100"], s, atol=1e-6)


def test_equal_mass_rejects_repeated_fractions(model, batch):
    images, tokens, maps = batch
    with pytest.raises(MapError, match="top_fractions"):
        equal_mass_confidence(model, images, tokens, maps, np.zeros(3), [0, 1, 2], fractions=[0.1, 0.10])


def test_evaluate_maps_writes_the_new_columns(model, tmp_path):
    from matex.metrics.evaluate import evaluate_maps

    pairs = pd.DataFrame(
        {
            "pair_id": ["two", "one"],
            "category": ["Pleural Effusion", "Pneumonia"],
            "phrase": ["bilateral effusions", "left lower opacity"],
            "boxes": [[(2.0, 36.0, 20.0, 54.0), (36.0, 36.0, 54.0, 54.0)], [(2.0, 36.0, 20.0, 54.0)]],
        }
    )
    y, x = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    left = np.exp(-((y - 45) ** 2 + (x - 11) ** 2) / 18.0).astype(np.float32)  # on the left box only
    write_npz(tmp_path / "m.npz", {"two": left, "one": left}, {"method": "m"})
    images = np.random.default_rng(0).integers(0, 255, size=(2, SIZE, SIZE), dtype=np.uint8)
    cfg = {
        "evaluation": {
            "localisation": {"top_fraction": 0.05, "pointing_tolerance": 15, "peak_radius": 0.1},
            "confidence": {"top_fractions": [0.05, 0.25], "rank_normalised": True},
            "deletion": {"steps": 2},
        }
    }
    table = evaluate_maps(model, "m", pairs, images, tmp_path / "m.npz", cfg, progress=False).set_index("pair_id")
    for column in ("cnr", "miou", "box_recall", "pointing_game_tol15", "img_conf_drop_rank", "img_conf_increase_top25"):
        assert column in table.columns
    assert "img_conf_drop_top10" not in table.columns  # the demo's subset of fractions
    assert table.loc["two", "box_recall"] == 0.5 and table.loc["one", "box_recall"] == 1.0
    assert table.loc["two", "pointing_game"] == 1.0  # the union of boxes cannot tell
    assert table["cnr"].gt(0).all() and table["miou"].between(0, 1).all()
