"""PhysioNet download against a local, loopback-only fake PhysioNet (basic auth, Range, SHA256SUMS).

Nothing here contacts a non-loopback address: the server binds 127.0.0.1 on a free port."""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from matex.data.download import DownloadError, download_mscxr, parse_sha256sums, resolve_credentials

USER, PASSWORD = "tester", "s3cr3t-Pa55word-xyz"
MSCXR, MIMIC = "ms-cxr/1.1.0", "mimic-cxr-jpg/2.1.0"
CSV_IN_PROJECT, CSV_NAME = "MS_CXR_Local_Alignment_v1.1.0.csv", "MS_CXR_Local_Alignment_v1.0.0.csv"
IMAGES = [f"files/p1{k}/p1{k}000000/s5{k}000000/img{k}.jpg" for k in range(3)]


def _jpg_bytes(k: int) -> bytes:
    import io

    rng = np.random.default_rng(k)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (40 + k, 30), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def _sums(files: dict[str, bytes]) -> bytes:
    return "".join(f"{hashlib.sha256(b).hexdigest()} {p}\n" for p, b in sorted(files.items())).encode()


def make_tree(root: Path) -> dict[str, bytes]:
    """The fake PhysioNet tree: {url path: content}. The CSV references the 3 images (one twice)."""
    header = "dicom_id,category_name,label_text,path,x,y,w,h,image_width,image_height\n"
    rows = [f"img{k},Pneumonia,opacity {k},{p},1,2,10,10,30,{40 + k}\n" for k, p in enumerate(IMAGES)]
    rows.append(f"img0,Edema,edema,{IMAGES[0]},3,3,5,5,30,40\n")
    csv_bytes = (header + "".join(rows)).encode()
    mscxr = {CSV_IN_PROJECT: csv_bytes, "README.txt": b"readme\n"}
    mimic = {p: _jpg_bytes(k) for k, p in enumerate(IMAGES)}
    mimic["files/p99/p99000000/s59000000/unreferenced.jpg"] = _jpg_bytes(9)
    tree = {}
    for project, files in ((MSCXR, mscxr), (MIMIC, mimic)):
        for p, b in files.items():
            tree[f"/files/{project}/{p}"] = b
        tree[f"/files/{project}/SHA256SUMS.txt"] = _sums(files)
    return tree


