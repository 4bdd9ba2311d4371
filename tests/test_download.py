"""Download, verification, caching and safe extraction, all offline.

A threaded HTTP server on 127.0.0.1 (ephemeral port) serves archives the tests
build in the real DAGM layouts; it counts requests and can misbehave on demand
(404, a body shorter than its Content-Length).
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import socket
import stat
import subprocess
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dagm_helpers.data import download as dl
from dagm_helpers.data.download import (
    MAX_EXTRACT_BYTES,
    ArchiveSource,
    download,
    is_extracted,
    safe_extract,
)
from dagm_helpers.errors import ArchiveError, ChecksumError, ConfigError, DownloadError

# ----------------------------------------------------------------------------- archive builders


def _png(value: int = 128, size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def official_files(class_id: int, prefix: str = "") -> dict[str, bytes]:
    """ClassN/{Train,Test}/NNNN.PNG + Label/Labels.txt + one mask per split (real naming)."""
    files: dict[str, bytes] = {}
    for split, first in (("Train", 576), ("Test", 1)):
        ids = [f"{first + k:04d}" for k in range(3)]
        base = f"{prefix}Class{class_id}/{split}"
        rows = ["1"]
        for k, i in enumerate(ids):
            files[f"{base}/{i}.PNG"] = _png(40 * (k + 1))
            if k == 1:
                files[f"{base}/Label/{i}_label.PNG"] = _png(255)
                rows.append(f"{i}\t1\t{i}.PNG\t0\t{i}_label.PNG")
            else:  # as shipped: defect-free rows end in a trailing tab
                rows.append(f"{i}\t0\t{i}.PNG\t0\t0\t")
        files[f"{base}/Label/Labels.txt"] = ("\n".join(rows) + "\n").encode()
    return files


def dev_files(class_id: int) -> dict[str, bytes]:
    files = {f"Class{class_id}_def/{i}.png": _png(10 * i) for i in range(1, 4)}
    files[f"Class{class_id}_def/labels.txt"] = b"".join(
        f"{i}\t20.5\t10.25\t0.5\t100.0\t200.0\n".encode() for i in range(1, 4)
    )
    return files


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------- local HTTP server


class Server:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.truncate: set[str] = set()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                name = self.path.lstrip("/").split("?")[0]
                outer.requests.append(name)
                body = outer.files.get(name)
                if body is None:
                    self.send_error(404, "not found")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if name in outer.truncate:
                    # promise the whole file, send half of it, hang up
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

            def log_message(self, *args) -> None:  # keep the test output clean
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def count(self, name: str) -> int:
        return self.requests.count(name)


@pytest.fixture
def server():
    srv = Server()
    srv.thread.start()
    try:
        yield srv
    finally:
        srv.httpd.shutdown()
        srv.httpd.server_close()
        srv.thread.join(timeout=5)


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    """A private DAGM_HOME per test, no mirror from the environment."""
    h = tmp_path / "home"
    monkeypatch.setenv("DAGM_HOME", str(h))
    monkeypatch.delenv("DAGM_MIRROR", raising=False)
    return h


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def source(server: Server, name: str, class_id: int = 1, **kw) -> ArchiveSource:
    return ArchiveSource(name=name, class_id=class_id, url=f"{server.url}/{name}", **kw)


def cache_files(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


# ----------------------------------------------------------------------------- the source table


def test_sources_table_points_at_the_official_homes_and_invents_no_checksum():
    zen = dl.SOURCES["zenodo"]
    assert [s.class_id for s in zen] == list(range(1, 11))
    assert zen[0].url == "https://zenodo.org/records/8086136/files/Class1.zip"
    assert all(s.doi == "10.5281/zenodo.8086136" and s.origin for s in zen)
    dev = dl.SOURCES["dev"]
    assert [s.name for s in dev] == [f"Class{i}_def.zip" for i in range(1, 7)]
    assert dev[0].url == "https://resources.mpi-inf.mpg.de/conference/dagm/2007/Class1_def.zip"
    # nothing was published that we could check: no checksum or size is made up
    assert all(s.md5 is None and s.size is None for s in zen + dev)
    assert MAX_EXTRACT_BYTES == 4 * 1024**3


def test_resolve_sources_validates_and_applies_the_mirror(monkeypatch):
    with pytest.raises(ConfigError, match="1-10"):
        dl.resolve_sources([0, 3])
    with pytest.raises(ConfigError, match="classes 1-6"):
        dl.resolve_sources([7], "dev")
    with pytest.raises(ConfigError, match="unknown download source"):
        dl.resolve_sources([1], "kaggle")
    monkeypatch.setenv("DAGM_MIRROR", "http://mirror.example/dagm/")
    (s,) = dl.resolve_sources([3])
    assert s.url == "http://mirror.example/dagm/Class3.zip" and s.doi is None


# ----------------------------------------------------------------------------- download


def test_download_unpacks_official_layout_and_never_downloads_twice(server, tmp_path, home):
    data = zip_bytes(official_files(1))
    server.files["Class1.zip"] = data
    dest = tmp_path / "dagm"
    src = source(server, "Class1.zip", md5=md5(data), size=len(data))

    root = download(dest, classes=[1], sources=[src], progress=False)

    assert root == dest
    assert (dest / "Class1/Train/0576.PNG").read_bytes() == official_files(1)["Class1/Train/0576.PNG"]
    assert (dest / "Class1/Test/Label/0002_label.PNG").is_file()
    assert (dest / "Class1/Train/Label/Labels.txt").read_text().startswith("1\n")
    assert is_extracted(dest, src)
    cache = home / "downloads" / "zenodo"
    assert (cache / "Class1.zip").read_bytes() == data
    assert server.count("Class1.zip") == 1
    registry = json.loads((cache / "known_hashes.json").read_text())
    assert registry[src.url]["sha256"] == sha256(data)

    # already unpacked: no request at all
    download(dest, classes=[1], sources=[src], progress=False)
    assert server.count("Class1.zip") == 1
    # unpacked folder gone but archive cached and verified: unpack again, no request
    import shutil

    shutil.rmtree(dest)
    download(dest, classes=[1], sources=[src], progress=False)
    assert server.count("Class1.zip") == 1
    assert (dest / "Class1/Train/0577.PNG").is_file()
    # no temporary folders left behind
    assert sorted(p.name for p in dest.iterdir()) == [".dagm-extracted", "Class1"]


def test_mirror_env_downloads_with_the_default_table_and_records_sha256(server, tmp_path, home, monkeypatch):
    data = zip_bytes(official_files(2))
    server.files["Class2.zip"] = data
    monkeypatch.setenv("DAGM_MIRROR", server.url)
    root = download(tmp_path / "d", classes=[2], progress=False)
    assert (root / "Class2/Train/0578.PNG").is_file()
    registry = json.loads((home / "downloads/zenodo/known_hashes.json").read_text())
    entry = registry[f"{server.url}/Class2.zip"]
    assert entry["sha256"] == sha256(data) and entry["size"] == len(data)
    assert entry["verified_by"] == "archive CRCs"


def test_nested_mirror_layout_is_flattened(server, tmp_path):
    server.files["Class3.zip"] = zip_bytes(official_files(3, prefix="Class3/"))
    root = download(tmp_path / "d", classes=[3], sources=[source(server, "Class3.zip", 3)], progress=False)
    assert (root / "Class3/Train/0576.PNG").is_file()
    assert not (root / "Class3/Class3").exists()


def test_wrapper_folder_of_a_mirror_is_looked_through(server, tmp_path):
    files = {**official_files(6, prefix="DAGM_KaggleUpload/"), "DAGM_KaggleUpload/Class6/Thumbs.db": b"junk"}
    server.files["Class6.zip"] = zip_bytes(files)
    root = download(tmp_path / "d", classes=[6], sources=[source(server, "Class6.zip", 6)], progress=False)
    assert (root / "Class6/Train/0576.PNG").is_file()
    assert sorted(p.name for p in root.iterdir()) == [".dagm-extracted", "Class6"]


def test_unverifiable_cached_file_is_tested_before_use(server, tmp_path, home):
    data = zip_bytes(official_files(1))
    server.files["Class1.zip"] = data
    cache = home / "downloads/zenodo"
    cache.mkdir(parents=True)
    (cache / "Class1.zip").write_bytes(data[: len(data) // 2])  # a half file put there by hand
    download(tmp_path / "d", classes=[1], sources=[source(server, "Class1.zip")], progress=False)
    assert server.count("Class1.zip") == 1  # the broken copy was replaced by a download
    assert (cache / "Class1.zip").read_bytes() == data


def test_archive_without_class_folder_is_wrapped(server, tmp_path):
    files = {k.split("/", 1)[1]: v for k, v in official_files(4).items()}  # Train/..., Test/...
    server.files["Class4.zip"] = zip_bytes(files)
    root = download(tmp_path / "d", classes=[4], sources=[source(server, "Class4.zip", 4)], progress=False)
    assert (root / "Class4/Test/0001.PNG").is_file()


def test_dev_archive_download_and_extraction(server, tmp_path, home, monkeypatch, capsys):
    server.files["Class1_def.zip"] = zip_bytes(dev_files(1))
    monkeypatch.setenv("DAGM_MIRROR", server.url)
    root = download(tmp_path / "d", classes=[1], source="dev", progress=True)
    err = capsys.readouterr().err
    assert f"downloading Class1_def.zip from {server.url}/Class1_def.zip" in err and "unpacked into" in err
    assert sorted(p.name for p in (root / "Class1_def").iterdir()) == [
        "1.png",
        "2.png",
        "3.png",
        "labels.txt",
    ]
    assert (root / "Class1_def/labels.txt").read_text().splitlines()[0].split("\t")[1] == "20.5"
    assert (home / "downloads/dev/Class1_def.zip").is_file()


def test_archive_with_no_dagm_data_is_an_error_and_not_kept(server, tmp_path, home, monkeypatch):
    """An empty zip put in the cache by hand, then a served archive of something else: each is an
    error naming the archive, nothing is marked complete, the cached file and its hash entry go."""
    cache = home / "downloads/dev"
    cache.mkdir(parents=True)
    (cache / "Class1_def.zip").write_bytes(zip_bytes({}))  # the reproduction: an empty zip
    monkeypatch.setenv("DAGM_MIRROR", server.url)
    server.files["Class1_def.zip"] = zip_bytes({"notes/readme.txt": b"hello", "photo.jpg": b"x"})
    root = tmp_path / "d"
    for _ in range(2):  # the empty cached copy, then the served one: refused the same way
        with pytest.raises(ArchiveError, match="unpacks to no DAGM data") as exc:
            download(root, classes=[1], source="dev", progress=False)
        msg = str(exc.value)
        assert "Class1_def.zip" in msg and "not marked complete" in msg and "deleted" in msg
        assert not is_extracted(root, dl.SOURCES["dev"][0].with_base_url(server.url))
        assert not (cache / "Class1_def.zip").exists()
        registry = cache / dl.REGISTRY_NAME
        assert not registry.exists() or f"{server.url}/Class1_def.zip" not in json.loads(registry.read_text())
    assert server.count("Class1_def.zip") == 1  # the rerun downloaded instead of trusting the cache
    server.files["Class1_def.zip"] = zip_bytes(dev_files(1))  # the real thing now works
    assert (download(root, classes=[1], source="dev", progress=False) / "Class1_def/1.png").is_file()
    assert server.count("Class1_def.zip") == 2


def test_checksum_mismatch_deletes_the_file_and_says_so(server, tmp_path, home):
    server.files["Class1.zip"] = zip_bytes(official_files(1))
    src = source(server, "Class1.zip", md5="0" * 32)
    with pytest.raises(ChecksumError, match="checksum") as exc:
        download(tmp_path / "d", classes=[1], sources=[src], progress=False)
    msg = str(exc.value)
    assert src.url in msg and "deleted" in msg and "DAGM_DIR" in msg
    cache = home / "downloads/zenodo"
    assert "Class1.zip" not in cache_files(cache)
    assert [n for n in cache_files(cache) if n.startswith("tmp")] == []  # pooch's temporary file is gone
    assert not (tmp_path / "d/Class1").exists()


def test_published_md5_from_the_doi_is_used(server, tmp_path, monkeypatch):
    data = zip_bytes(official_files(1))
    server.files["Class1.zip"] = data
    src = source(server, "Class1.zip", doi="10.5281/zenodo.8086136")
    calls = []

    def fake_md5s(doi):
        calls.append(doi)
        return {"Class1.zip": "f" * 32}  # the published value disagrees with what is served

    monkeypatch.setattr(dl, "_doi_md5s", fake_md5s)
    with pytest.raises(ChecksumError, match="checksum"):
        download(tmp_path / "d", classes=[1], sources=[src], progress=False)
    assert calls == ["10.5281/zenodo.8086136"]
    registry = tmp_path / "home/downloads/zenodo/known_hashes.json"
    assert json.loads(registry.read_text())[src.url]["md5"] == "f" * 32  # remembered: no API call next time
    registry.unlink()
    monkeypatch.setattr(dl, "_doi_md5s", lambda doi: {"Class1.zip": md5(data)})
    download(tmp_path / "d", classes=[1], sources=[src], progress=False)
    assert (tmp_path / "d/Class1/Train/0576.PNG").is_file()


def test_interrupted_download_leaves_nothing_that_passes_for_complete(server, tmp_path, home):
    data = zip_bytes(official_files(1)) + os.urandom(20_000)  # big enough to be cut in the middle
    server.files["Class1.zip"] = data
    server.truncate.add("Class1.zip")
    src = source(server, "Class1.zip", md5=md5(data))
    cache = home / "downloads/zenodo"
    with pytest.raises(DownloadError) as exc:
        download(tmp_path / "d", classes=[1], sources=[src], progress=False, retries=0)
    assert src.url in str(exc.value)
    assert cache_files(cache) == []  # neither Class1.zip nor a temporary file
    assert not (tmp_path / "d/Class1").exists()

    server.truncate.clear()
    download(tmp_path / "d", classes=[1], sources=[src], progress=False, retries=0)
    assert (cache / "Class1.zip").read_bytes() == data
    assert (tmp_path / "d/Class1/Train/0576.PNG").is_file()


def test_interrupted_download_without_checksum_is_not_kept(server, tmp_path, home):
    data = zip_bytes(official_files(1))
    server.files["Class1.zip"] = data
    server.truncate.add("Class1.zip")
    with pytest.raises(DownloadError, match="connection closed|before the whole file"):
        download(
            tmp_path / "d", classes=[1], sources=[source(server, "Class1.zip")], progress=False, retries=0
        )
    assert "Class1.zip" not in cache_files(home / "downloads/zenodo")


def test_retries_recover_from_a_transient_failure(server, tmp_path, monkeypatch):
    data = zip_bytes(official_files(1))
    server.files["Class1.zip"] = data
    server.truncate.add("Class1.zip")
    monkeypatch.setattr(dl.time, "sleep", lambda s: server.truncate.clear())  # heals before the retry
    download(tmp_path / "d", classes=[1], sources=[source(server, "Class1.zip")], progress=False, retries=1)
    assert server.count("Class1.zip") == 2
    assert (tmp_path / "d/Class1/Train/0576.PNG").is_file()


def test_http_404_names_the_url_and_the_manual_alternative(server, tmp_path):
    src = source(server, "Class9.zip", 9)
    with pytest.raises(DownloadError) as exc:
        download(tmp_path / "d", classes=[9], sources=[src], progress=False)
    msg = str(exc.value)
    assert src.url in msg and "404" in msg and "by hand" in msg and "--data" in msg
    assert server.count("Class9.zip") == 1  # a 404 is not retried


def test_connection_refused_is_a_download_error(tmp_path, home):
    url = f"http://127.0.0.1:{closed_port()}/Class1.zip"
    src = ArchiveSource(name="Class1.zip", class_id=1, url=url)
    with pytest.raises(DownloadError) as exc:
        download(tmp_path / "d", classes=[1], sources=[src], progress=False, retries=0)
    assert url in str(exc.value) and "cannot connect" in str(exc.value)
    assert cache_files(home / "downloads/zenodo") == []


def test_size_check_and_recorded_sha256_catch_corruption(server, tmp_path, home):
    data = zip_bytes(official_files(1))
    server.files["Class1.zip"] = data
    src = source(server, "Class1.zip", size=len(data))
    cache = home / "downloads/zenodo"
    download(tmp_path / "d", classes=[1], sources=[src], progress=False)
    entry = json.loads((cache / "known_hashes.json").read_text())[src.url]
    assert entry["sha256"] == sha256(data) and entry["verified_by"] == "size + archive CRCs"

    # the cached copy rots (same size, different bytes): caught by the recorded sha256, fetched again
    corrupt = bytearray(data)
    corrupt[len(corrupt) // 2] ^= 0xFF
    (cache / "Class1.zip").write_bytes(bytes(corrupt))
    import shutil

    shutil.rmtree(tmp_path / "d")
    download(tmp_path / "d", classes=[1], sources=[src], progress=False)
    assert server.count("Class1.zip") == 2
    assert (cache / "Class1.zip").read_bytes() == data

    # the cache rots again and the server now serves other bytes of the same size: refused
    (cache / "Class1.zip").write_bytes(bytes(corrupt))
    server.files["Class1.zip"] = bytes(corrupt)
    shutil.rmtree(tmp_path / "d")
    with pytest.raises(ChecksumError, match="checksum"):
        download(tmp_path / "d", classes=[1], sources=[src], progress=False)
    assert "Class1.zip" not in cache_files(cache)


def test_wrong_size_is_a_checksum_error(server, tmp_path, home):
    data = zip_bytes(official_files(1))
    server.files["Class1.zip"] = data
    src = source(server, "Class1.zip", size=len(data) + 1)
    with pytest.raises(ChecksumError, match="size") as exc:
        download(tmp_path / "d", classes=[1], sources=[src], progress=False)
    assert src.url in str(exc.value)
    assert "Class1.zip" not in cache_files(home / "downloads/zenodo")


def test_corrupt_download_without_checksum_is_deleted(server, tmp_path, home):
    data = bytearray(zip_bytes(official_files(1)))
    data[60] ^= 0xFF  # inside the first member's compressed data: CRC fails
    server.files["Class1.zip"] = bytes(data)
    with pytest.raises(ChecksumError, match="corrupt"):
        download(tmp_path / "d", classes=[1], sources=[source(server, "Class1.zip")], progress=False)
    cache = home / "downloads/zenodo"
    assert "Class1.zip" not in cache_files(cache)
    assert not (cache / "known_hashes.json").exists()


def test_unsafe_archive_from_the_server_is_refused(server, tmp_path):
    server.files["Class1.zip"] = zip_bytes({"Class1/Train/0576.PNG": _png(), "../escape.txt": b"x"})
    with pytest.raises(ArchiveError, match=r"\.\./escape\.txt") as exc:
        download(tmp_path / "d", classes=[1], sources=[source(server, "Class1.zip")], progress=False)
    assert "delete" in str(exc.value)
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "d/Class1").exists()
    assert [p.name for p in (tmp_path / "d").iterdir()] == []


# ----------------------------------------------------------------------------- safe_extract


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _zip_with(infos: list[tuple[zipfile.ZipInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for info, data in infos:
            zf.writestr(info, data)
    return buf.getvalue()


def _tar_with(members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                tf.addfile(info)
    return buf.getvalue()


@pytest.fixture
def work(tmp_path):
    w = tmp_path / "work"
    w.mkdir()
    return w


def test_safe_extract_zip_and_tar_round_trip(work):
    files = official_files(5)
    dest = safe_extract(_write(work / "c.zip", zip_bytes(files)), work / "out_zip")
    assert {str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()} == set(files)
    members = [(tarfile.TarInfo(name), data) for name, data in files.items()]
    for suffix, mode in ((".tar", "w"), (".tar.gz", "w:gz"), (".tar.bz2", "w:bz2"), (".tar.xz", "w:xz")):
        out = safe_extract(_write(work / f"c{suffix}", _tar_with(members, mode)), work / f"out{suffix}")
        assert (out / "Class5/Train/0576.PNG").read_bytes() == files["Class5/Train/0576.PNG"]


@pytest.mark.parametrize(
    "name, reason",
    [
        ("../evil.txt", "'..'"),
        ("sub/../../evil.txt", "'..'"),
        ("/tmp/dagm_abs_evil.txt", "absolute"),
        ("C:/evil.txt", "drive letter"),
        ("..\\evil.txt", "'..'"),
    ],
)
def test_safe_extract_refuses_unsafe_zip_names(work, name, reason):
    archive = _write(
        work / "a.zip", _zip_with([(zipfile.ZipInfo("ok.txt"), b"ok"), (zipfile.ZipInfo(name), b"x")])
    )
    dest = work / "out"
    with pytest.raises(ArchiveError, match=reason) as exc:
        safe_extract(archive, dest)
    assert str(archive) in str(exc.value) and name in str(exc.value).replace("\\\\", "\\")
    assert not (work.parent / "evil.txt").exists() and not Path("/tmp/dagm_abs_evil.txt").exists()
    assert sorted(p.name for p in work.iterdir()) == ["a.zip"]  # no dest, no temporary folder


@pytest.mark.parametrize(
    "name, reason", [("../evil.txt", "'..'"), ("/tmp/dagm_abs_evil_tar.txt", "absolute")]
)
def test_safe_extract_refuses_unsafe_tar_names(work, name, reason):
    archive = _write(
        work / "a.tar.gz", _tar_with([(tarfile.TarInfo("ok.txt"), b"ok"), (tarfile.TarInfo(name), b"x")])
    )
    with pytest.raises(ArchiveError, match=reason):
        safe_extract(archive, work / "out")
    assert not (work.parent / "evil.txt").exists() and not Path("/tmp/dagm_abs_evil_tar.txt").exists()
    assert sorted(p.name for p in work.iterdir()) == ["a.tar.gz"]


def test_safe_extract_refuses_symlink_in_zip(work):
    link = zipfile.ZipInfo("Class1/link")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = _write(
        work / "a.zip", _zip_with([(zipfile.ZipInfo("Class1/a.txt"), b"a"), (link, b"/etc/passwd")])
    )
    with pytest.raises(ArchiveError, match="symbolic link") as exc:
        safe_extract(archive, work / "out")
    assert "Class1/link" in str(exc.value)
    assert sorted(p.name for p in work.iterdir()) == ["a.zip"]


@pytest.mark.parametrize(
    "kind, reason",
    [(tarfile.SYMTYPE, "symbolic link"), (tarfile.LNKTYPE, "hard link"), (tarfile.CHRTYPE, "device")],
)
def test_safe_extract_refuses_links_and_devices_in_tar(work, kind, reason):
    special = tarfile.TarInfo("Class1/special")
    special.type = kind
    special.linkname = "/etc/passwd" if kind != tarfile.CHRTYPE else ""
    archive = _write(
        work / "a.tar", _tar_with([(tarfile.TarInfo("Class1/a.txt"), b"a"), (special, None)], "w")
    )
    with pytest.raises(ArchiveError, match=reason):
        safe_extract(archive, work / "out")
    assert sorted(p.name for p in work.iterdir()) == ["a.tar"]


def test_safe_extract_refuses_a_declared_zip_bomb_before_writing(work):
    archive = _write(work / "bomb.zip", zip_bytes({"a.bin": b"\0" * 2_000_000, "b.bin": b"\0" * 2_000_000}))
    assert archive.stat().st_size < 50_000  # highly compressed
    with pytest.raises(ArchiveError, match="cap of 1000000 bytes") as exc:
        safe_extract(archive, work / "out", max_total_bytes=1_000_000)
    assert "decompression bomb" in str(exc.value)
    assert sorted(p.name for p in work.iterdir()) == ["bomb.zip"]


def test_safe_extract_refuses_a_tar_bomb_and_too_many_members(work):
    archive = _write(work / "bomb.tar.gz", _tar_with([(tarfile.TarInfo("z.bin"), b"\0" * 3_000_000)]))
    with pytest.raises(ArchiveError, match="cap"):
        safe_extract(archive, work / "out", max_total_bytes=1_000_000)
    many = _write(work / "many.zip", zip_bytes({f"f{i}.txt": b"" for i in range(20)}))
    with pytest.raises(ArchiveError, match="20 members exceed the cap of 10"):
        safe_extract(many, work / "out2", max_members=10)
    assert sorted(p.name for p in work.iterdir()) == ["bomb.tar.gz", "many.zip"]


def _lying_zip(real: bytes, declared: int) -> bytes:
    """A zip whose headers under-declare the uncompressed size of its only member."""
    data = bytearray(zip_bytes({"liar.bin": real}))
    real_size = len(real).to_bytes(4, "little")
    fake_size = declared.to_bytes(4, "little")
    # local header: uncompressed size at offset 22; central directory entry: at offset 24
    assert data[22:26] == real_size
    data[22:26] = fake_size
    cd = data.rfind(b"PK\x01\x02")
    assert data[cd + 24 : cd + 28] == real_size
    data[cd + 24 : cd + 28] = fake_size
    return bytes(data)


def test_safe_extract_catches_a_lying_size_header(work):
    archive = _write(work / "liar.zip", _lying_zip(b"\0" * 5_000_000, declared=100))
    with zipfile.ZipFile(archive) as zf:
        assert zf.infolist()[0].file_size == 100  # passes the declared-size check...
    with pytest.raises(ArchiveError) as exc:  # ...but not the byte count while streaming
        safe_extract(archive, work / "out", max_total_bytes=1_000_000)
    assert "liar" in str(exc.value)
    assert sorted(p.name for p in work.iterdir()) == ["liar.zip"]


def test_byte_counter_refuses_more_data_than_declared(work):
    # zipfile itself stops at the declared size (then fails the CRC); this second guard
    # counts the bytes actually written, whatever the archive reader does.
    with pytest.raises(ArchiveError, match="more data than its header declares"):
        dl._copy_counted(
            io.BytesIO(b"x" * 1000),
            work / "out.bin",
            declared=10,
            already=0,
            max_total_bytes=10**6,
            archive=work / "a.zip",
            name="m",
        )
    with pytest.raises(ArchiveError, match="over the cap"):
        dl._copy_counted(
            io.BytesIO(b"x" * 1000),
            work / "out2.bin",
            declared=1000,
            already=500,
            max_total_bytes=1000,
            archive=work / "a.zip",
            name="m",
        )


@pytest.mark.parametrize("how", ["truncated_zip", "garbage_zip", "bad_crc_zip", "truncated_targz"])
def test_safe_extract_reports_corrupt_archives(work, how):
    good_zip = zip_bytes(official_files(1))
    if how == "truncated_zip":
        archive = _write(work / "a.zip", good_zip[: len(good_zip) // 2])
    elif how == "garbage_zip":
        archive = _write(work / "a.zip", os.urandom(4096))
    elif how == "bad_crc_zip":
        bad = bytearray(good_zip)
        bad[60] ^= 0xFF
        archive = _write(work / "a.zip", bytes(bad))
    else:
        tgz = _tar_with([(tarfile.TarInfo(n), d) for n, d in official_files(1).items()])
        archive = _write(work / "a.tar.gz", tgz[: len(tgz) // 2])
    with pytest.raises(ArchiveError, match="corrupt") as exc:
        safe_extract(archive, work / "out")
    assert str(archive) in str(exc.value) and "download it again" in str(exc.value)
    assert sorted(p.name for p in work.iterdir()) == [archive.name]


def test_safe_extract_refuses_a_non_empty_destination(work):
    archive = _write(work / "a.zip", zip_bytes({"x.txt": b"new"}))
    dest = work / "out"
    dest.mkdir()
    (dest / "keep.txt").write_text("old")
    with pytest.raises(ArchiveError, match="not an empty folder"):
        safe_extract(archive, dest)
    assert [p.name for p in dest.iterdir()] == ["keep.txt"]


# ----------------------------------------------------------------------------- command line


def _cli(args: list[str], env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra}
    return subprocess.run(
        [sys.executable, "-m", "dagm_helpers", *args], capture_output=True, text=True, timeout=120, env=env
    )


def test_cli_download_against_the_local_server(server, tmp_path):
    server.files["Class1.zip"] = zip_bytes(official_files(1))
    dest = tmp_path / "cli"
    proc = _cli(
        ["download", "--dest", str(dest), "--classes", "1", "--quiet"],
        {"DAGM_MIRROR": server.url, "DAGM_HOME": str(tmp_path / "clihome")},
    )
    assert proc.returncode == 0, proc.stderr
    assert f"DAGM data ready in {dest}" in proc.stdout
    assert (dest / "Class1/Train/0576.PNG").is_file()
    assert (tmp_path / "clihome/downloads/zenodo/Class1.zip").is_file()


def test_cli_download_error_is_one_line_exit_2(tmp_path):
    mirror = f"http://127.0.0.1:{closed_port()}"
    proc = _cli(
        ["download", "--dest", str(tmp_path / "cli"), "--classes", "1", "--quiet"],
        {"DAGM_MIRROR": mirror, "DAGM_HOME": str(tmp_path / "clihome")},
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert f"{mirror}/Class1.zip" in lines[0] and "Traceback" not in proc.stderr
