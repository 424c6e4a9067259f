"""Counterfactual ground truth: each metric on maps that should pass and maps that should fail it,
the re-rendered film against the prepared one, and a tiny model that provably uses only a planted
marker (saliency and Chefer find it; prior_only, which never looks at the image, does not)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from matex.metrics.counterfactual import (
    counterfactual_agreement,
    drain_share,
    element_mass,
    exclusive_masks,
    lesion_share,
    noise_threshold,
    pair_counterfactual,
    rank_concordance,
    shortcut_test,
    truths_from_arrays,
    truths_to_arrays,
)

S = 56
YY, XX = np.mgrid[0:S, 0:S]


def square(x: int, y: int, r: int = 4) -> np.ndarray:
    return (abs(XX - x) <= r) & (abs(YY - y) <= r)


def test_share_is_one_on_the_mask_zero_elsewhere_area_for_a_constant_map():
    mask = square(10, 10)
    on, off = mask.astype(float), square(40, 40).astype(float)
    np.testing.assert_allclose(lesion_share(np.stack([on, off]), np.stack([mask, mask])), [1.0, 0.0])
    # a constant map and a zero map both score the area fraction: no preference
    np.testing.assert_allclose(
        drain_share(np.stack([np.ones((S, S)), np.zeros((S, S))]), np.stack([mask, mask])), [mask.mean()] * 2
    )
    assert np.isnan(drain_share(on[None], np.zeros((1, S, S), bool)))[0]  # no drain on this film
    with pytest.raises(ValueError):
        lesion_share(-on[None], mask[None])


def test_agreement_is_plus_one_for_the_model_s_ranking_and_minus_one_reversed():
    masks = np.stack([square(10, 10), square(40, 10), square(25, 40)])
    deltas = np.array([0.3, 0.1, 0.0])
    faithful = 3 * masks[0] + 2 * masks[1] + 1 * masks[2]
    reversed_ = 1 * masks[0] + 2 * masks[1] + 3 * masks[2]
    rho = counterfactual_agreement(np.stack([faithful, reversed_]).astype(float), [masks, masks], [deltas, deltas])
    np.testing.assert_allclose(rho, [1.0, -1.0])
    # a constant map puts equal mass on equal areas: no ranking, no agreement
    assert counterfactual_agreement(np.ones((1, S, S)), [masks], [deltas])[0] == 0.0
    one = counterfactual_agreement(faithful[None].astype(float), [masks[:1]], [deltas[:1]])
    assert np.isnan(one[0])  # a single element has nothing to rank against


def test_agreement_ranks_only_elements_whose_delta_s_differ_beyond_the_noise():
    masks = np.stack([square(10, 10), square(40, 10), square(25, 40)])
    deltas = np.array([0.3, 0.1, 0.05])
    wrong_within_noise = 3 * masks[0] + 1 * masks[1] + 2 * masks[2]  # swaps the two close elements
    m = wrong_within_noise[None].astype(float)
    assert counterfactual_agreement(m, [masks], [deltas])[0] == pytest.approx(1 / 3)  # no threshold: penalised
    assert counterfactual_agreement(m, [masks], [deltas], threshold=0.1)[0] == 1.0  # the swap is within noise
    assert np.isnan(counterfactual_agreement(m, [masks], [deltas], threshold=0.5)[0])  # nothing separable
    assert rank_concordance([1.0, 2.0], [0.2, 0.1], 0.0) == -1.0


def test_element_mass_counts_only_exclusive_pixels():
    big = square(20, 20, 10)
    inner = square(20, 20, 3)  # inside big: its every pixel is shared
    far = square(45, 45, 3)
    masks = np.stack([big, inner, far])
    excl = exclusive_masks(masks)
    assert not excl[1].any() and not (excl[0] & inner).any() and (excl[2] == far).all()
    # mass on the shared pixels cannot be credited to either element
    np.testing.assert_array_equal(element_mass(inner.astype(float), masks), [0.0, 0.0, 0.0])
    ring = (big & ~inner).astype(float)
    np.testing.assert_array_equal(element_mass(ring, masks), [ring.sum(), 0.0, 0.0])


def test_nonlesion_agreement_ignores_the_lesion():
    masks = np.stack([square(10, 10), square(40, 10), square(25, 40)])  # lesion, drain, ribs
    deltas = np.array([0.3, 0.1, 0.0])
    lesion_only_right = 3 * masks[0] + 1 * masks[1] + 2 * masks[2]  # lesion first, the rest reversed
    m = lesion_only_right[None].astype(float)
    keep = [np.array([False, True, True])]
    assert counterfactual_agreement(m, [masks], [deltas])[0] == pytest.approx(1 / 3)
    assert counterfactual_agreement(m, [masks], [deltas], keep=keep)[0] == -1.0
    assert noise_threshold([]) == 0.0


def test_shortcut_test_scores_the_peak_only_where_the_model_prefers_the_drain():
    drain = square(10, 40, 1)
    peak_on = np.zeros((S, S))
    peak_on[40, 10] = 1.0
    peak_off = np.zeros((S, S))
    peak_off[5, 50] = 1.0
    maps = np.stack([peak_on, peak_off, peak_on, np.ones((S, S))])
    out = shortcut_test(
        maps, np.stack([drain] * 4), np.array([0.2, 0.2, 0.0, 0.2]), np.array([0.1, 0.1, 0.1, 0.1]), tolerance_px=2
    )
    assert out[0] == 1.0 and out[1] == 0.0
    assert np.isnan(out[2])  # the model relies on the lesion: not scored
    assert 0 < out[3] < 0.1  # a constant map: the (dilated) drain's area


# ------------------------------------------------------------------------------------- synthetic film
def test_re_rendered_film_is_the_prepared_input_and_delta_s_is_measured(tmp_path):
    import pandas as pd

    from matex.data.mscxr import prepare_dataset
    from matex.data.synthetic import SyntheticSpec, generate_synthetic
    from matex.data.transforms import InputGeometry
    from matex.models.loading import load_model

    small = {"width": (96, 128), "height": (112, 144)}
    csv = generate_synthetic(
        tmp_path / "raw", n_images=8, seed=4, progress=False, drain_eval_fraction=1.0, val_fraction=0.5, **small
    )
    geometry = InputGeometry(S)
    prepare_dataset(
        csv,
        tmp_path / "raw",
        geometry,
        0.5,
        4,
        "error",
        tmp_path / "pairs.parquet",
        tmp_path / "report.json",
        tmp_path / "images.npy",
        meta={},
    )
    pairs = pd.read_parquet(tmp_path / "pairs.parquet")
    images = np.load(tmp_path / "images.npy")
    elements = pd.read_parquet(tmp_path / "raw" / "synthetic_elements.parquet").drop_duplicates("dicom_id")
    row = pairs.iloc[0]
    case = elements.set_index("dicom_id").loc[row["dicom_id"]]
    demo = {
        "embed_dim": 16,
        "vision": {"layers": 1, "width": 16, "heads": 2, "patch_size": 8, "mlp_ratio": 2.0, "stem_channels": 0},
        "text": {"layers": 1, "width": 16, "heads": 2, "context_length": 16},
    }
    model = load_model("demo", demo=demo, geometry=geometry, seed=0)
    truth = pair_counterfactual(
        model,
        row["phrase"],
        4,
        int(case["case_index"]),
        SyntheticSpec(**small),
        bool(case["drain"]),
        "lesion0",
        geometry,
        92,
    )
    assert {"lesion0", "ribs", "clavicles"} <= set(truth.names)
    assert truth.masks.shape == (len(truth.names), S, S) and truth.masks.dtype == bool
    with torch.no_grad():
        s = model.similarity(model.preprocess(images[:1]), model.tokenize([row["phrase"]])).item()
    assert truth.similarity == pytest.approx(s, abs=1e-6)  # the re-rendered x is the prepared image
    assert np.isfinite(truth.deltas).all() and np.abs(truth.deltas).max() > 0
    # the null: the same film with its quantum noise redrawn moves S, but removes nothing
    assert truth.null_deltas.shape == (2,) and np.isfinite(truth.null_deltas).all()
    assert np.abs(truth.null_deltas).max() > 0 and noise_threshold([truth]) > 0
    back = truths_from_arrays(truths_to_arrays({"p": truth}))["p"]  # the counterfactual_truth artifact
    assert back.names == truth.names and back.lesion == truth.lesion
    np.testing.assert_array_equal(back.masks, truth.masks)
    np.testing.assert_array_equal(back.deltas, truth.deltas)
    np.testing.assert_array_equal(back.null_deltas, truth.null_deltas)


# ------------------------------------------------------------------------------------- planted marker
def _scene(rng):
    """Noise with a random exposure, a marker square whose polarity is the only thing the text names,
    and two distractors (a disc, a bar) the text never depends on."""
    polarity = int(rng.integers(2))
    cells = rng.permutation(9)[:3]
    (mx, my), (bx, by), (rx, ry) = [
        (9 + (c % 3) * 18 + rng.integers(-2, 3), 9 + (c // 3) * 18 + rng.integers(-2, 3)) for c in cells
    ]
    masks = {
        "marker": square(mx, my),
        "disc": (XX - bx) ** 2 + (YY - by) ** 2 <= 20,
        "bar": (abs(XX - rx) <= 6) & (abs(YY - ry) <= 1),
    }
    base = rng.normal(0, 8, (S, S)) + rng.uniform(90, 160)
    values = {"marker": 90.0 if polarity else -90.0, "disc": 60.0, "bar": 60.0}
    return base, masks, values, ["dark marker", "bright marker"][polarity]


def _render(base, masks, values, omit=()):
    img = base + sum(values[k] * m for k, m in masks.items() if k not in omit)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def marker_model():
    from matex.data.transforms import InputGeometry
    from matex.models.loading import load_model
    from matex.models.train import train_clip

    demo = {
        "embed_dim": 32,
        "vision": {"layers": 2, "width": 32, "heads": 2, "patch_size": 8, "mlp_ratio": 2.0, "stem_channels": 0},
        "text": {"layers": 1, "width": 32, "heads": 2, "context_length": 8},
    }
    rng = np.random.default_rng(0)
    scenes = [_scene(rng) for _ in range(512)]
    model = load_model("demo", demo=demo, geometry=InputGeometry(S), seed=0)
    train_clip(
        model,
        np.stack([_render(*s[:3]) for s in scenes]),
        [s[3] for s in scenes],
        epochs=12,
        batch_size=32,
        lr=2e-3,
        weight_decay=0.0,
        warmup_steps=10,
        seed=0,
        threads=1,
        progress=False,
    )
    return model


def test_saliency_and_chefer_find_the_marker_the_model_uses_prior_only_does_not(marker_model):
    from matex.attribution import explain

    model = marker_model
    rng = np.random.default_rng(1)
    scenes = [_scene(rng) for _ in range(24)]
    names = ["marker", "disc", "bar"]
    images = np.stack([_render(*s[:3]) for s in scenes])
    texts = [s[3] for s in scenes]
    tokens = model.tokenize(texts)
    with torch.no_grad():
        s_full = model.similarity(model.preprocess(images), tokens).numpy()
        deltas = np.stack(
            [
                s_full
                - model.similarity(
                    model.preprocess(np.stack([_render(*s[:3], omit=(n,)) for s in scenes])), tokens
                ).numpy()
                for n in names
            ],
            1,
        )
    # the truth: the model relies on the marker and on nothing else
    assert deltas[:, 0].mean() > 0.1 and np.abs(deltas[:, 1:]).mean() < 0.2 * deltas[:, 0].mean()
    marker = np.stack([s[1]["marker"] for s in scenes])
    disc = np.stack([s[1]["disc"] for s in scenes])
    elements = [np.stack([s[1][n] for n in names]) for s in scenes]
    share, cf, peak = {}, {}, {}
    for method in ("saliency", "chefer", "prior_only"):
        maps = explain(model, images, texts, method=method).image.numpy()
        share[method] = np.nanmean(drain_share(maps, marker))
        cf[method] = np.nanmean(counterfactual_agreement(maps, elements, list(deltas)))
        peak[method] = np.nanmean(shortcut_test(maps, marker, deltas[:, 0], deltas[:, 1], tolerance_px=4))
        assert np.nanmean(lesion_share(maps, disc)) < share[method] or method == "prior_only"
    area = marker.mean()
    for method in ("saliency", "chefer"):
        assert share[method] > 2.5 * area, (method, share[method], area)
        assert peak[method] > 0.3, (method, peak[method])
        assert cf[method] > 0.1, (method, cf[method])
    # prior_only reads only the phrase, which never says where the marker is: no mass on it
    assert share["prior_only"] < 1.2 * area
    assert peak["prior_only"] < 0.15
