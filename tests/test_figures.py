"""Figures that could leak licensed data: without report.embed_images, the qualitative grid holds
neither the radiographs nor their phrases."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.axes
import matplotlib.text
import numpy as np
import pandas as pd
import pytest

from matex.figures.plots import qualitative_grid

PHRASE = "Subtle retrocardiac opacity, patient 1234"


@pytest.mark.parametrize("show", [True, False])
def test_qualitative_grid_embeds_images_and_phrases_only_when_allowed(monkeypatch, show):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 32, 32), dtype=np.uint8)
    pairs = pd.DataFrame(
        {
            "pair_id": ["a", "b"],
            "phrase": [PHRASE, "cardiomegaly"],
            "category": ["Atelectasis", "Cardiomegaly"],
            "boxes": [[[2.0, 2.0, 10.0, 10.0]], [[5.0, 5.0, 20.0, 20.0]]],
        }
    )
    maps = {"matex": {p: rng.random((32, 32)).astype(np.float32) for p in ("a", "b")}}
    drawn = []
    original = matplotlib.axes.Axes.imshow
    monkeypatch.setattr(
        matplotlib.axes.Axes,
        "imshow",
        lambda self, x, *a, **k: (drawn.append(np.asarray(x)), original(self, x, *a, **k))[1],
    )
    fig = qualitative_grid(pairs, images, maps, ["a", "b"], show_images=show)
    words = " ".join(t.get_text() for t in fig.findobj(matplotlib.text.Text))
    image_drawn = any(d.shape == images[0].shape and np.array_equal(d, images[i]) for d in drawn for i in range(2))
    assert image_drawn == show
    assert (PHRASE[:20] in words) == show
    assert "Atelectasis" in words and "Cardiomegaly" in words
