"""What an auditor reads beside the maps: MATEX's component maps, token strings next to token scores,
and one pair's map read without decoding the rest of the file."""

import numpy as np
import pandas as pd
import pytest

from matex.errors import MapError
from matex.io import read_npz, read_npz_members
from matex.maps.store import attribute_rows, load_maps, write_attribution


@pytest.fixture(scope="module")
def explained(tmp_path_factory, tiny_model):
    model = tiny_model  # tests/conftest.py
    pairs = pd.DataFrame(
        {
            "pair_id": ["a", "b"],
            "category": ["Consolidation", "Pleural Effusion"],
            "phrase": ["left lower lobe consolidation", "small right pleural effusion"],
        }
    )
    images = np.random.default_rng(0).integers(0, 255, (2, 224, 224), dtype=np.uint8)
    audit: dict = {}
    maps, table = attribute_rows(model, "matex", {}, pairs, images, [0, 1], 2, audit=audit, progress=False)
    folder = tmp_path_factory.mktemp("maps")
    write_attribution(
        maps,
        table,
        {"method": "matex"},
        folder / "matex.npz",
        folder / "matex.parquet",
        audit,
        folder / "matex.audit.npz",
    )
    return maps, audit, folder


def test_matex_components_and_token_strings_are_kept(explained):
    maps, audit, folder = explained
    stored, meta = read_npz(folder / "matex.audit.npz")
    assert meta["method"] == "matex"
    names = {k.split("/")[1] for k in stored if k.startswith("components/")}
    assert len(names) >= 4  # MATEX's fused terms
    for name in names:
        assert stored[f"components/{name}/a"].shape == (224, 224)
    tokens = stored["tokens/a"]
    assert list(tokens[1:-1]) == ["left", "lower", "lobe", "consolidation"]
    assert len(tokens) == len(maps["text/a"])  # one string per token score


def test_one_pair_is_read_alone_and_a_missing_pair_is_named(explained):
    _, _, folder = explained
    one = read_npz_members(folder / "matex.npz", ["b"])
    assert list(one) == ["b"] and one["b"].shape == (224, 224)
    stacked, ids, _ = load_maps(folder / "matex.npz", ["b", "a"])
    assert ids == ["b", "a"] and stacked.shape == (2, 224, 224)
    with pytest.raises(MapError, match=r"matex\.npz has no entry for \['zz'\]"):
        read_npz_members(folder / "matex.npz", ["zz"])
