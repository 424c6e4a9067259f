"""Atomic artifact writing: no partial file under the final name, metadata round-trips, reruns are
byte-identical."""

import os
import stat

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


def test_hidden_files_beside_the_output_are_never_deleted(tmp_path):
    """Issue 25.8: only the writer's own temporary file may go; an editor's swap file, another
    writer's temporary file or another artifact's one all survive a write."""
    target = tmp_path / "map.png"
    planted = {
        ".map.png.swp": b"vim swap",
        ".map.png.abc123.png": b"another writer's temp",
        ".other.npz.xyz.npz": b"x",
    }
    for name, data in planted.items():
        (tmp_path / name).write_bytes(data)
    with atomic_path(target, suffix=".png") as tmp:
        tmp.write_bytes(b"png")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*planted, "map.png"])
    assert all((tmp_path / n).read_bytes() == d for n, d in planted.items())
    assert target.read_bytes() == b"png"


def test_two_interleaved_writers_both_succeed_with_one_complete_file(tmp_path):
    """Writer A has its temporary file open when writer B starts: both renames succeed (before,
    B deleted A's temporary file and A crashed) and the output is one of the two whole payloads."""
    target = tmp_path / "maps.npz"
    a_payload, b_payload = b"A" * 4096, b"B" * 8192
    with atomic_path(target) as tmp_a:
        tmp_a.write_bytes(a_payload)
        with atomic_path(target) as tmp_b:
            tmp_b.write_bytes(b_payload)
        assert target.read_bytes() == b_payload
        assert tmp_a.read_bytes() == a_payload  # B left A's file alone
    assert target.read_bytes() == a_payload
    assert [p.name for p in tmp_path.iterdir()] == ["maps.npz"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_artifacts_honour_the_umask(tmp_path, umask, mode):
    """Issue 25.9: an artifact gets the mode of an ordinary file write (0o666 less the umask), not
    mkstemp's 0600."""
    old = os.umask(umask)
    try:
        write_npz(tmp_path / "maps.npz", {"a": np.ones(2)})
        write_parquet(tmp_path / "t.parquet", pd.DataFrame({"a": [1]}))
        with atomic_path(tmp_path / "map.png") as tmp:
            tmp.write_bytes(b"png")
    finally:
        os.umask(old)
    for name in ("maps.npz", "t.parquet", "map.png"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


@pytest.mark.skipif(os.name != "posix", reason="process ids and signals")
def test_only_a_killed_writers_own_temp_file_is_removed(tmp_path):
    """A temporary file named by a matex writer on this host whose process has gone is cleaned up by
    the next write of the same output; a live writer's, another host's, another output's and a
    user's hidden files are not."""
    import subprocess
    import sys

    from matex.io import _host_tag

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host = _host_tag()
    names = {
        "dead": f".maps.npz.matex-{host}-{gone.pid}-0123456789ab.npz",
        "alive": f".maps.npz.matex-{host}-{os.getppid()}-0123456789ab.npz",
        "other_host": f".maps.npz.matex-elsewhere{host}-{gone.pid}-0123456789ab.npz",
        "other_output": f".other.npz.matex-{host}-{gone.pid}-0123456789ab.npz",
        "swap": ".maps.npz.swp",
    }
    for name in names.values():
        (tmp_path / name).write_bytes(b"x")
    write_npz(tmp_path / "maps.npz", {"a": np.ones(2)})
    left = {p.name for p in tmp_path.iterdir()}
    assert names["dead"] not in left
    assert left == {"maps.npz", *(n for k, n in names.items() if k != "dead")}
