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
refused, never written through.
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import csv
import hashlib
import logging
import netrc
import os
import stat
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import MatexError

log = logging.getLogger(__name__)

CHUNK = 1 << 16
SUMS_NAME = "SHA256SUMS.txt"
CACHE_DIR = ".matex_download"
USER_ENV, PASSWORD_ENV = "PHYSIONET_USERNAME", "PHYSIONET_PASSWORD"
TIMEOUT_S = 60


class DownloadError(MatexError):
    """A download failed: no credentials, refused credentials, HTTP error or checksum mismatch."""


@dataclass
class _Session:
    """What every request needs; ``secret`` is scrubbed from any text that leaves this module."""

    auth_header: str
    secret: str
    opener: urllib.request.OpenerDirector
    lock: threading.Lock = field(default_factory=threading.Lock)
    fetched: int = 0
    skipped: int = 0
    bytes: int = 0

    def scrub(self, text: str) -> str:
        out = str(text)
        for s in {self.secret, self.auth_header, self.auth_header.split(" ", 1)[-1]}:
            if s:
                out = out.replace(s, "***")
        return out


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


def _origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the scheme's default port filled in."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or {"https": 443, "http": 80}.get(parts.scheme.lower())
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


class _NoAuthOnRedirect(urllib.request.HTTPRedirectHandler):
    """urllib copies ordinary headers onto redirected requests; the Authorization header is added as
    an unredirected header, and this handler carries it over only when the redirect keeps the scheme,
    the host and the port (an https -> http redirect, or one to another host, drops it)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None:
            new.headers.pop("Authorization", None)
            new.unredirected_hdrs.pop("Authorization", None)
            if _origin(newurl) == _origin(req.full_url):
                auth = req.unredirected_hdrs.get("Authorization") or req.headers.get("Authorization")
                if auth:
                    new.add_unredirected_header("Authorization", auth)
        return new


def _session(user: str, pw: str) -> _Session:
    token = base64.b64encode(f"{user}:{pw}".encode()).decode("ascii")
    opener = urllib.request.build_opener(_NoAuthOnRedirect())
    return _Session(auth_header=f"Basic {token}", secret=pw, opener=opener)


def _public_url(url: str) -> str:
    """The URL without any userinfo (our URLs never carry it, but a user-given base_url might)."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _open(sess: _Session, url: str, offset: int = 0):
    req = urllib.request.Request(url)
    req.add_unredirected_header("Authorization", sess.auth_header)
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    try:
        return sess.opener.open(req, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 416:
            return e
        if e.code in (401, 403):
            raise DownloadError(
                f"PhysioNet refused the credentials (HTTP {e.code}) for {_public_url(url)}: check "
                f"the username/password and that the account has access to this project"
            ) from None
        raise DownloadError(sess.scrub(f"HTTP {e.code} {e.reason} for {_public_url(url)}")) from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(sess.scrub(f"cannot reach {_public_url(url)}: {reason}")) from None


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


def _project_sums(sess: _Session, base_url: str, project: str, dest_root: Path) -> dict[str, str]:
    cache = dest_root / CACHE_DIR / f"{project.replace('/', '_')}.{SUMS_NAME}"
    if not cache.is_file():
        _fetch(sess, f"{base_url}/{project}/{SUMS_NAME}", cache, expected=None, count=False)
    return parse_sha256sums(cache.read_text(encoding="utf-8", errors="replace"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------- fetch
def _open_part(part: Path, append: bool) -> Any:
    """The ``.part`` file for writing, never through a symbolic link: a link (or anything but a regular
    file) planted at that name is refused; a fresh part is created exclusively."""
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    try:
        if append:
            fd = os.open(part, os.O_WRONLY | os.O_APPEND | nofollow)
        else:
            if _is_plain_file(part):  # a stale part of ours: start again
                part.unlink()
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | nofollow, 0o666)
    except OSError as e:
        raise DownloadError(
            f"cannot write the partial download {part} ({e.strerror}): something other than a file matex "
            "wrote is at that name (a symbolic link?); remove it and run again"
        ) from None
    return os.fdopen(fd, "ab" if append else "wb")


def _is_plain_file(path: Path) -> bool:
    """A regular file, not a symbolic link to one."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _part_size(part: Path) -> int:
    """Bytes already in the part (0 when there is none); a link or other non-file is refused."""
    try:
        st = os.lstat(part)
    except FileNotFoundError:
        return 0
    if not stat.S_ISREG(st.st_mode):
        raise DownloadError(
            f"the partial download {part} is not a regular file (a symbolic link?); matex does not write "
            "through it: remove it and run again"
        )
    return st.st_size


def _receive(sess: _Session, resp: Any, part: Path, append: bool, url: str) -> None:
    """Stream the response into the part; a body shorter than its Content-Length is an error that
    leaves the part for the next run to resume."""
    announced = resp.headers.get("Content-Length") if getattr(resp, "headers", None) is not None else None
    got = 0
    with _open_part(part, append) as f:
        for block in iter(lambda r=resp: r.read(CHUNK), b""):
            f.write(block)
            got += len(block)
    with sess.lock:
        sess.bytes += got
    if announced is not None and announced.strip().isdigit() and got != int(announced):
        raise DownloadError(
            f"the download of {_public_url(url)} ended after {got} of {int(announced)} bytes; the partial "
            f"file {part} is kept and resumed on the next run"
        )


def _fetch(sess: _Session, url: str, dest: Path, expected: str | None, count: bool = True) -> None:
    """Download ``url`` to ``dest`` via ``dest.part`` (resumed with Range), verify ``expected``."""
    if dest.is_file():
        if expected is None or _sha256(dest) == expected:
            if count:
                with sess.lock:
                    sess.skipped += 1
            return
        log.warning("%s exists with the wrong checksum: downloading it again", dest)
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for _attempt in range(2):
        offset = _part_size(part)
        resp = _open(sess, url, offset)
        with resp:
            status = resp.status if hasattr(resp, "status") else resp.code
            if status == 416:  # nothing beyond offset: the part is complete, or stale
                if expected is not None and offset and _sha256(part) == expected:
                    break
                part.unlink(missing_ok=True)
                continue
            _receive(sess, resp, part, status == 206 and offset > 0, url)
        break
    else:
        raise DownloadError(f"the server refused to resume {_public_url(url)} (HTTP 416 twice)")
    if expected is not None:
        actual = _sha256(part)
        if actual != expected:
            bad = dest.with_name(dest.name + ".sha256-mismatch")
            os.replace(part, bad)
            raise DownloadError(
                f"checksum mismatch for {dest}: SHA256SUMS.txt says {expected}, the download has "
                f"{actual}; the file was moved to {bad}"
            )
    os.replace(part, dest)
    if count:
        with sess.lock:
            sess.fetched += 1
    log.debug("fetched %s", dest)


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
    sess = _session(user, pw)
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
    sess: _Session,
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
        _public_url(base_url),
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
    sess: _Session,
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
    log.info("fetching %s/%s/%s", _public_url(base_url), mscxr_project, csv_in_project)
    _fetch(sess, f"{base_url}/{mscxr_project}/{csv_in_project}", csv_path, csv_sums.get(csv_in_project))
    return csv_path


def _listed_image_sums(
    sess: _Session, dest_root: Path, base_url: str, images_project: str, images: list[str], csv_path: Path
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
    sess: _Session,
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
            pool.submit(_fetch, sess, f"{base_url}/{images_project}/{p}", dest_root / p, img_sums.get(p)): p
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
