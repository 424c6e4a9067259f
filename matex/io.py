"""Atomic artifact writing and provenance metadata.

Every artifact is written to a temporary file in the destination folder and renamed into place,
so a killed job never leaves a half-written file under the final name. Each artifact carries the
config hash that made it (Parquet: schema metadata; NPZ: a ``__meta__`` entry; JSON: a key).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
import secrets
import socket
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

META_KEY = "matex_meta"
# Parquet schema-metadata key of the sha256 checksums of the artifacts an index table describes
# ({file name: hex digest}); readers of those artifacts verify them (``verify_checksum``).
CHECKSUM_KEY = "matex_checksums"


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the basis of every config hash."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(*sections: Any) -> str:
    """Short sha256 of the canonical JSON of the given config sections."""
    return hashlib.sha256(canonical_json(list(sections)).encode()).hexdigest()[:16]


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # another user's process, or no way to tell: keep its file
        return True
    return True


def _remove_dead_writers_temps(path: Path, suffix: str) -> None:
    """Remove temporary files of ``path`` that a matex writer on this host left when it was killed:
    named by ``_create_temp`` with this host and the id of a process that no longer runs. Anything
    else beside the output (another live writer's file, an editor's swap file, files from other
    hosts) is never touched."""
    if os.name != "posix":
        return
    own = re.compile(
        rf"\.{re.escape(path.name)}\.matex-{re.escape(_host_tag())}-(\d+)-[0-9a-f]{{12}}{re.escape(suffix)}"
    )
    for candidate in path.parent.glob(f".{glob.escape(path.name)}.matex-*"):
        m = own.fullmatch(candidate.name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            candidate.unlink(missing_ok=True)


def _create_temp(path: Path, suffix: str) -> Path:
    """Create a new, empty, uniquely named hidden file beside ``path`` and return it: named after
    this host and process, so a later writer can tell a killed writer's leftover from a live one's.

    Opened with ``O_CREAT | O_EXCL`` and mode 0o666, so the process umask applies as for any
    ordinary file write (``tempfile.mkstemp`` would force 0600: a shared results folder would be
    unreadable to the rest of a group)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.matex-{_host_tag()}-{os.getpid()}-{secrets.token_hex(6)}{suffix}"
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"could not create a temporary file beside {path}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    Concurrent writers of the same output each write their own temporary file and the last rename
    wins, so the result is always one complete file. Besides its own temporary file, a write only
    removes what a killed matex writer of the same output on this host left (its process is gone);
    other hidden files beside the output (an editor's ``.map.png.swp``, a live writer's temporary
    file) are left alone. The file gets the mode an ordinary write would give (0o666 less the umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix or path.suffix or ".tmp"
    _remove_dead_writers_temps(path, suffix)
    tmp_path = _create_temp(path, suffix)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_generated(path: str | os.PathLike, text: str, command: str, check: bool) -> int:
    """Write a generated file, or with ``check`` only compare it: exit status 1 and a message naming
    ``command`` (what regenerates it) when the file is missing or out of date, else 0."""
    path = Path(path)
    if check:
        if not path.is_file() or path.read_text() != text:
            print(f"{path} is out of date: run {command}", file=sys.stderr)
            return 1
        return 0
    write_text(path, text)
    print(f"wrote {path}")
    return 0


def write_parquet(
    path: str | os.PathLike, df, meta: Mapping[str, Any] | None = None, checksums: Mapping[str, str] | None = None
) -> None:
    """Write a DataFrame to Parquet atomically, with ``meta`` stored in the schema metadata, and
    ``checksums`` ({file name beside it: sha256}) of the artifacts this table indexes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    if meta is not None:
        md = dict(table.schema.metadata or {})
        md[META_KEY.encode()] = canonical_json(dict(meta)).encode()
        # pandas metadata embeds nothing run-specific, so byte-identical reruns stay identical
        table = table.replace_schema_metadata(md)
    if checksums:
        md = dict(table.schema.metadata or {})
        md[CHECKSUM_KEY.encode()] = canonical_json(dict(checksums)).encode()
        table = table.replace_schema_metadata(md)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def _damaged(kind: str, path: str | os.PathLike, exc: BaseException) -> str:
    return f"{kind} {path} is damaged ({type(exc).__name__}: {exc}); delete it and rerun the step that makes it"


def _schema_metadata(path: str | os.PathLike) -> dict[bytes, bytes]:
    import pyarrow.parquet as pq

    from .errors import DataError

    try:
        return pq.read_schema(path).metadata or {}
    except FileNotFoundError:
        raise DataError("table not found", file=str(path)) from None
    except Exception as e:  # pyarrow raises ArrowInvalid / ArrowIOError / OSError on a damaged file
        raise DataError(_damaged("table", path, e)) from None


def read_parquet_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The ``meta`` a table was written with (a missing or damaged file is an error naming it)."""
    raw = _schema_metadata(path).get(META_KEY.encode())
    return json.loads(raw) if raw else {}


def read_parquet(path: str | os.PathLike, columns: Sequence[str] | None = None):
    """``pandas.read_parquet`` whose errors name the file: a missing or damaged table (truncated,
    zeroed, not Parquet) is a DataError saying to delete it and rerun the step that makes it."""
    import pandas as pd

    from .errors import DataError

    try:
        return pd.read_parquet(path, columns=None if columns is None else list(columns))
    except FileNotFoundError:
        raise DataError("table not found", file=str(path)) from None
    except Exception as e:  # pyarrow's errors (ArrowInvalid, OSError, ...) do not name the file
        raise DataError(_damaged("table", path, e)) from None


def read_npy(path: str | os.PathLike, mmap_mode: str | None = "r") -> np.ndarray:
    """``np.load`` of an NPY artifact (memory-mapped by default) whose errors name the file."""
    from .errors import DataError

    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except FileNotFoundError:
        raise DataError("array file not found", file=str(path)) from None
    except (ValueError, OSError, EOFError) as e:
        raise DataError(_damaged("array file", path, e)) from None


def read_json(path: str | os.PathLike) -> Any:
    """A JSON artifact; a missing or damaged file is a DataError naming it."""
    from .errors import DataError

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError("JSON file not found", file=str(path)) from None
    except (ValueError, OSError) as e:
        raise DataError(_damaged("JSON file", path, e)) from None


def checksums_of(*paths: str | os.PathLike) -> dict[str, str]:
    """{file name: sha256} of the given artifacts, for ``write_parquet(..., checksums=...)``."""
    return {Path(p).name: file_sha256(p) for p in paths}


_VERIFIED: dict[tuple, bool] = {}  # (path, size, mtime, ctime, inode) of files whose checksum matched


def verify_checksum(path: str | os.PathLike, index: str | os.PathLike | None = None) -> None:
    """Check ``path`` against the sha256 recorded for it in its index table (default: the ``.parquet``
    beside it with the same stem). A file changed after it was written (zeroed, truncated, replaced,
    whatever its mtime says) is a MapError naming it; no index, or none recorded: nothing to check.
    A match is remembered for the file's current size, times and inode, so it is hashed once."""
    from .errors import MapError

    path = Path(path)
    index = path.with_suffix(".parquet") if index is None else Path(index)
    if not path.is_file() or not index.is_file() or index == path:
        return
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, str(index))
    if key in _VERIFIED:
        return
    raw = _schema_metadata(index).get(CHECKSUM_KEY.encode())
    expected = json.loads(raw).get(path.name) if raw else None
    if expected is None:
        return
    actual = file_sha256(path)
    if actual != expected:
        raise MapError(
            f"{path} does not match the sha256 recorded in {index} when it was written ({actual[:12]} != "
            f"{expected[:12]}): the file was damaged or replaced; delete it (and {index.name}) and rerun "
            "the step that makes it"
        )
    _VERIFIED[key] = True


