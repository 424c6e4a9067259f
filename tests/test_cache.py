"""Cached attribution artifacts: sharded runs merged equal an unsharded run, NaN maps are refused."""

import numpy as np
import open_clip
import pandas as pd
import pytest
import torch

from matex.data.transforms import InputGeometry
from matex.errors import MapError
from matex.io import read_npz
from matex.maps.store import attribute_rows, load_maps, merge_shards, select_pairs, shard_rows, write_attribution
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


# ------------------------------------------- damaged artifacts (issue 25.13): errors name the file
def _cached(tmp_path, tiny):
    model, pairs, images = tiny
    maps, table = attribute_rows(model, "raw_attention", {}, pairs, images, [0, 1, 2], 3, progress=False)
    write_attribution(maps, table, {"config_hash": "h"}, tmp_path / "m.npz", tmp_path / "m.parquet")
    return tmp_path / "m.npz"


def _damage_keeping_mtime(path, how: str) -> None:
    """Zero a run of bytes in the middle (``zeroed``) or all of them (``blanked``, same size), or cut
    the tail, then put the old mtime back (what a failing disk or an interrupted copy leaves, and
    what Snakemake's mtime check cannot see)."""
    import os

    st = path.stat()
    data = bytearray(path.read_bytes())
    if how == "zeroed":
        data[len(data) // 3 : len(data) // 3 + 64] = bytes(64)
    elif how == "blanked":
        data = bytearray(len(data))
    else:
        data = data[: len(data) - 200]
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_mtime_ns == st.st_mtime_ns


def test_the_index_records_the_maps_checksum_and_an_intact_file_loads(tmp_path, tiny):
    from matex.io import CHECKSUM_KEY, file_sha256

    npz = _cached(tmp_path, tiny)
    import pyarrow.parquet as pq

    md = pq.read_schema(tmp_path / "m.parquet").metadata
    assert CHECKSUM_KEY.encode() in md and file_sha256(npz) in md[CHECKSUM_KEY.encode()].decode()
    maps, ids, _ = load_maps(npz)
    assert ids == ["p0", "p1", "p2"] and maps.shape == (3, 56, 56)


@pytest.mark.parametrize("how", ["zeroed", "blanked", "truncated"])
def test_a_damaged_cached_map_file_with_its_old_mtime_is_refused_naming_it(tmp_path, tiny, how):
    npz = _cached(tmp_path, tiny)
    _damage_keeping_mtime(npz, how)
    for read in (lambda: load_maps(npz, ["p0"]), lambda: read_npz(npz)):
        with pytest.raises(MapError, match="delete it") as err:
            read()
        assert str(npz) in str(err.value)


def test_a_changed_map_file_whose_zip_still_reads_is_caught_by_the_checksum(tmp_path, tiny):
    """Another valid NPZ put in place of the cached one (same name, old mtime) reads without error:
    only the recorded checksum can tell."""
    import os

    from matex.io import write_npz

    npz = _cached(tmp_path, tiny)
    st = npz.stat()
    write_npz(npz, {"p0": np.zeros((56, 56), np.float32)}, {"config_hash": "h"})
    os.utime(npz, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(MapError, match="sha256 recorded in") as err:
        load_maps(npz, ["p0"])
    assert str(npz) in str(err.value) and "rerun" in str(err.value)


def test_damaged_tables_arrays_and_json_name_their_file(tmp_path):
    from matex.errors import DataError
    from matex.io import read_json, read_npy, read_parquet, write_parquet

    write_parquet(tmp_path / "t.parquet", pd.DataFrame({"a": [1, 2]}))
    np.save(tmp_path / "images.npy", np.zeros((2, 4, 4), np.uint8))
    (tmp_path / "log.json").write_text('{"final": ')
    for name in ("t.parquet", "images.npy"):
        _damage_keeping_mtime(tmp_path / name, "truncated" if name.endswith("npy") else "blanked")
    for read, name in (
        (read_parquet, "t.parquet"),
        (read_npy, "images.npy"),
        (read_json, "log.json"),
        (read_parquet, "missing.parquet"),
    ):
        with pytest.raises(DataError) as err:
            read(tmp_path / name)
        assert str(tmp_path / name) in str(err.value), name


def test_pipeline_readers_name_the_damaged_artifact(tmp_path, tiny):
    """The figure, core and ROAR steps read through the io readers: a damaged pairs table or map
    file is an error naming it, not a bare pyarrow / numpy error."""
    from types import SimpleNamespace

    from matex.errors import DataError
    from matex.pipeline.core import load_step_inputs
    from matex.pipeline.figures import figure_qualitative

    model, pairs, images = tiny
    pairs.to_parquet(tmp_path / "pairs.parquet")
    np.save(tmp_path / "images.npy", images)
    npz = _cached(tmp_path, tiny)
    _damage_keeping_mtime(npz, "zeroed")
    inp = SimpleNamespace(pairs=str(tmp_path / "pairs.parquet"), images=str(tmp_path / "images.npy"), maps=[str(npz)])
    with pytest.raises(MapError) as err:
        figure_qualitative({}, inp, str(tmp_path / "fig.png"), None, None, 1)
    assert str(npz) in str(err.value)
    (tmp_path / "pairs.parquet").write_bytes(b"\0" * 100)
    with pytest.raises(DataError) as err:
        load_step_inputs({}, inp)
    assert str(tmp_path / "pairs.parquet") in str(err.value)
