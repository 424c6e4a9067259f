"""The public API: ``matex.explain`` on every accepted input form, the overlay picture, ``save``,
``matex.methods()``, ``help(matex)`` and the docstring examples (run as doctests)."""

from __future__ import annotations

import doctest
import pydoc
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import matex
from matex.attribution import ExplainOutput, available_methods
from matex.attribution import explain as engine_explain
from matex.errors import ConfigError, DataError
from matex.models.loading import load_model

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "img" / "example_chest.jpg"
PHRASE = "focal consolidation in the left mid zone"


@pytest.fixture(scope="module")
def model(make_tiny_model):
    return make_tiny_model(layers=3)  # tests/conftest.py: the tiny demo model with three vision layers


@pytest.fixture(scope="module")
def reference(model):
    """The map of the example image given as a one-element list of PIL images (the old form)."""
    with Image.open(EXAMPLE) as im:
        pil = im.convert("L")
    return pil, engine_explain(model, [pil], [PHRASE], "saliency").image


@pytest.mark.parametrize(
    "form", ["str", "path", "pil", "pil_rgb", "array_u8", "array_float", "array_rgb", "list_of_str", "tuple_of_arrays"]
)
def test_single_image_in_any_form_gives_the_same_map(model, reference, form):
    pil, expected = reference
    a = np.asarray(pil)
    image = {
        "str": str(EXAMPLE),
        "path": EXAMPLE,
        "pil": pil,
        "pil_rgb": pil.convert("RGB"),
        "array_u8": a,
        "array_float": a.astype(np.float32) / 255.0,
        "array_rgb": np.repeat(a[..., None], 3, axis=2),
        "list_of_str": [str(EXAMPLE)],
        "tuple_of_arrays": (a,),
    }[form]
    out = matex.explain(model, image, PHRASE, method="saliency")
    assert isinstance(out, matex.Explanation) and isinstance(out, ExplainOutput)
    assert out.image.shape == (1, 224, 224) and out.texts == [PHRASE]
    torch.testing.assert_close(out.image, expected, atol=2e-3, rtol=0)


def test_a_single_path_string_is_not_read_letter_by_letter(model, tmp_path):
    with pytest.raises(DataError, match=r"image 0: file not found.*nope\.jpg"):
        matex.explain(model, str(tmp_path / "nope.jpg"), PHRASE)


def test_lists_of_images_and_phrases_are_batched(model):
    out = matex.explain(model, [EXAMPLE, EXAMPLE], [PHRASE, "cardiomegaly"], method="matex")
    assert out.image.shape == (2, 224, 224) and len(out) == 2
    assert out.inputs.shape == (2, 224, 224) and out.inputs.dtype == np.uint8
    assert not torch.equal(out.image[0], out.image[1])  # the phrase changes the map


def test_phrase_count_must_match_image_count(model):
    with pytest.raises(DataError, match=r"2 images but 1 texts"):
        matex.explain(model, [EXAMPLE, EXAMPLE], PHRASE)
    with pytest.raises(DataError, match="list of strings"):
        matex.explain(model, EXAMPLE, [PHRASE, None])
    with pytest.raises(DataError, match="image 0: array of shape"):
        matex.explain(model, [np.zeros((4, 5, 6, 7))], PHRASE)


def test_overlay_shows_the_map_and_the_box(model):
    out = matex.explain(model, EXAMPLE, PHRASE, method="matex")
    plain = np.asarray(out.overlay(0, scale=1), dtype=np.int16)
    assert plain.shape == (224, 224, 3)
    # where the map is high the overlay is coloured (channels differ); where it is 0 jet is dark blue
    m = out.image[0].numpy()
    hot, cold = m > 0.9, m < 0.1
    assert hot.any() and cold.any()
    red_minus_blue = plain[..., 0] - plain[..., 2]
    assert red_minus_blue[hot].mean() > red_minus_blue[cold].mean() + 40
    boxed = np.asarray(out.overlay(0, box=(40, 60, 120, 180), scale=2))
    assert boxed.shape == (448, 448, 3)
    assert tuple(boxed[120, 160]) == (0, 220, 0)  # top edge (y0 = 60, scaled x2) is green
    assert tuple(boxed[170, 80]) == (0, 220, 0)  # left edge (x0 = 40)
    assert tuple(boxed[200, 160]) != (0, 220, 0)  # inside: the picture, not the outline
    with pytest.raises(IndexError, match="1 pair"):
        out.overlay(1)
    with pytest.raises(KeyError, match="no component"):
        out.overlay(0, component="nope")


def test_save_writes_png_and_npy(model, tmp_path):
    out = matex.explain(model, [EXAMPLE, EXAMPLE], [PHRASE, "cardiomegaly"], method="gradcam")
    png = out.save(tmp_path / "sub" / "map.png")
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size == (2 * 448, 448)  # both pairs side by side
    one = out.save(tmp_path / "one.png", i=1)
    with Image.open(one) as im:
        assert im.size == (448, 448)
    arr = np.load(out.save(tmp_path / "maps.npy"))
    np.testing.assert_array_equal(arr, out.image.numpy())
    assert not list(tmp_path.rglob(".*"))  # written atomically, no temporaries left


def test_components_row_has_every_matex_component(model):
    out = matex.explain(model, EXAMPLE, PHRASE, method="matex")
    assert len(out.components) >= 4
    row = out.components_row(0)
    assert row.width == 224 * (2 + len(out.components))


def test_methods_lists_every_registered_method_with_its_reference():
    listed = matex.methods()
    assert list(listed) == available_methods() and "matex" in listed
    assert all(isinstance(ref, str) for ref in listed.values())


def test_help_lists_the_public_api():
    text = pydoc.render_doc(matex, renderer=pydoc.plaintext)
    for name in ("explain", "load_model", "methods", "spatial_prior", "Explanation"):
        assert f"\n    {name}" in text or f"class {name}" in text, name
    assert set(matex.__all__) <= set(dir(matex))


@pytest.mark.parametrize("module", ["matex", "matex.api"])
def test_docstring_examples_run(module, tmp_path, monkeypatch):
    """The examples in the docstrings are doctests; they use ``load_model("demo")`` (open_clip-style naming)."""
    try:
        load_model("demo")
    except (ConfigError, TypeError) as e:
        pytest.skip(f"load_model('demo') without a config is not available in this checkout: {e}")
    (tmp_path / "docs" / "img").mkdir(parents=True)
    shutil.copy(EXAMPLE, tmp_path / "docs" / "img" / EXAMPLE.name)
    monkeypatch.chdir(tmp_path)  # the examples write map.png
    import importlib

    mod = importlib.import_module(module)
    res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert res.attempted > 0 and res.failed == 0, res


@pytest.mark.parametrize("module", ["matex", "matex.api"])
def test_docstring_examples_run_with_the_default_demo_architecture(module, tmp_path, monkeypatch):
    """The same examples with ``load_model("demo")`` read as the default config's (random) demo model,
    so that they are checked even where ``load_model`` does not accept a bare "demo" yet."""
    import importlib

    from matex.config import load_config

    demo = load_config(ROOT / "config" / "config.yaml")["model"]["demo"]
    monkeypatch.setattr(matex, "load_model", lambda source="demo", **kw: load_model(source, demo=demo, **kw))
    (tmp_path / "docs" / "img").mkdir(parents=True)
    shutil.copy(EXAMPLE, tmp_path / "docs" / "img" / EXAMPLE.name)
    monkeypatch.chdir(tmp_path)
    res = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert res.attempted > 0 and res.failed == 0, res
    assert (tmp_path / "map.png").exists() or module == "matex.api"