def write_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any] | None = None) -> None:
    """Write a compressed NPZ atomically; ``meta`` goes into a ``__meta__`` JSON string entry."""
    payload = dict(arrays)
    if meta is not None:
        payload["__meta__"] = np.array(canonical_json(dict(meta)))
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **payload)


@contextlib.contextmanager
def _open_npz(path: str | os.PathLike) -> Iterator[Any]:
    """``np.load`` of an NPZ artifact; a missing or damaged file (also when an entry turns out damaged
    while it is read) is a MapError naming the file."""
    import zipfile
    import zlib

    from .errors import MapError

    verify_checksum(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            yield z
    except FileNotFoundError:
        raise MapError(f"map file not found: {path}") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError, json.JSONDecodeError) as e:
        raise MapError(
            f"map file {path} is damaged ({type(e).__name__}: {e}); delete it and rerun the step that makes it"
        ) from None


def _meta_of(z: Any) -> dict[str, Any]:
    return json.loads(str(z["__meta__"])) if "__meta__" in z.files else {}


def read_npz(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Arrays and metadata of an NPZ artifact; a missing or damaged file is a MapError naming it."""
    with _open_npz(path) as z:
        return {k: z[k] for k in z.files if k != "__meta__"}, _meta_of(z)


def read_npz_meta(path: str | os.PathLike) -> dict[str, Any]:
    """Only the metadata of an NPZ artifact (the maps are not read)."""
    with _open_npz(path) as z:
        return _meta_of(z)


def npz_entries(path: str | os.PathLike) -> list[str]:
    """The entry names of an NPZ artifact (nothing is decompressed), ``__meta__`` excluded."""
    with _open_npz(path) as z:
        return [k for k in z.files if k != "__meta__"]


def read_npz_members(path: str | os.PathLike, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Only the named arrays of an NPZ artifact: each member is decompressed on its own, so reading one
    pair's map costs one map's memory, whatever the file holds. A missing key is a MapError naming it."""
    from .errors import MapError

    with _open_npz(path) as z:
        missing = [k for k in keys if k not in set(z.files)]
        if missing:
            raise MapError(f"{path} has no entry for {missing[:5]}" + (" ..." if len(missing) > 5 else ""))
        return {k: z[k] for k in keys}


def write_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, array)