class FakePhysioNet:
    def __init__(self, tree: dict[str, bytes]):
        self.tree = tree
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.auth_failures = 0
        self.redirects: dict[str, str] = {}  # path -> Location answered with 302
        self.truncate: set[str] = set()  # paths whose body stops halfway (Content-Length is the full one)
        self.auth_seen: list[str | None] = []  # the Authorization header of every request
        good = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                server.auth_seen.append(self.headers.get("Authorization"))
                if self.path in server.redirects:
                    self.send_response(302)
                    self.send_header("Location", server.redirects[self.path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.headers.get("Authorization") != good:
                    server.auth_failures += 1
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="PhysioNet"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = server.tree.get(self.path)
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes="):
                    start = int(rng[len("bytes=") :].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                    body = body[start:]
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if self.path in server.truncate else body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/files"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def image_requests(self) -> list[tuple[str, str | None]]:
        return [r for r in self.requests if r[0].endswith(".jpg")]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path, monkeypatch):
    for var in (
        "PHYSIONET_USERNAME",
        "PHYSIONET_PASSWORD",
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NETRC", str(tmp_path / "no-such-netrc"))  # never read the developer's ~/.netrc
    srv = FakePhysioNet(make_tree(tmp_path))
    yield srv
    srv.close()


def fetch(server, dest, **kw):
    kw.setdefault("username", USER)
    kw.setdefault("password", PASSWORD)
    kw.setdefault("progress", False)
    return download_mscxr(dest, base_url=server.base_url, workers=2, **kw)


def total_bytes(server) -> int:
    paths = [f"/files/{MIMIC}/{p}" for p in IMAGES] + [
        f"/files/{MSCXR}/{CSV_IN_PROJECT}",
        f"/files/{MSCXR}/SHA256SUMS.txt",
        f"/files/{MIMIC}/SHA256SUMS.txt",
    ]
    return sum(len(server.tree[p]) for p in paths)


def assert_tree_matches(server, dest: Path):
    assert (dest / CSV_NAME).read_bytes() == server.tree[f"/files/{MSCXR}/{CSV_IN_PROJECT}"]
    for p in IMAGES:
        assert (dest / p).read_bytes() == server.tree[f"/files/{MIMIC}/{p}"]
    assert not (dest / "files/p99").exists()  # only referenced images
    assert not list(dest.rglob("*.part"))


def assert_no_secret(dest: Path, *texts: str):
    for f in dest.rglob("*"):
        if f.is_file():
            assert PASSWORD.encode() not in f.read_bytes(), f
            assert base64.b64encode(f"{USER}:{PASSWORD}".encode()) not in f.read_bytes(), f
    for t in texts:
        assert PASSWORD not in t


def test_full_download_then_rerun_skips_everything(server, tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    dest = tmp_path / "dest"
    summary = fetch(server, dest, progress=True)
    assert summary["fetched"] == 4 and summary["skipped"] == 0 and summary["images"] == 3
    assert summary["bytes"] == total_bytes(server)  # the CSV, the 3 images and both SHA256SUMS.txt
    assert_tree_matches(server, dest)
    n_requests = len(server.requests)
    again = fetch(server, dest)
    assert again["fetched"] == 0 and again["skipped"] == 4 and again["bytes"] == 0
    assert len(server.requests) == n_requests  # checksums cached, every file verified locally
    out, err = capfd.readouterr()
    assert_no_secret(dest, caplog.text, out, err, repr(summary))


def test_resume_from_truncated_part_uses_range(server, tmp_path):
    dest = tmp_path / "dest"
    target = IMAGES[1]
    full = server.tree[f"/files/{MIMIC}/{target}"]
    part = dest / (target + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(full[: len(full) // 3])
    summary = fetch(server, dest)
    assert (dest / target).read_bytes() == full and not part.exists()
    ranged = [r for r in server.image_requests() if r[0].endswith(target)]
    assert ranged == [(f"/files/{MIMIC}/{target}", f"bytes={len(full) // 3}-")]
    assert summary["bytes"] == total_bytes(server) - len(full) // 3
    assert_tree_matches(server, dest)


def test_complete_part_and_corrupt_existing_file_recover(server, tmp_path):
    dest = tmp_path / "dest"
    fetch(server, dest)
    (dest / IMAGES[0]).write_bytes(b"damaged")  # a corrupted finished file is fetched again
    full = server.tree[f"/files/{MIMIC}/{IMAGES[2]}"]
    (dest / IMAGES[2]).unlink()
    (dest / (IMAGES[2] + ".part")).write_bytes(full)  # a complete part: the server answers 416
    summary = fetch(server, dest)
    assert summary["fetched"] == 2 and summary["skipped"] == 2
    assert_tree_matches(server, dest)


def test_wrong_password_is_a_clear_error_without_the_secret(server, tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-" + PASSWORD
    with pytest.raises(DownloadError) as e:
        fetch(server, tmp_path / "dest", password=wrong)
    msg = str(e.value)
    assert "401" in msg and "credentials" in msg
    out, err = capfd.readouterr()
    for text in (msg, caplog.text, out, err):
        assert wrong not in text and PASSWORD not in text
    exc: BaseException | None = e.value  # nor anywhere in the exception chain a traceback would print
    while exc is not None:
        assert wrong not in repr(exc) and wrong not in str(exc)
        exc = exc.__cause__ or exc.__context__


def test_checksum_mismatch_names_the_file_and_quarantines_it(server, tmp_path):
    dest = tmp_path / "dest"
    bad = IMAGES[2]
    server.tree[f"/files/{MIMIC}/{bad}"] = b"tampered" + server.tree[f"/files/{MIMIC}/{bad}"]
    with pytest.raises(DownloadError) as e:
        fetch(server, dest)
    assert str(dest / bad) in str(e.value) and "checksum mismatch" in str(e.value)
    assert not (dest / bad).exists() and not (dest / (bad + ".part")).exists()
    assert (dest / (bad + ".sha256-mismatch")).exists()


def test_credentials_from_environment(server, tmp_path, monkeypatch):
    monkeypatch.setenv("PHYSIONET_USERNAME", USER)
    monkeypatch.setenv("PHYSIONET_PASSWORD", PASSWORD)
    summary = download_mscxr(tmp_path / "dest", base_url=server.base_url, progress=False)
    assert summary["fetched"] == 4
    assert_tree_matches(server, tmp_path / "dest")


def test_credentials_from_netrc(server, tmp_path, monkeypatch):
    netrc_file = tmp_path / "my-netrc"
    netrc_file.write_text(
        f"machine example.org login other password nope\nmachine 127.0.0.1 login {USER} password {PASSWORD}\n"
    )
    netrc_file.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc_file))
    summary = download_mscxr(tmp_path / "dest", base_url=server.base_url, progress=False)
    assert summary["fetched"] == 4
    assert resolve_credentials(server.base_url) == (USER, PASSWORD)
    assert_no_secret(tmp_path / "dest")


def test_missing_credentials_explain_how_to_provide_them(server, tmp_path):
    with pytest.raises(DownloadError) as e:
        download_mscxr(tmp_path / "dest", base_url=server.base_url, progress=False)
    msg = str(e.value)
    assert "PHYSIONET_USERNAME" in msg and "PHYSIONET_PASSWORD" in msg and "netrc" in msg
    assert server.requests == []  # failed before any request


def test_parse_sha256sums_format():
    text = f"{'a' * 64} files/p10/x.jpg\n{'B' * 64}  README\n\nnot a line\n"
    assert parse_sha256sums(text) == {"files/p10/x.jpg": "a" * 64, "README": "b" * 64}


def test_pipeline_download_never_writes_the_password(server, tmp_path, monkeypatch):
    """The download and prepare rules run by Snakemake against the local server, credentials from the
    environment: no file the run leaves (data, results, logs, benchmarks, Snakemake's metadata)
    contains the password, in clear or base64 (as in an Authorization header)."""
    import subprocess
    import sys

    import yaml

    root = Path(__file__).resolve().parents[1]
    from matex.config import load_config

    cfg = load_config(root / "config" / "mscxr.yaml")  # the overlay merged onto config/config.yaml
    cfg["data"]["mscxr"]["root"] = str(tmp_path / "data" / "mscxr")
    cfg["data"]["mscxr"]["download"].update(base_url=server.base_url, workers=2)
    cfg["results_dir"] = str(tmp_path / "results")
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("PHYSIONET_USERNAME", USER)
    monkeypatch.setenv("PHYSIONET_PASSWORD", PASSWORD)
    pairs = tmp_path / "results" / cfg["dataset"] / "pairs.parquet"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--configfile",
            str(cfg_path),
            "--cores",
            "1",
            "-d",
            str(tmp_path),
            str(pairs),
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert pairs.exists() and (tmp_path / "data" / "mscxr" / IMAGES[0]).exists()
    encoded = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    files = [f for f in tmp_path.rglob("*") if f.is_file() and f != cfg_path]
    assert any(".snakemake" in f.parts for f in files) and any(f.suffix == ".log" for f in files)
    for f in files:
        data = f.read_bytes()
        assert PASSWORD.encode() not in data and encoded.encode() not in data, f
    for text in (res.stdout, res.stderr):
        assert PASSWORD not in text and encoded not in text


# ------------------------------------------------------------------------- download hardening
def test_netrc_readable_by_others_is_warned_about(server, tmp_path, monkeypatch, caplog):
    netrc_file = tmp_path / "my-netrc"
    netrc_file.write_text(f"machine 127.0.0.1 login {USER} password {PASSWORD}\n")
    monkeypatch.setenv("NETRC", str(netrc_file))
    netrc_file.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="matex.data.download"):
        assert resolve_credentials(server.base_url) == (USER, PASSWORD)
    assert "readable by other users" in caplog.text and "chmod 600" in caplog.text and PASSWORD not in caplog.text
    caplog.clear()
    netrc_file.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="matex.data.download"):
        resolve_credentials(server.base_url)
    assert "readable by other users" not in caplog.text


def test_redirect_to_another_origin_drops_the_credentials(server, tmp_path):
    """A redirect to another port of the same host (another origin) reaches the second server
    without the Authorization header; the first server still got it."""
    other = FakePhysioNet(dict(server.tree))
    try:
        csv_url = f"/files/{MSCXR}/{CSV_IN_PROJECT}"
        server.redirects[csv_url] = other.base_url.rsplit("/files", 1)[0] + csv_url
        with pytest.raises(DownloadError, match="401"):  # the other origin asks for credentials
            fetch(server, tmp_path / "dest")
        assert other.requests and all(a is None for a in other.auth_seen)
        assert server.auth_seen and server.auth_seen[0] is not None
    finally:
        other.close()


def test_https_to_http_redirect_on_the_same_host_drops_the_credentials():
    import urllib.request

    from matex.data.download import _NoAuthOnRedirect

    handler = _NoAuthOnRedirect()
    for target, kept in (
        ("http://physionet.org/files/x", False),
        ("https://physionet.org:8443/files/x", False),
        ("https://mirror.example/files/x", False),
        ("https://physionet.org/files/y", True),
    ):
        req = urllib.request.Request("https://physionet.org/files/x")
        req.add_unredirected_header("Authorization", "Basic abc")
        new = handler.redirect_request(req, None, 302, "Found", {}, target)
        assert (new.get_header("Authorization") == "Basic abc") is kept, target


def test_symlink_planted_at_the_part_name_is_never_written_through(server, tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (dest / (CSV_NAME + ".part")).symlink_to(victim)
    with pytest.raises(DownloadError) as e:
        fetch(server, dest)
    assert str(dest / (CSV_NAME + ".part")) in str(e.value) and "symbolic link" in str(e.value)
    assert victim.read_text() == "precious\n"
    assert not (dest / CSV_NAME).exists()


def test_truncated_transfer_never_lands_under_the_final_name_and_resumes(server, tmp_path):
    dest = tmp_path / "dest"
    csv_url = f"/files/{MSCXR}/{CSV_IN_PROJECT}"
    full = server.tree[csv_url]
    server.truncate.add(csv_url)
    with pytest.raises(DownloadError) as e:
        fetch(server, dest, verify_sha256=False)
    assert f"ended after {len(full) // 2} of {len(full)} bytes" in str(e.value)
    assert not (dest / CSV_NAME).exists()  # the truncated CSV is not left as the CSV
    assert (dest / (CSV_NAME + ".part")).read_bytes() == full[: len(full) // 2]
    server.truncate.clear()
    summary = fetch(server, dest, verify_sha256=False)
    assert (dest / CSV_NAME).read_bytes() == full and summary["images"] == 3
    assert (csv_url, f"bytes={len(full) // 2}-") in server.requests  # resumed, not restarted
