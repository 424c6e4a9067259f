"""ROAD (Rong et al., ICML 2022): noisy linear imputation leaves no visible hole, and the MoRF/LeRF
metric separates a map of the right place from a constant map and a map of the wrong place."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import sparse
from scipy.sparse.linalg import spsolve

from matex.errors import ConfigError
from matex.roar.imputation import FillSpec, linear_imputation, noisy_linear_imputation


def _reference_solution(img: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Equation (1) built pixel by pixel (a loop, independent of the vectorised solver) and solved
    directly: each removed pixel = weighted mean of its in-image neighbours (1/6 edge, 1/12 diagonal)."""
    h, w = img.shape
    ids = -np.ones((h, w), dtype=int)
    ys, xs = np.nonzero(removed)
    ids[ys, xs] = np.arange(len(ys))
    a = sparse.lil_matrix((len(ys), len(ys)))
    b = np.zeros(len(ys))
    for n, (y, x) in enumerate(zip(ys, xs)):
        total = 0.0
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if (dy, dx) == (0, 0) or not (0 <= y + dy < h and 0 <= x + dx < w):
                    continue
                wt = 1 / 12 if dy and dx else 1 / 6
                total += wt
                if removed[y + dy, x + dx]:
                    a[n, ids[y + dy, x + dx]] -= wt
                else:
                    b[n] += wt * img[y + dy, x + dx]
        a[n, n] = total
    out = img.astype(np.float64).copy()
    out[ys, xs] = spsolve(a.tocsc(), b)
    return out


