"""Cached attribution artifacts: sharded runs merged equal an unsharded run, NaN maps are refused."""

import numpy as np
import open_clip
import pandas as pd
import pytest
import torch

from matex.data.transforms import InputGeometry
from matex.errors import MapError
from matex.io import read_npz
from matex.mapstore import attribute_rows, load_maps, merge_shards, select_pairs, shard_rows, write_attribution
from matex.models.base import MatexModel


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    clip = open_clip.CLIP(
        embed_dim=32,
        vision_cfg=dict(image_size=56, patch_size=8, width=32, layers=3, head_width=16),
        text_cfg=dict(context_length=16, vocab_size=49408, width=32, heads=2, layers=2),
    ).eval()
    model = MatexModel(clip, open_clip.tokenizer.SimpleTokenizer(context_length=16), InputGeometry(56))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(10, 56, 56), dtype=np.uint8)
    pairs = pd.DataFrame(
        {
            "pair_id": [f"p{i}" for i in range(10)],
            "phrase": ["left lower lobe opacity"] * 10,
            "category": ["Lung Opacity"] * 10,
            "split": ["val"] * 7 + ["train"] * 3,
        }
    )
    return model, pairs, images


@pytest.mark.parametrize("method", ["matex", "rise"])
def test_sharded_equals_unsharded(tmp_path, tiny, method):
    model, pairs, images = tiny
    params = {"n_masks": 16, "batch": 8} if method == "rise" else {}
    rows = select_pairs(pairs, "val", None)
    assert rows.tolist() == list(range(7))
    meta = {"config_hash": "h", "method": method}
    maps, table = attribute_rows(model, method, params, pairs, images, rows, 3, "float32", progress=False)
    write_attribution(maps, table, meta, tmp_path / "full.npz", tmp_path / "full.parquet")
    npzs, parquets = [], []
    for shard in range(3):
        m, t = attribute_rows(
            model, method, params, pairs, images, shard_rows(rows, shard, 3), 2, "float32", progress=False
        )
        write_attribution(
            m, t, {**meta, "shard": f"{shard}/3"}, tmp_path / f"s{shard}.npz", tmp_path / f"s{shard}.parquet"
        )
        npzs.append(tmp_path / f"s{shard}.npz")
        parquets.append(tmp_path / f"s{shard}.parquet")
    merge_shards(npzs, parquets, tmp_path / "merged.npz", tmp_path / "merged.parquet")
    full, _ = read_npz(tmp_path / "full.npz")
    merged, merged_meta = read_npz(tmp_path / "merged.npz")
    assert merged.keys() == full.keys() and merged_meta == meta
    for k in full:
        np.testing.assert_allclose(merged[k], full[k], atol=1e-5)
    a = pd.read_parquet(tmp_path / "full.parquet").drop(columns="runtime_s")
    b = pd.read_parquet(tmp_path / "merged.parquet").drop(columns="runtime_s")
    pd.testing.assert_frame_equal(a[["pair_id", "row", "method"]], b[["pair_id", "row", "method"]])
    stacked, ids, _ = load_maps(tmp_path / "merged.npz", ["p3", "p0"])
    assert stacked.shape == (2, 56, 56) and ids == ["p3", "p0"]


def test_shards_made_with_different_settings_are_refused(tmp_path, tiny):
    model, pairs, images = tiny
    for shard, h in enumerate(["a", "b"]):
        m, t = attribute_rows(model, "random", {}, pairs, images, np.array([shard]), 1, progress=False)
        write_attribution(m, t, {"config_hash": h}, tmp_path / f"s{shard}.npz", tmp_path / f"s{shard}.parquet")
    with pytest.raises(MapError, match="different settings"):
        merge_shards(
            [tmp_path / "s0.npz", tmp_path / "s1.npz"],
            [tmp_path / "s0.parquet", tmp_path / "s1.parquet"],
            tmp_path / "m.npz",
            tmp_path / "m.parquet",
        )
    assert not (tmp_path / "m.npz").exists()


def test_missing_pair_in_cache_is_named(tmp_path, tiny):
    model, pairs, images = tiny
    m, t = attribute_rows(model, "random", {}, pairs, images, np.array([0]), 1, progress=False)
    write_attribution(m, t, {"config_hash": "h"}, tmp_path / "r.npz", tmp_path / "r.parquet")
    with pytest.raises(MapError, match="p9"):
        load_maps(tmp_path / "r.npz", ["p0", "p9"])
