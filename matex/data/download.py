"""Download MS-CXR and only the MIMIC-CXR-JPG images it references from PhysioNet.

Both projects are credentialed: HTTP basic auth with the user's PhysioNet account, taken from the
arguments, else ``PHYSIONET_USERNAME`` / ``PHYSIONET_PASSWORD``, else ``~/.netrc`` (or the file named
by ``NETRC``) for the host of ``base_url``. The password travels only in an ``Authorization`` header
that is never forwarded on a redirect to another scheme, host or port (an https -> http redirect
on the same host loses it too), and never appears in a log line, a file or an error message. A netrc
file that other users can read is used, with a warning to ``chmod 600`` it.

Integrity and resumption: each project's ``SHA256SUMS.txt`` (``<sha256> <relative path>`` per line)
is fetched once and cached under ``dest_root/.matex_download/``; a file already present with the
right checksum is skipped; a partial download lives in ``<file>.part`` and resumes with an HTTP Range
request; a finished file is checked and then renamed into place atomically. A checksum mismatch moves
the file to ``<file>.sha256-mismatch`` and raises an error naming it. A transfer that ends before the
length the server announced stays ``<file>.part`` (never under the final name) and the error says so.
The ``.part`` file is opened without following symbolic links: a link planted at that name is
refused, never written through. The transport (session, redirects, resumable fetch) is
:mod:`matex.data.http`.
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import logging
import netrc
import os
import stat
import urllib.parse
from pathlib import Path, PurePosixPath
from typing import Any

from .http import DownloadError as DownloadError  # raised by the whole download; importable here
from .http import NoAuthOnRedirect as _NoAuthOnRedirect  # noqa: F401 (importable here, as before)
from .http import Session, fetch, new_session, public_url

log = logging.getLogger(__name__)

SUMS_NAME = "SHA256SUMS.txt"
CACHE_DIR = ".matex_download"
USER_ENV, PASSWORD_ENV = "PHYSIONET_USERNAME", "PHYSIONET_PASSWORD"


# ---------------------------------------------------------------------------------- credentials
def resolve_credentials(base_url: str, username: str | None = None, password: str | None = None) -> tuple[str, str]:
    """(username, password) from the arguments, else the environment, else the netrc entry for the
    host of ``base_url``. Raises DownloadError explaining the three ways when none is found."""
    user = username or os.environ.get(USER_ENV) or None
    pw = password or os.environ.get(PASSWORD_ENV) or None
    host = urllib.parse.urlsplit(base_url).hostname or ""
    if user is None or pw is None:
        netrc_path = Path(os.environ.get("NETRC") or Path.home() / ".netrc")
        if netrc_path.is_file():
            _warn_if_readable(netrc_path)
            try:
                entry = netrc.netrc(str(netrc_path)).authenticators(host)
            except (netrc.NetrcParseError, OSError) as e:
                raise DownloadError(
                    f"cannot parse the netrc file {netrc_path} (line {getattr(e, 'lineno', '?')})"
                ) from None
            if entry is not None:
                login, _, secret = entry
                if user is None or user == login:
                    user, pw = user or login, pw or secret
    if not user or not pw:
        raise DownloadError(
            f"no PhysioNet credentials for {host}: MS-CXR and MIMIC-CXR-JPG are credentialed datasets. "
            f"Provide them as username/password arguments, as the environment variables {USER_ENV} and "
            f"{PASSWORD_ENV}, or as a netrc entry 'machine {host} login <user> password <password>' in "
            f"~/.netrc (or the file named by NETRC, mode 600). Your PhysioNet account must have signed "
            f"the data use agreements of both projects."
        )
    return user, pw


def _warn_if_readable(path: Path) -> None:
    """Warn when the netrc file holding the password can be read or written by other users."""
    mode = path.stat().st_mode
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "%s is readable by other users (mode %s): it holds your PhysioNet password; run chmod 600 %s",
            path,
            oct(stat.S_IMODE(mode)),
            path,
        )


# ------------------------------------------------------------------------------------ checksums
def parse_sha256sums(text: str) -> dict[str, str]:
    """``{relative path: sha256}`` from PhysioNet's SHA256SUMS.txt (``<sha256> <path>`` per line)."""
    sums = {}
    for line in text.splitlines():
        parts = line.strip().split(maxsplit=1)
        if len(parts) != 2 or len(parts[0]) != 64:
            continue
        path = parts[1].strip().lstrip("*")
        if path.startswith("./"):
            path = path[2:]
        sums[path] = parts[0].lower()
    return sums


def _project_sums(sess: Session, base_url: str, project: str, dest_root: Path) -> dict[str, str]:
    cache = dest_root / CACHE_DIR / f"{project.replace('/', '_')}.{SUMS_NAME}"
    if not cache.is_file():
        fetch(sess, f"{base_url}/{project}/{SUMS_NAME}", cache, expected=None, count=False)
    return parse_sha256sums(cache.read_text(encoding="utf-8", errors="replace"))


def _safe_relative(path: str, where: str) -> str:
    p = PurePosixPath(path.strip())
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise DownloadError(f"unsafe image path {path!r} in {where}: paths must be relative to the project")
    return str(p)