def _blob(size: int, cy: float, cx: float, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2


def test_linear_imputation_solves_roads_system_including_image_borders():
    rng = np.random.default_rng(0)
    img = rng.random((2, 32, 32))
    removed = np.stack([_blob(32, 10, 12, 7) | _blob(32, 0, 31, 5), rng.random((32, 32)) < 0.6])
    out = linear_imputation(torch.tensor(img, dtype=torch.float32), torch.from_numpy(removed)).numpy()
    for i in range(2):
        ref = _reference_solution(img[i], removed[i])
        assert np.abs(out[i] - ref).max() < 2e-3  # 0.5 grey level on 0..255
        assert np.array_equal(out[i][~removed[i]], img[i][~removed[i]].astype(np.float32))


def test_imputation_continues_a_gradient_across_the_hole():
    """A plane is its own neighbours' weighted mean (symmetric weights), so the hole is invisible."""
    yy, xx = np.mgrid[:64, :64]
    plane = 30.0 + 2.0 * xx + 1.0 * yy
    img = np.round(plane).astype(np.uint8)[None]
    hole = _blob(64, 30, 22, 12)[None]
    out = noisy_linear_imputation(img, hole, seed=0, noise=0.0)
    assert np.abs(out[0][hole[0]].astype(float) - plane[hole[0]]).max() <= 1.0
    grey = FillSpec(kind="grey").apply(img, hole, seed=0)
    assert np.abs(grey[0][hole[0]].astype(float) - plane[hole[0]]).max() > 20  # a grey patch is visible


def _inside_vs_ring(filled: np.ndarray, plane: np.ndarray, hole: np.ndarray) -> tuple[float, float, int, int]:
    """Mean and variance ratio of the detrended values inside the hole vs a 4-pixel ring around it."""
    from scipy import ndimage

    ring = ndimage.binary_dilation(hole, iterations=4) & ~hole
    inside, around = filled[hole] - plane[hole], filled[ring] - plane[ring]
    return float(inside.mean() - around.mean()), float(inside.var() / around.var()), int(hole.sum()), int(ring.sum())


def test_imputed_pixels_match_the_surroundings_mean_and_local_variance_and_grey_does_not():
    """Image = plane + pixel noise of ROAD's std (0.01 of the range = 2.55 levels). The imputed hole
    must have the ring's mean (within 4 standard errors) and its variance (the noise is added back:
    the ratio within 4 standard errors of a variance ratio, sqrt(2/n_in + 2/n_ring), of 1, plus the
    small variance that the boundary noise leaves in the smooth solution, bounded by its own size)."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:96, :96]
    plane = 40.0 + 1.2 * xx + 0.6 * yy
    sigma = 0.01 * 255
    img = np.clip(np.round(plane + rng.normal(0, sigma, plane.shape)), 0, 255).astype(np.uint8)[None]
    hole = _blob(96, 60, 70, 16)[None]
    spec = FillSpec()
    filled = spec.apply(img, hole, seed=3)[0].astype(float)
    smooth = noisy_linear_imputation(img, hole, seed=3, noise=0.0)[0].astype(float)
    d_mean, ratio, n_in, n_ring = _inside_vs_ring(filled, plane, hole[0])
    se_mean = sigma * np.sqrt(1 / n_in + 1 / n_ring)
    se_ratio = np.sqrt(2 / n_in + 2 / n_ring)
    harmonic = float(np.var(smooth[hole[0]] - plane[hole[0]])) / sigma**2  # boundary noise carried inside

    def same_mean(d: float) -> bool:
        return abs(d) < 4 * se_mean + 0.5  # + half a level: uint8 rounding

    def same_variance(r: float) -> bool:  # + 1/12 level^2: uint8 rounding of the added noise
        return 1 - 4 * se_ratio < r < 1 + harmonic + 4 * se_ratio + 1 / (12 * sigma**2)

    assert same_mean(d_mean) and same_variance(ratio), (d_mean, ratio)
    # the same test fails a grey fill (a flat patch off the local trend) and the noiseless solution (no grain)
    grey = FillSpec(kind="grey").apply(img, hole, seed=3)[0].astype(float)
    g_mean, g_ratio, _, _ = _inside_vs_ring(grey, plane, hole[0])
    assert not same_mean(g_mean) and not same_variance(g_ratio)
    _, s_ratio, _, _ = _inside_vs_ring(smooth, plane, hole[0])
    assert not same_variance(s_ratio)


def test_noisy_imputation_is_seeded_and_keeps_the_other_pixels():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (3, 40, 40), dtype=np.uint8)
    removed = rng.random((3, 40, 40)) < 0.3
    a = noisy_linear_imputation(img, removed, seed=5)
    assert np.array_equal(a, noisy_linear_imputation(img, removed, seed=5))
    assert not np.array_equal(a, noisy_linear_imputation(img, removed, seed=6))
    assert np.array_equal(a[~removed], img[~removed]) and a.dtype == np.uint8
    everything = noisy_linear_imputation(img[:1], np.ones((1, 40, 40), bool), seed=0, noise=0.0)
    assert (everything == 128).all()  # no boundary values: mid-grey


def test_fill_spec_reads_the_config_and_names_a_bad_fill():
    spec = FillSpec.from_config({"fill": "blur", "blur_sigma": 2.0})
    assert spec.kind == "blur" and spec.blur_sigma == 2.0 and "blurred" in spec.describe()
    assert FillSpec.from_config({}).kind == "noisy_linear"
    with pytest.raises(ConfigError, match="roar.fill"):
        FillSpec.from_config({"fill": "mean"})
    with pytest.raises(ConfigError, match="roar.imputation_noise"):
        FillSpec.from_config({"imputation_noise": -1})


# --- the ROAD metric ---------------------------------------------------------------------------


class _BoxModel:
    """A model whose similarity is known to depend on one region only: the mean intensity inside the
    box ``R`` (rows 8..24, columns 30..46 of a 56 x 56 input), in [0, 1]."""

    region = (slice(8, 24), slice(30, 46))

    def preprocess(self, images_u8):
        return torch.as_tensor(np.asarray(images_u8), dtype=torch.float64) / 255.0

    def similarity(self, images, tokens):
        return images[:, self.region[0], self.region[1]].mean(dim=(1, 2))


def _box_film(n: int = 3, size: int = 56) -> np.ndarray:
    """Dark noisy background (mean 60), bright noisy box at the model's region (mean 200)."""
    rng = np.random.default_rng(0)
    films = rng.normal(60, 6, (n, size, size))
    films[:, 8:24, 30:46] = rng.normal(200, 6, (n, 16, 16))
    return films.clip(0, 255).astype(np.uint8)


def test_road_separates_the_right_place_from_a_constant_map_and_a_wrong_place():
    from matex.metrics.road import road_curves, road_gap, road_lerf, road_morf

    films = _box_film()
    right = np.zeros(films.shape, np.float32)
    right[:, 8:24, 30:46] = 1.0
    yy, xx = np.mgrid[:56, :56]
    # a graded map peaked at the opposite corner (as attribution maps are graded): the box is among
    # its least relevant pixels. (A binary map of the wrong place scores about 0, like a constant
    # one: its tied zeros go in a random scattered order, and scattered pixels are imputed back from
    # their neighbours.)
    wrong = np.broadcast_to(np.exp(-((yy - 42) ** 2 + (xx - 12) ** 2) / (2 * 10.0**2)), films.shape).astype(np.float32)
    constant = np.full(films.shape, 0.3, np.float32)
    seeds = [11, 12, 13]
    scores = {}
    for name, maps in (("right", right), ("constant", constant), ("wrong", wrong)):
        curves = road_curves(_BoxModel(), films, None, maps, [0.1, 0.5], seeds)
        scores[name] = (road_morf(curves), road_lerf(curves), road_gap(curves))
    morf, lerf, gap = scores["right"]
    assert (morf > 0.2).all() and (np.abs(lerf) < 0.02).all()  # the box's 140 levels go (0.55) vs nothing moves
    c_morf, c_lerf, c_gap = scores["constant"]
    np.testing.assert_array_equal(c_morf, c_lerf)  # the same pixels removed in both orders
    assert (c_gap == 0).all()
    assert (gap > 0.2).all() and (scores["wrong"][2] < -0.05).all()  # right > constant (0) > wrong place
    w_morf, w_lerf, _ = scores["wrong"]
    assert (np.abs(w_morf) < 0.02).all() and (w_lerf > lerf + 0.1).all()  # its "least relevant" pixels hold the box


def test_road_is_seeded_per_pair_and_refuses_bad_input():
    from matex.errors import MapError
    from matex.metrics.road import road_curves

    films = _box_film(2)
    maps = np.random.default_rng(1).random(films.shape)
    a = road_curves(_BoxModel(), films, None, maps, [0.3], [1, 2])
    b = road_curves(_BoxModel(), films[1:], None, maps[1:], [0.3], [2])  # pair 2 alone: same values
    np.testing.assert_allclose(a["morf"][1], b["morf"][0], atol=1e-3)
    with pytest.raises(MapError, match="equal"):
        road_curves(_BoxModel(), films, None, maps[:1], [0.3], [1, 2])
    with pytest.raises(MapError, match="fractions"):
        road_curves(_BoxModel(), films, None, maps, [], [1, 2])


def test_evaluate_maps_writes_road_columns_at_roars_k_values(tmp_path):
    """The per-pair table carries road_morf, road_lerf and road_gap, equal to road_columns with the
    config's k grid (roar.retrain.fractions) and each pair's own seed."""
    import open_clip
    import pandas as pd

    from matex.data.transforms import InputGeometry
    from matex.io import write_npz
    from matex.metrics.evaluate import evaluate_maps
    from matex.metrics.faithfulness import pair_seed
    from matex.metrics.road import road_columns
    from matex.models.base import MatexModel

    size = 56
    torch.manual_seed(0)
    clip = open_clip.CLIP(
        embed_dim=32,
        vision_cfg={"image_size": size, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
        text_cfg={"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    ).eval()
    model = MatexModel(clip, open_clip.tokenizer.SimpleTokenizer(context_length=16), InputGeometry(size))
    rng = np.random.default_rng(5)
    images_u8 = rng.integers(0, 256, (2, size, size), dtype=np.uint8)
    pairs = pd.DataFrame(
        {
            "pair_id": ["a", "b"],
            "category": ["x", "y"],
            "phrase": ["left effusion", "cardiomegaly"],
            "boxes": [[[2.0, 2.0, 20.0, 20.0]], [[10.0, 10.0, 40.0, 30.0]]],
        }
    )
    maps = {p: rng.random((size, size)).astype(np.float32) for p in ("a", "b")}
    write_npz(tmp_path / "maps.npz", maps, {})
    cfg = {"seed": 3, "evaluation": {"deletion": {"steps": 2}}, "roar": {"retrain": {"fractions": [0.5]}}}
    df = evaluate_maps(model, "m", pairs, images_u8, tmp_path / "maps.npz", cfg, batch_size=2, progress=False)
    want = road_columns(
        model,
        images_u8,
        model.tokenize(pairs["phrase"].tolist()),
        np.stack([maps["a"], maps["b"]]),
        [pair_seed(3, "a"), pair_seed(3, "b")],
        cfg,
    )
    for col in ("road_morf", "road_lerf", "road_gap"):
        np.testing.assert_allclose(df[col].to_numpy(), want[col], atol=1e-6)
    np.testing.assert_allclose(df["road_gap"], df["road_morf"] - df["road_lerf"], atol=1e-12)


def test_road_fraction_scores_the_same_hash_drawn_pairs_for_every_method():
    from matex.metrics.road import road_columns

    films = _box_film(6)
    seeds = [3, 5004, 9999, 12, 25001, 7600]  # mod 10 000: 3, 5004, 9999, 12, 5001, 7600
    full = road_columns(
        _BoxModel(), films, None, films.astype(np.float32), seeds, {"roar": {"retrain": {"fractions": [0.3]}}}
    )
    half = road_columns(
        _BoxModel(),
        films,
        None,
        films.astype(np.float32),
        seeds,
        {"roar": {"retrain": {"fractions": [0.3]}, "road_fraction": 0.5}},
    )
    scored = ~np.isnan(half["road_gap"])
    assert scored.tolist() == [True, False, False, True, False, False]
    np.testing.assert_allclose(half["road_gap"][scored], full["road_gap"][scored], atol=1e-3)
    assert not np.isnan(full["road_gap"]).any()
