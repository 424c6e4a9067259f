"""The prior in the model's frame (issue 12, finding 10): regions are boxes on the whole film, and
the prior must land on the model input exactly where the same film's boxes land (centre crop and
letterbox), for portrait and landscape films."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from matex.attribution import explain
from matex.data.transforms import InputGeometry, box_mask
from matex.models.base import MatexModel
from matex.priors import load_regions, parse_phrase, spatial_prior
from matex.priors.prior import film_grid

S = 112
PORTRAIT, LANDSCAPE = (400, 300), (300, 400)  # film (height, width)


def mapped_box(name: str, film: tuple[int, int], mode: str) -> np.ndarray:
    """Boolean input mask of a region box mapped like an MS-CXR box."""
    x0, x1, y0, y1 = load_regions()[name].box
    h, w = film
    box, _ = InputGeometry(S, mode).map_box(x0 * w, y0 * h, (x1 - x0) * w, (y1 - y0) * h, w, h)
    return box_mask([box], S)


@pytest.mark.parametrize("film", [PORTRAIT, LANDSCAPE])
@pytest.mark.parametrize("mode", ["center_crop", "letterbox"])
def test_prior_lies_where_the_films_boxes_land(film, mode):
    text = "left lower lobe consolidation"
    prior = spatial_prior(text, (S, S), sigma=0.02, image_size=film, input_mode=mode)
    inside = mapped_box("left_lower_lobe", film, mode)
    assert inside.any()
    assert np.allclose(prior[inside], 2.5)  # the whole mapped box is at full strength
    # and the prior does not spill: beyond the box (plus sigma) it is flat
    grid = film_grid((S, S), film, mode)
    xs, ys = np.asarray(grid[0]), np.asarray(grid[1])
    x0, x1, y0, y1 = load_regions()["left_lower_lobe"].box
    far = (xs[None, :] < x0 - 0.03) | (xs[None, :] > x1 + 0.03) | (ys[:, None] < y0 - 0.03) | (ys[:, None] > y1 + 0.03)
    assert np.all(prior[far] == 1.0)


def test_centre_crop_of_a_portrait_film_moves_the_prior_down():
    """Without the film size the prior sits too high on a cropped portrait film."""
    text = "right lower zone opacity"
    naive = spatial_prior(text, (S, S), sigma=0.02)
    framed = spatial_prior(text, (S, S), sigma=0.02, image_size=PORTRAIT, input_mode="center_crop")

    def centre(p):
        return np.flatnonzero(p.max(axis=1) >= 2.5).mean() + 0.5

    _, _, y0, y1 = load_regions()["right_lower_zone"].box
    film_centre = (y0 + y1) / 2 * 400  # film pixels; the crop cuts 50 px top and bottom
    assert centre(framed) == pytest.approx((film_centre - 50) * S / 300, abs=1.0)
    assert centre(naive) < centre(framed) - 3
    inside = mapped_box("right_lower_zone", PORTRAIT, "center_crop")
    assert np.allclose(framed[inside], 2.5) and not np.allclose(naive[inside], 2.5)


def test_landscape_crop_moves_the_prior_sideways_and_letterbox_pads_flat():
    text = "right apical pneumothorax"
    naive = spatial_prior(text, (S, S), sigma=0.02)
    framed = spatial_prior(text, (S, S), sigma=0.02, image_size=LANDSCAPE, input_mode="center_crop")

    def cols(p):
        return np.flatnonzero(p.max(axis=0) >= 2.5)

    assert cols(framed).min() < cols(naive).min()  # the crop cut the film's sides: boxes spread out
    boxed = spatial_prior("bilateral effusions", (S, S), sigma=0.02, image_size=PORTRAIT, input_mode="letterbox")
    pad = (S - round(300 * S / 400)) // 2  # black columns left and right of the film
    assert pad > 5 and np.all(boxed[:, : pad - 3] == 1.0) and np.all(boxed[:, -(pad - 3) :] == 1.0)


def test_a_square_film_or_no_size_is_the_input_itself():
    text = "retrocardiac opacity"
    plain = spatial_prior(text, (S, S))
    assert np.array_equal(plain, spatial_prior(text, (S, S), image_size=(512, 512)))
    assert np.array_equal(plain, spatial_prior(text, (S, S), image_size=None, input_mode="letterbox"))


def _tiny_model() -> MatexModel:
    torch.manual_seed(0)
    clip = open_clip.CLIP(
        embed_dim=16,
        vision_cfg={"image_size": S, "patch_size": 16, "width": 16, "layers": 1, "head_width": 8},
        text_cfg={"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
    ).eval()
    return MatexModel(clip, open_clip.tokenizer.SimpleTokenizer(context_length=16), InputGeometry(S))


def test_prior_only_uses_each_pairs_film_size():
    model = _tiny_model()
    images = np.zeros((2, S, S), dtype=np.uint8)
    texts = ["right lower zone opacity"] * 2
    out = explain(model, images, texts, "prior_only", image_sizes=[PORTRAIT, LANDSCAPE], prior_sigma=0.02)
    for j, film in enumerate((PORTRAIT, LANDSCAPE)):
        want = spatial_prior(texts[j], (S, S), sigma=0.02, image_size=film)
        want = (want - want.min()) / (want.max() - want.min())
        assert np.allclose(out.image[j].numpy(), want, atol=1e-6)
    assert not torch.allclose(out.image[0], out.image[1])
    # PIL films carry their own size
    films = [Image.new("L", (w, h)) for h, w in (PORTRAIT, LANDSCAPE)]
    out_pil = explain(model, films, texts, "prior_only", prior_sigma=0.02)
    assert torch.allclose(out_pil.image, out.image)


def test_matex_lays_its_prior_in_the_films_frame():
    model = _tiny_model()
    images = np.zeros((1, S, S), dtype=np.uint8)
    text = ["left lower lobe consolidation"]
    a = explain(model, images, text, "matex", image_sizes=[PORTRAIT]).components["prior"][0]
    b = explain(model, images, text, "matex").components["prior"][0]
    want = spatial_prior(text[0], (S, S), image_size=PORTRAIT)
    assert np.allclose(a.numpy(), (want - want.min()) / (want.max() - want.min()), atol=1e-6)
    assert not torch.allclose(a, b)


def test_bad_image_sizes_are_rejected():
    from matex.errors import DataError

    with pytest.raises(DataError, match="image_sizes"):
        explain(
            _tiny_model(), np.zeros((1, S, S), dtype=np.uint8), ["cardiomegaly"], "prior_only", image_sizes=[(0, 10)]
        )


def test_parse_weights_lift_the_prior_less():
    """max_k w_k m_k: a diffuse region (w 0.6) lifts P to 1 + 1.5 * 0.6 inside it."""
    parse = parse_phrase("Bibasilar atelectasis with a small right pleural effusion.")
    weights = dict(zip(parse.region_names, parse.weights))
    assert weights["right_lower_zone"] == 1.0 and weights["left_lower_zone"] == pytest.approx(0.6)
    prior = spatial_prior(parse, (S, S), sigma=0.02)
    x0, x1, y0, y1 = load_regions()["left_lower_zone"].box
    cx, cy = int((x0 + x1) / 2 * S), int((y0 + y1) / 2 * S)
    assert prior[cy, cx] == pytest.approx(1 + 1.5 * 0.6, abs=1e-5)
    x0, x1, y0, y1 = load_regions()["right_lower_zone"].box
    assert prior[int((y0 + y1) / 2 * S), int((x0 + x1) / 2 * S)] == pytest.approx(2.5)