def referenced_images(csv_path: str | Path) -> list[str]:
    """The distinct image paths (the ``path`` column) an MS-CXR CSV references, sorted."""
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if "path" not in (reader.fieldnames or []):
            raise DownloadError(f"{csv_path} has no 'path' column (columns: {reader.fieldnames})")
        return sorted({_safe_relative(r["path"], str(csv_path)) for r in reader if (r.get("path") or "").strip()})


# ---------------------------------------------------------------------------------- public entry
def download_mscxr(
    dest_root: str | Path,
    *,
    base_url: str = "https://physionet.org/files",
    mscxr_project: str = "ms-cxr/1.1.0",
    csv_in_project: str = "MS_CXR_Local_Alignment_v1.1.0.csv",
    csv_name: str = "MS_CXR_Local_Alignment_v1.0.0.csv",
    images_project: str = "mimic-cxr-jpg/2.1.0",
    verify_sha256: bool = True,
    workers: int = 4,
    username: str | None = None,
    password: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fetch the MS-CXR CSV to ``dest_root/csv_name`` and the MIMIC-CXR-JPG images it references to
    ``dest_root/<path>``. Returns ``{"csv", "images", "fetched", "skipped", "bytes"}``: the CSV's
    path, the number of referenced images, files (CSV + images) downloaded now, files already complete
    (skipped), and bytes transferred (checksum lists included)."""
    dest_root = Path(dest_root)
    base_url = base_url.rstrip("/")
    user, pw = resolve_credentials(base_url, username, password)
    sess = new_session(user, pw)
    try:
        return _download(
            sess,
            dest_root,
            base_url,
            mscxr_project,
            csv_in_project,
            csv_name,
            images_project,
            verify_sha256,
            max(1, int(workers)),
            progress,
        )
    except DownloadError as e:
        raise DownloadError(sess.scrub(str(e))) from None
    except Exception as e:  # never let a stray message carry the secret
        raise DownloadError(sess.scrub(f"download failed: {type(e).__name__}: {e}")) from None


def _download(
    sess: Session,
    dest_root: Path,
    base_url: str,
    mscxr_project: str,
    csv_in_project: str,
    csv_name: str,
    images_project: str,
    verify: bool,
    workers: int,
    progress: bool,
) -> dict[str, Any]:
    """:func:`download_mscxr`'s work, in order: the CSV, the checksum list of the images, the images."""
    dest_root.mkdir(parents=True, exist_ok=True)
    csv_path = _fetch_csv(sess, dest_root, base_url, mscxr_project, csv_in_project, csv_name, verify)
    images = referenced_images(csv_path)
    img_sums = _listed_image_sums(sess, dest_root, base_url, images_project, images, csv_path) if verify else {}
    log.info(
        "fetching %d referenced images from %s/%s with %d workers",
        len(images),
        public_url(base_url),
        images_project,
        workers,
    )
    _fetch_images(sess, dest_root, base_url, images_project, images, img_sums, workers, progress)
    summary = {
        "csv": str(csv_path),
        "images": len(images),
        "fetched": sess.fetched,
        "skipped": sess.skipped,
        "bytes": sess.bytes,
    }
    log.info("download finished: %s", summary)
    return summary


def _fetch_csv(
    sess: Session,
    dest_root: Path,
    base_url: str,
    mscxr_project: str,
    csv_in_project: str,
    csv_name: str,
    verify: bool,
) -> Path:
    """Fetch the MS-CXR CSV to ``dest_root/csv_name`` (checked against the project's checksum list
    when ``verify``); its path."""
    csv_sums = _project_sums(sess, base_url, mscxr_project, dest_root) if verify else {}
    if verify and csv_in_project not in csv_sums:
        raise DownloadError(f"{csv_in_project} is not listed in {base_url}/{mscxr_project}/{SUMS_NAME}")
    csv_path = dest_root / csv_name
    log.info("fetching %s/%s/%s", public_url(base_url), mscxr_project, csv_in_project)
    fetch(sess, f"{base_url}/{mscxr_project}/{csv_in_project}", csv_path, csv_sums.get(csv_in_project))
    return csv_path


def _listed_image_sums(
    sess: Session, dest_root: Path, base_url: str, images_project: str, images: list[str], csv_path: Path
) -> dict[str, str]:
    """The images project's checksums; every image the CSV references must be listed."""
    img_sums = _project_sums(sess, base_url, images_project, dest_root)
    unlisted = [p for p in images if p not in img_sums]
    if unlisted:
        raise DownloadError(
            f"{len(unlisted)} image(s) referenced by {csv_path} are not listed in "
            f"{base_url}/{images_project}/{SUMS_NAME}, e.g. {unlisted[0]}"
        )
    return img_sums


def _fetch_images(
    sess: Session,
    dest_root: Path,
    base_url: str,
    images_project: str,
    images: list[str],
    img_sums: dict[str, str],
    workers: int,
    progress: bool,
) -> None:
    """Fetch every image to ``dest_root/<path>`` in ``workers`` threads; the first failure stops the
    run (finished files stay for the next resume)."""
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(images), desc="MIMIC-CXR-JPG images", unit="file")
    pool = cf.ThreadPoolExecutor(max_workers=workers)
    try:
        futures = {
            pool.submit(fetch, sess, f"{base_url}/{images_project}/{p}", dest_root / p, img_sums.get(p)): p
            for p in images
        }
        for fut in cf.as_completed(futures):
            fut.result()  # the first failure stops the run; finished files stay for the next resume
            if bar is not None:
                bar.update(1)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()
