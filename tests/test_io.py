"""Atomic artifact writing: no partial file under the final name, metadata round-trips, reruns are
byte-identical."""

import numpy as np
import pandas as pd
import pytest

from matex.io import atomic_path, config_hash, read_npz, read_parquet_meta, write_npz, write_parquet


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.parquet"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_previous_version(tmp_path):
    target = tmp_path / "maps.npz"
    write_npz(target, {"a": np.ones(3)}, {"config_hash": "x"})
    with pytest.raises(RuntimeError):
        with atomic_path(target, suffix=".npz") as tmp:
            tmp.write_bytes(b"garbage")
            raise RuntimeError("killed")
    arrays, meta = read_npz(target)
    assert np.array_equal(arrays["a"], np.ones(3)) and meta == {"config_hash": "x"}


def test_parquet_meta_roundtrip_and_byte_identical(tmp_path):
    df = pd.DataFrame({"pair_id": ["a", "b"], "v": [1.0, 2.5]})
    meta = {"config_hash": config_hash({"seed": 0}), "seed": 0}
    write_parquet(tmp_path / "a.parquet", df, meta)
    write_parquet(tmp_path / "b.parquet", df, meta)
    assert read_parquet_meta(tmp_path / "a.parquet") == meta
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a.parquet"), df)


def test_config_hash_depends_on_content_not_key_order():
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_temp_file_of_a_killed_writer_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "maps.npz"
    stale = tmp_path / ".maps.npz.abc123.npz"  # what a SIGKILLed write leaves behind
    stale.write_bytes(b"half")
    other = tmp_path / ".other.npz.xyz.npz"  # another artifact's temp file is not touched
    other.write_bytes(b"x")
    write_npz(target, {"a": np.ones(2)})
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.npz.xyz.npz", "maps.npz"]
