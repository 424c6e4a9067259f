"""Deletion / insertion AUC (Petsiuk et al. 2018) and grey-scale masking: a model whose evidence
sits in a known region, so the right map, its inverse, random maps and a constant map can be
told apart; tie order, end points, the trapezoid rule and the substrate's colour."""

import numpy as np
import pytest
import torch

from matex.data.transforms import CLIP_MEAN, CLIP_STD
from matex.errors import MapError
from matex.metrics.faithfulness import (
    causal_curves,
    curve_auc,
    deletion_auc,
    fill_images,
    gaussian_blur,
    grey_fill,
    image_confidence,
    insertion_auc,
    masked_input,
    removal_rank,
)

SIZE = 32
REGION = (slice(0, 8), slice(4, 20))  # top rows: a row-major tie order would remove it first


class RegionModel:
    """Scores an image by the mean grey value inside REGION: the only evidence it uses."""

    mean, std, device = CLIP_MEAN, CLIP_STD, torch.device("cpu")

    def similarity(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        m = torch.tensor(self.mean).view(1, 3, 1, 1)
        s = torch.tensor(self.std).view(1, 3, 1, 1)
        grey = (images * s + m).mean(1)
        return grey[:, REGION[0], REGION[1]].mean((-2, -1))


def region_mask() -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[REGION] = True
    return mask


@pytest.fixture(scope="module")
def scene():
    """Four dark noisy images with a bright block inside REGION, CLIP-normalised."""
    rng = np.random.default_rng(0)
    grey = 0.2 + 0.1 * rng.random((4, SIZE, SIZE))
    grey[:, REGION[0], REGION[1]] = 0.9
    x = torch.tensor(grey, dtype=torch.float32)[:, None].expand(-1, 3, -1, -1)
    images = (x - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return images, torch.zeros(4, 5, dtype=torch.long)


def aucs(images, tokens, maps, seeds=(0, 1, 2, 3), **options):
    curves = causal_curves(RegionModel(), images, tokens, maps, list(seeds), steps=16, batch_size=20, **options)
    return curve_auc(curves["deletion"]), curve_auc(curves["insertion"])


@pytest.mark.parametrize("fill", ["blur", "grey"])
def test_region_map_beats_random_and_its_inverse(scene, fill):
    images, tokens = scene
    good = np.broadcast_to(region_mask(), (4, SIZE, SIZE)).astype(np.float32)
    del_good, ins_good = aucs(images, tokens, good, fill=fill, blur_sigma=2.0)
    del_inv, ins_inv = aucs(images, tokens, 1.0 - good, fill=fill, blur_sigma=2.0)
    rand = np.random.default_rng(1).random((4, SIZE, SIZE))
    del_rand, ins_rand = aucs(images, tokens, rand, fill=fill, blur_sigma=2.0)
    assert np.all(del_good < del_rand) and np.all(del_rand < del_inv)
    assert np.all(ins_good > ins_rand) and np.all(ins_rand > ins_inv)
    # the public per-metric functions agree with the shared curves
    assert np.allclose(
        deletion_auc(RegionModel(), images, tokens, good, [0, 1, 2, 3], steps=16, fill=fill, blur_sigma=2.0), del_good
    )
    assert np.allclose(
        insertion_auc(RegionModel(), images, tokens, good, [0, 1, 2, 3], steps=16, fill=fill, blur_sigma=2.0), ins_good
    )


def test_constant_map_scores_the_random_order_expectation(scene):
    images, tokens = scene
    one = (images[:1], tokens[:1])
    rng = np.random.default_rng(2)
    random_del = np.array([aucs(*one, rng.random((1, SIZE, SIZE)), seeds=[0])[0][0] for _ in range(30)])
    constant = np.full((1, SIZE, SIZE), 0.5)
    for seed in range(3):
        const_del = aucs(*one, constant, seeds=[seed])[0][0]
        # one random order, so it lies within the spread of the random maps' AUCs
        assert abs(const_del - random_del.mean()) < 3 * random_del.std()
    # a row-major tie order would delete REGION (the top rows) first and score far below random
    row_major = -np.arange(SIZE * SIZE, dtype=float).reshape(1, SIZE, SIZE)
    assert aucs(*one, row_major, seeds=[0])[0][0] < random_del.mean() - 3 * random_del.std()


def test_ties_are_broken_by_a_seeded_random_order_not_row_major():
    maps = np.zeros((2, 6, 6))
    maps[:, 2, 3] = 1.0
    rank = removal_rank(maps, [7, 8])
    assert rank[0, 2 * 6 + 3] == 0 and rank[1, 2 * 6 + 3] == 0  # the maximum comes first
    assert sorted(rank[0]) == list(range(36))
    assert not np.array_equal(rank[0], rank[1])  # seeds differ -> orders differ
    assert np.array_equal(removal_rank(maps[:1], [7]), rank[:1])  # same seed -> same order
    tied = np.delete(rank[0], 2 * 6 + 3)
    assert not np.all(np.diff(tied) > 0)  # the tied pixels are not row-major
    with pytest.raises(MapError, match="not finite"):
        removal_rank(np.full((1, 2, 2), np.nan), [0])


def test_curve_end_points_and_trapezoid_rule(scene):
    images, tokens = scene
    model = RegionModel()
    maps = np.random.default_rng(3).random((4, SIZE, SIZE))
    curves = causal_curves(model, images, tokens, maps, [0, 1, 2, 3], steps=4, fill="blur", blur_sigma=2.0)
    s = model.similarity(images, tokens).double().numpy()
    s_fill = model.similarity(fill_images(model, images, "blur", 2.0), tokens).double().numpy()
    assert curves["deletion"].shape == (4, 5)
    assert np.allclose(curves["deletion"][:, 0], s) and np.allclose(curves["deletion"][:, -1], s_fill)
    assert np.allclose(curves["insertion"][:, 0], s_fill) and np.allclose(curves["insertion"][:, -1], s)
    # hand values: points 0, 1, 1 at fractions 0, 1/2, 1 -> 0.25 + 0.5; and numpy's trapezoid
    assert curve_auc(np.array([[0.0, 1.0, 1.0]]))[0] == pytest.approx(0.75)
    row = np.array([0.3, 0.1, 0.7, 0.2, 0.4])
    assert curve_auc(row[None])[0] == pytest.approx(np.trapezoid(row, np.linspace(0, 1, 5)))
    with pytest.raises(MapError, match="steps"):
        causal_curves(model, images, tokens, maps, [0, 1, 2, 3], steps=0)


def test_substrates_and_confidence_masking_are_grey_scale():
    """A colour image (channels differ) still gets a grey substrate: equal channels before normalisation."""
    gen = torch.Generator().manual_seed(4)
    images = torch.randn(2, 3, SIZE, SIZE, generator=gen)
    model = RegionModel()
    m = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    s = torch.tensor(CLIP_STD).view(1, 3, 1, 1)

    def pixels(x):
        return x * s + m

    for fill in ("blur", "grey"):
        sub = pixels(fill_images(model, images, fill, blur_sigma=2.0))
        assert torch.allclose(sub[:, 0], sub[:, 1], atol=1e-5) and torch.allclose(sub[:, 1], sub[:, 2], atol=1e-5)
    grey = pixels(fill_images(model, images, "grey", grey_level=0.3))
    assert torch.allclose(grey, torch.full_like(grey, 0.3), atol=1e-5)
    # confidence masking: a removed pixel becomes grey; M2IB's x * map would give the CLIP mean colour
    removed = pixels(masked_input(images, torch.zeros(2, SIZE, SIZE), "full", grey_fill(model)))
    assert torch.allclose(removed, torch.full_like(removed, float(np.mean(CLIP_MEAN))), atol=1e-5)
    cast = pixels(masked_input(images, torch.zeros(2, SIZE, SIZE), "full"))
    assert not torch.allclose(cast[:, 0], cast[:, 2], atol=1e-2)  # the colour cast grey_fill avoids
    with pytest.raises(MapError, match="fill"):
        fill_images(model, images, "noise")


def test_image_confidence_masks_towards_grey(scene):
    images, tokens = scene
    model = RegionModel()
    s, s_zero = image_confidence(model, images, tokens, np.zeros((4, SIZE, SIZE), np.float32))
    assert np.allclose(s_zero, np.mean(CLIP_MEAN), atol=1e-5)  # REGION's mean grey = the fill level
    assert np.allclose(s, 0.9, atol=1e-5)


def test_gaussian_blur_keeps_constants_and_smooths_an_impulse():
    flat = torch.full((1, 9, 9), 0.4)
    assert torch.allclose(gaussian_blur(flat, 1.5), flat)
    impulse = torch.zeros(1, 15, 15)
    impulse[0, 7, 7] = 1.0
    out = gaussian_blur(impulse, 1.0)
    assert out.sum().item() == pytest.approx(1.0, abs=1e-4) and out[0, 7, 7] < 0.2
    assert out[0, 7, 6] == pytest.approx(out[0, 6, 7]) and out[0, 7, 6] > out[0, 7, 5]


def test_evaluate_maps_reports_deletion_and_insertion_auc(tmp_path):
    """The per-pair table has both columns, equal to the AUCs of causal_curves with the configured
    options and each pair's own tie seed; the grey fill defaults to the dataset's mean intensity."""
    import open_clip
    import pandas as pd

    from matex.data.transforms import InputGeometry
    from matex.io import write_npz
    from matex.metrics.evaluate import deletion_options, evaluate_maps
    from matex.metrics.faithfulness import pair_seed
    from matex.models.base import MatexModel

    size = 56
    torch.manual_seed(0)
    clip = open_clip.CLIP(
        embed_dim=32,
        vision_cfg={"image_size": size, "patch_size": 8, "width": 32, "layers": 2, "head_width": 16},
        text_cfg={"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    ).eval()
    model = MatexModel(clip, open_clip.tokenizer.SimpleTokenizer(context_length=16), InputGeometry(size))
    rng = np.random.default_rng(5)
    images_u8 = rng.integers(0, 256, (3, size, size), dtype=np.uint8)
    pairs = pd.DataFrame(
        {
            "pair_id": ["a", "b", "c"],
            "category": ["x", "y", "x"],
            "phrase": ["left effusion", "cardiomegaly", "opacity"],
            "boxes": [[[2.0, 2.0, 20.0, 20.0]], [[10.0, 10.0, 40.0, 30.0]], [[0.0, 30.0, 56.0, 56.0]]],
        }
    )
    maps = {p: rng.random((size, size)).astype(np.float32) for p in ("a", "c")}
    npz = tmp_path / "maps.npz"
    write_npz(npz, maps, {})
    cfg = {"seed": 3, "evaluation": {"deletion": {"steps": 4, "fill": "grey", "grey_level": None}}}
    df = evaluate_maps(model, "m", pairs, images_u8, npz, cfg, batch_size=2, progress=False)
    options = deletion_options(cfg["evaluation"]["deletion"], images_u8)
    assert options["grey_level"] == pytest.approx(images_u8.mean() / 255.0)
    x = model.preprocess(images_u8[[0, 2]])
    tokens = model.tokenize(["left effusion", "opacity"])
    curves = causal_curves(
        model, x, tokens, np.stack([maps["a"], maps["c"]]), [pair_seed(3, "a"), pair_seed(3, "c")], **options
    )
    assert df["pair_id"].tolist() == ["a", "c"]
    assert np.allclose(df["deletion_auc"], curve_auc(curves["deletion"]), atol=1e-6)
    assert np.allclose(df["insertion_auc"], curve_auc(curves["insertion"]), atol=1e-6)
    # the cached-text-feature scorer gives the same curves as the model's own similarity
    from types import SimpleNamespace

    plain = SimpleNamespace(mean=model.mean, std=model.std, device=model.device, similarity=model.similarity)
    again = causal_curves(
        plain, x, tokens, np.stack([maps["a"], maps["c"]]), [pair_seed(3, "a"), pair_seed(3, "c")], **options
    )
    assert np.allclose(again["deletion"], curves["deletion"], atol=1e-5)
    assert np.allclose(again["insertion"], curves["insertion"], atol=1e-5)


def test_on_a_tiny_clip_the_occlusion_map_beats_random_and_its_inverse():
    """A real (random-init) open_clip CLIP: the map of how much s drops when each 8x8 patch is
    replaced by the substrate marks what this model uses; it beats random maps and its inverse."""
    import open_clip

    from matex.data.transforms import InputGeometry
    from matex.models.base import MatexModel

    size = 56
    torch.manual_seed(0)
    clip = open_clip.CLIP(
        embed_dim=32,
        vision_cfg={"image_size": size, "patch_size": 8, "width": 32, "layers": 3, "head_width": 16},
        text_cfg={"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    ).eval()
    model = MatexModel(clip, open_clip.tokenizer.SimpleTokenizer(context_length=16), InputGeometry(size))
    rng = np.random.default_rng(0)
    x = model.preprocess(rng.integers(0, 256, (4, size, size), dtype=np.uint8))
    tokens = model.tokenize(["left effusion", "cardiomegaly", "opacity", "edema"])
    substrate = fill_images(model, x, "blur", 2.0)
    s = model.similarity(x, tokens)
    occlusion = np.zeros((4, 7, 7))
    for i in range(7):
        for j in range(7):
            patch = (slice(None), slice(None), slice(8 * i, 8 * i + 8), slice(8 * j, 8 * j + 8))
            occluded = x.clone()
            occluded[patch] = substrate[patch]
            occlusion[:, i, j] = (s - model.similarity(occluded, tokens)).numpy()
    good = np.kron(occlusion, np.ones((8, 8)))

    def both(maps):
        curves = causal_curves(model, x, tokens, maps, [0, 1, 2, 3], steps=16, fill="blur", blur_sigma=2.0)
        return curve_auc(curves["deletion"]), curve_auc(curves["insertion"])

    del_good, ins_good = both(good)
    del_inv, ins_inv = both(-good)
    del_rand, ins_rand = both(rng.random((4, size, size)))
    assert np.all(del_good < del_rand) and np.all(del_rand < del_inv)
    assert np.all(ins_good > ins_rand) and np.all(ins_rand > ins_inv)
