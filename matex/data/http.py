"""The HTTP side of the PhysioNet download: an authenticated session whose ``Authorization`` header
survives a redirect only to the same scheme, host and port, URLs without userinfo in messages, and a
resumable, checksum-verified fetch of one file through ``<file>.part`` (opened without following
symbolic links). :mod:`matex.data.download` decides what to fetch.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import stat
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MatexError

log = logging.getLogger(__name__)

CHUNK = 1 << 16
TIMEOUT_S = 60


class DownloadError(MatexError):
    """A download failed: no credentials, refused credentials, HTTP error or checksum mismatch."""


@dataclass
class Session:
    """What every request needs; ``secret`` is scrubbed from any text that leaves the download."""

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


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the scheme's default port filled in."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or {"https": 443, "http": 80}.get(parts.scheme.lower())
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


class NoAuthOnRedirect(urllib.request.HTTPRedirectHandler):
    """urllib copies ordinary headers onto redirected requests; the Authorization header is added as
    an unredirected header, and this handler carries it over only when the redirect keeps the scheme,
    the host and the port (an https -> http redirect, or one to another host, drops it)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None:
            new.headers.pop("Authorization", None)
            new.unredirected_hdrs.pop("Authorization", None)
            if origin(newurl) == origin(req.full_url):
                auth = req.unredirected_hdrs.get("Authorization") or req.headers.get("Authorization")
                if auth:
                    new.add_unredirected_header("Authorization", auth)
        return new


def new_session(user: str, pw: str) -> Session:
    """A session sending HTTP basic auth for ``user``, with the redirect rule above."""
    token = base64.b64encode(f"{user}:{pw}".encode()).decode("ascii")
    opener = urllib.request.build_opener(NoAuthOnRedirect())
    return Session(auth_header=f"Basic {token}", secret=pw, opener=opener)


def public_url(url: str) -> str:
    """The URL without any userinfo (our URLs never carry it, but a user-given base_url might)."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def open_url(sess: Session, url: str, offset: int = 0):
    """The response for ``url`` from byte ``offset`` (a 416 is returned, not raised); refused
    credentials and other failures raise DownloadError without the secret."""
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
                f"PhysioNet refused the credentials (HTTP {e.code}) for {public_url(url)}: check "
                f"the username/password and that the account has access to this project"
            ) from None
        raise DownloadError(sess.scrub(f"HTTP {e.code} {e.reason} for {public_url(url)}")) from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(sess.scrub(f"cannot reach {public_url(url)}: {reason}")) from None


def sha256_file(path: Path) -> str:
    """The file's SHA-256 (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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


def _receive(sess: Session, resp: Any, part: Path, append: bool, url: str) -> None:
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
            f"the download of {public_url(url)} ended after {got} of {int(announced)} bytes; the partial "
            f"file {part} is kept and resumed on the next run"
        )


def fetch(sess: Session, url: str, dest: Path, expected: str | None, count: bool = True) -> None:
    """Download ``url`` to ``dest`` via ``dest.part`` (resumed with Range), verify ``expected``."""
    if dest.is_file():
        if expected is None or sha256_file(dest) == expected:
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
        resp = open_url(sess, url, offset)
        with resp:
            status = resp.status if hasattr(resp, "status") else resp.code
            if status == 416:  # nothing beyond offset: the part is complete, or stale
                if expected is not None and offset and sha256_file(part) == expected:
                    break
                part.unlink(missing_ok=True)
                continue
            _receive(sess, resp, part, status == 206 and offset > 0, url)
        break
    else:
        raise DownloadError(f"the server refused to resume {public_url(url)} (HTTP 416 twice)")
    if expected is not None:
        actual = sha256_file(part)
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
