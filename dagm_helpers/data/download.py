"""Download, verify, cache and safely unpack the DAGM 2007 class archives.

Where the archives live (checked when this module was written; see each
:class:`ArchiveSource`'s ``origin`` for the evidence):

* **Zenodo** (the current official home of the full competition set):
  record 8086136, DOI ``10.5281/zenodo.8086136``, "DAGM 2007 competition dataset
  for Optical Inspection" (Wieler, Hahn, Hamprecht), one archive per class,
  ``Class1.zip`` ... ``Class10.zip``, each holding ``ClassN/{Train,Test}/...``.
* **HCI Heidelberg** keeps the benchmark's description page,
  https://hci.iwr.uni-heidelberg.de/content/weakly-supervised-learning-industrial-optical-inspection ;
  we found no stable direct file URLs on it, so it is cited, not downloaded from.
* The **2007 development archives** ``Class1_def.zip`` ... ``Class6_def.zip`` (150
  defective images per class with ellipse parameters in ``labels.txt``; what the
  original tutorial used) at https://resources.mpi-inf.mpg.de/conference/dagm/2007/ .

Verification, in order of strength (a checksum is never invented here):

1. an MD5 the source publishes: Zenodo publishes one per file in its record API;
   :func:`download` asks for it (through pooch's DOI support) on first use and
   passes it to pooch as ``known_hash="md5:..."``;
2. otherwise the SHA-256 recorded in ``<cache>/known_hashes.json`` when the file
   was first downloaded and verified (size when known, archive CRCs), so that
   later corruption of the cached copy is caught;
3. otherwise the expected size, when known.

pooch does the HTTP work: it streams into a temporary file in the cache folder
and moves it under the real name only after the hash check passed, so an
interrupted download never leaves a file that passes for complete.

:func:`safe_extract` refuses absolute paths, drive letters, ``..`` components,
links, device files and archives whose uncompressed size exceeds
:data:`MAX_EXTRACT_BYTES` (4 GiB; the largest DAGM class unpacks to well under
1 GiB), and unpacks into a temporary folder that is renamed into place only when
everything succeeded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import sys
import tarfile
import tempfile
import time
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .. import atomic
from ..config import DATA_ENV, dagm_home
from ..errors import ArchiveError, ChecksumError, ConfigError, DownloadError

log = logging.getLogger(__name__)

#: Hard cap on the total uncompressed size of one archive (4 GiB). The largest
#: DAGM archive (a class of 2300 PNGs of 512x512) unpacks to far less.
MAX_EXTRACT_BYTES: int = 4 * 1024**3
#: Hard cap on the number of members of one archive (DAGM classes have < 5000).
MAX_EXTRACT_MEMBERS: int = 200_000
#: Environment variable: a base URL that replaces every source's host and folder
#: (``$DAGM_MIRROR/ClassN.zip``), for mirrors and for the tests' local server.
MIRROR_ENV = "DAGM_MIRROR"
#: File (inside the cache folder) recording the hashes of verified downloads.
REGISTRY_NAME = "known_hashes.json"
#: Folder (inside the destination) holding one completion marker per archive.
MARKER_DIR = ".dagm-extracted"

ZENODO_RECORD = "8086136"
ZENODO_DOI = "10.5281/zenodo.8086136"
ZENODO_BASE_URL = f"https://zenodo.org/records/{ZENODO_RECORD}/files"
DEV_BASE_URL = "https://resources.mpi-inf.mpg.de/conference/dagm/2007"
HCI_PAGE_URL = (
    "https://hci.iwr.uni-heidelberg.de/content/weakly-supervised-learning-industrial-optical-inspection"
)
KAGGLE_MIRROR_URL = (
    "https://www.kaggle.com/datasets/mhskjelvareid/dagm-2007-competition-dataset-optical-inspection"
)

_IGNORED_NAMES = {"__MACOSX", "Thumbs.db", ".DS_Store", "desktop.ini"}
_CLASS_DIR = re.compile(r"^Class(\d+)(_def)?$", re.IGNORECASE)
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ArchiveSource:
    """One downloadable archive and what is known to verify it."""

    #: file name, e.g. ``Class1.zip``; also the name in the cache folder
    name: str
    class_id: int
    url: str
    #: MD5 published by the source (hex), or None when none is published
    md5: str | None = None
    #: expected size in bytes, or None when unknown
    size: int | None = None
    #: the DOI whose record API publishes this file's checksum, if any
    doi: str | None = None
    #: where the URL (and checksum, if any) came from
    origin: str = ""

    @property
    def folder(self) -> str:
        """The folder the archive unpacks to: ``Class1`` or ``Class1_def``."""
        name = self.name
        for suffix in (".zip", *_TAR_SUFFIXES):
            if name.lower().endswith(suffix):
                return name[: -len(suffix)]
        return name

    def with_base_url(self, base_url: str) -> ArchiveSource:
        """The same archive fetched from ``base_url/name`` (a mirror); DOI lookup is dropped."""
        return dataclasses.replace(self, url=f"{base_url.rstrip('/')}/{self.name}", doi=None)


_ZENODO_ORIGIN = (
    "Zenodo record 8086136 (DOI 10.5281/zenodo.8086136), 'DAGM 2007 competition dataset for Optical "
    "Inspection'; file URLs as listed by the record and cited by dataset-ninja/industrial-optical-inspection "
    "(settings.py) and other public download scripts. No MD5 or size was available to us offline, so none is "
    "stored: the MD5 is read from Zenodo's record API at download time."
)
_DEV_ORIGIN = (
    "2007 development archives on the DAGM 2007 conference server (resources.mpi-inf.mpg.de/conference/dagm/2007), "
    "as used by the original tutorial and by NVIDIA's/J. Dekhtiar's download_and_preprocess_dagm2007.sh "
    "(Class1_def.zip ... Class6_def.zip). No checksum or size is published: the SHA-256 of the first verified "
    "download is recorded instead."
)

#: Every known archive, by source name. ``md5``/``size`` stay None: no published
#: value could be checked when this was written (see the module docstring).
SOURCES: dict[str, tuple[ArchiveSource, ...]] = {
    "zenodo": tuple(
        ArchiveSource(
            name=f"Class{i}.zip",
            class_id=i,
            url=f"{ZENODO_BASE_URL}/Class{i}.zip",
            doi=ZENODO_DOI,
            origin=_ZENODO_ORIGIN,
        )
        for i in range(1, 11)
    ),
    "dev": tuple(
        ArchiveSource(
            name=f"Class{i}_def.zip",
            class_id=i,
            url=f"{DEV_BASE_URL}/Class{i}_def.zip",
            origin=_DEV_ORIGIN,
        )
        for i in range(1, 7)
    ),
}


# ----------------------------------------------------------------------------- public API
def download(
    dest: str | os.PathLike[str] | None = None,
    classes: Iterable[int] = range(1, 11),
    source: str = "zenodo",
    progress: bool = True,
    *,
    base_url: str | None = None,
    sources: Sequence[ArchiveSource] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    timeout: float = 60.0,
    retries: int = 2,
    max_total_bytes: int = MAX_EXTRACT_BYTES,
) -> Path:
    """Download, verify and unpack DAGM 2007 class archives; return the data root.

    ``dest`` defaults to ``$DAGM_HOME/dagm2007``; archives are cached in
    ``cache_dir`` (default ``$DAGM_HOME/downloads/<source>``) and never fetched
    again once verified; a class already unpacked (completion marker present) is
    skipped without any network access. ``source`` is ``"zenodo"`` (full set,
    classes 1-10) or ``"dev"`` (2007 development archives, classes 1-6).
    ``base_url`` (or ``$DAGM_MIRROR``) fetches the same file names from a mirror;
    ``sources`` replaces the table entirely (tests). The returned folder holds
    ``ClassN/{Train,Test}/...`` (or ``ClassN_def/...``), ready for ``layout.scan``.

    Raises :class:`DownloadError` (network, HTTP status), :class:`ChecksumError`
    (bad checksum or size; the bad file is deleted), :class:`ArchiveError` (unsafe
    or corrupt archive) and :class:`ConfigError` (bad arguments).
    """
    chosen = resolve_sources(classes, source, base_url=base_url, sources=sources)
    root = Path(dest).expanduser() if dest else dagm_home() / "dagm2007"
    cache = Path(cache_dir).expanduser() if cache_dir else dagm_home() / "downloads" / source
    for src in chosen:
        if is_extracted(root, src):
            _say(progress, f"{src.folder}: already unpacked in {root}, skipped")
            continue
        archive = fetch_archive(src, cache, progress=progress, timeout=timeout, retries=retries)
        try:
            _unpack_into(archive, root, src, max_total_bytes)
        except _NoDagmContent as exc:  # a valid archive of something else: it must not stay cached
            archive.unlink(missing_ok=True)
            _Registry(cache / REGISTRY_NAME).remove(src.url)
            raise ArchiveError(
                f"{archive.name} (downloaded from {src.url}) unpacks to no DAGM data: {exc}; it was deleted "
                f"from {cache} and {src.folder} was not marked complete. {_retry_hint(src)}"
            ) from exc
        except ArchiveError as exc:
            raise ArchiveError(
                f"{exc} (downloaded from {src.url}; delete {archive} and run the download again)"
            ) from exc
        _say(progress, f"{src.folder}: unpacked into {root}")
    return root


def resolve_sources(
    classes: Iterable[int],
    source: str = "zenodo",
    *,
    base_url: str | None = None,
    sources: Sequence[ArchiveSource] | None = None,
) -> list[ArchiveSource]:
    """The archives to fetch for ``classes``, with the mirror override applied."""
    try:
        wanted = sorted({int(c) for c in classes})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"classes must be integers 1-10, got {classes!r}") from exc
    if not wanted:
        raise ConfigError("no classes requested; pass at least one of 1-10")
    bad = [c for c in wanted if not 1 <= c <= 10]
    if bad:
        raise ConfigError(f"DAGM 2007 has classes 1-10; got {bad}")
    if sources is None:
        if source not in SOURCES:
            raise ConfigError(f"unknown download source {source!r}; choose one of {', '.join(SOURCES)}")
        table = SOURCES[source]
    else:
        table = tuple(sources)
    by_class = {s.class_id: s for s in table}
    missing = [c for c in wanted if c not in by_class]
    if missing:
        have = ", ".join(str(c) for c in sorted(by_class)) or "none"
        raise ConfigError(
            f"source {source!r} has no archive for class(es) {missing} (it has {have}); "
            "the 2007 development archives exist only for classes 1-6: use --source zenodo for 7-10"
        )
    mirror = base_url or os.environ.get(MIRROR_ENV, "").strip() or None
    chosen = [by_class[c] for c in wanted]
    return [s.with_base_url(mirror) for s in chosen] if mirror else chosen


def fetch_archive(
    src: ArchiveSource,
    cache_dir: str | os.PathLike[str],
    *,
    progress: bool = True,
    timeout: float = 60.0,
    retries: int = 2,
) -> Path:
    """Return the verified cached copy of ``src``, downloading it if needed.

    A cached copy that fails verification (published MD5, recorded SHA-256, or
    size) is deleted and downloaded again. After a download the file is checked
    again, its SHA-256 recorded in ``<cache_dir>/known_hashes.json``.
    """
    cache = Path(cache_dir)
    path = cache / src.name
    registry = _Registry(cache / REGISTRY_NAME)
    entry = registry.get(src.url)
    md5 = src.md5 or entry.get("md5")
    if not md5:
        md5 = _published_md5(src)
        if md5:  # remember it: later runs need no API call
            registry.update(src.url, file=src.name, md5=md5, md5_origin=f"record of DOI {src.doi}")
    recorded_sha = entry.get("sha256")

    if path.exists():
        problem = _verify_cached(path, md5=md5, sha256=recorded_sha, size=src.size)
        if problem is None and not md5 and not recorded_sha:
            problem = _archive_selftest(path)  # put there by hand or by an older version: test it once
        if problem is None:
            if not recorded_sha:
                registry.update(src.url, file=src.name, sha256=_file_hash(path, "sha256"), size=_size(path))
            return path
        log.warning("cached %s is corrupt (%s); deleting it and downloading again", path, problem)
        _say(progress, f"cached {path} is corrupt ({problem}); downloading it again")
        path.unlink()

    known_hash = f"md5:{md5}" if md5 else (f"sha256:{recorded_sha}" if recorded_sha else None)
    _say(progress, f"downloading {src.name} from {src.url}")
    _retrieve(src, cache, known_hash, progress=progress, timeout=timeout, retries=retries)

    if src.size is not None and _size(path) != src.size:
        got = _size(path)
        path.unlink()
        raise ChecksumError(
            f"size check failed for {src.url}: expected {src.size} bytes, got {got}; the bad download was "
            f"deleted. {_retry_hint(src)}"
        )
    if not md5 and not recorded_sha:
        # First download with no published checksum: test the archive's own CRCs
        # before trusting it, then record its SHA-256 so later corruption is caught.
        problem = _archive_selftest(path)
        if problem:
            path.unlink()
            raise ChecksumError(
                f"the archive downloaded from {src.url} is corrupt ({problem}); it was deleted. "
                f"{_retry_hint(src)}"
            )
    if not recorded_sha:
        verified_by = "published md5" if md5 else ("size + archive CRCs" if src.size else "archive CRCs")
        registry.update(
            src.url,
            file=src.name,
            sha256=_file_hash(path, "sha256"),
            size=_size(path),
            verified_by=verified_by,
            recorded=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        )
    return path


def is_extracted(root: str | os.PathLike[str], src: ArchiveSource) -> bool:
    """True when ``src`` was completely unpacked into ``root`` (marker present, folders there)."""
    marker = Path(root) / MARKER_DIR / f"{src.name}.json"
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    folders = info.get("folders") or []
    return bool(folders) and all((Path(root) / f).is_dir() for f in folders)


def safe_extract(
    archive: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    max_total_bytes: int = MAX_EXTRACT_BYTES,
    max_members: int = MAX_EXTRACT_MEMBERS,
) -> Path:
    """Unpack a ``.zip`` or ``.tar[.gz|.bz2|.xz]`` into ``dest`` safely; return ``dest``.

    Every member is checked before anything is written: absolute paths, drive
    letters, ``..`` components, symbolic and hard links, device files, more than
    ``max_members`` members, and a declared total size above ``max_total_bytes``
    (default 4 GiB) are refused with :class:`ArchiveError` naming the archive, the
    member and the reason. While unpacking, bytes are counted again, so a header
    that under-declares a member's size is caught too. Everything is written to a
    temporary folder next to ``dest`` that is renamed to ``dest`` only on success:
    a refused, corrupt or interrupted extraction leaves nothing under ``dest``.
    ``dest`` must not exist or be an empty folder.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise ArchiveError(f"{archive}: no such archive file")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ArchiveError(
            f"cannot unpack {archive.name} into {dest}: it exists and is not an empty folder; "
            "remove it or choose another destination"
        )
    kind = _archive_kind(archive)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{atomic.TMP_PREFIX}extract-{dest.name}-", dir=dest.parent))
    try:
        if kind == "zip":
            _extract_zip(archive, tmp, max_total_bytes, max_members)
        else:
            _extract_tar(archive, tmp, max_total_bytes, max_members)
        if dest.exists():
            dest.rmdir()
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


# ----------------------------------------------------------------------------- download internals
def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


def _manual_hint(src: ArchiveSource) -> str:
    return (
        f"download {src.name} by hand (from {src.url}, the Zenodo record "
        f"https://zenodo.org/records/{ZENODO_RECORD}, or a mirror such as {KAGGLE_MIRROR_URL}), unpack it "
        f"into a folder and pass that folder with --data or ${DATA_ENV}"
    )


def _retry_hint(src: ArchiveSource) -> str:
    return f"Run the same command again to retry; if it keeps failing, {_manual_hint(src)}"


@contextlib.contextmanager
def _quiet_pooch() -> Iterator[None]:
    """Silence pooch's INFO log (its hints speak of pooch arguments, not ours)."""
    import pooch

    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _retrieve(
    src: ArchiveSource, cache: Path, known_hash: str | None, *, progress: bool, timeout: float, retries: int
) -> Path:
    """pooch.retrieve with our errors and a few retries for transient network failures."""
    import pooch
    import requests

    cache.mkdir(parents=True, exist_ok=True)
    downloader = pooch.HTTPDownloader(
        progressbar=progress, timeout=timeout, headers={"User-Agent": "dagm-helpers (pooch)"}
    )
    attempts = 1 + max(0, int(retries))
    for attempt in range(attempts):
        try:
            with _quiet_pooch():
                return Path(
                    pooch.retrieve(src.url, known_hash, fname=src.name, path=cache, downloader=downloader)
                )
        except ValueError as exc:  # pooch: hash mismatch (the temporary file is already deleted)
            with contextlib.suppress(FileNotFoundError):
                (cache / src.name).unlink()
            raise ChecksumError(
                f"checksum mismatch for {src.url}: {exc} The bad download was deleted, nothing was kept "
                f"under {cache / src.name}. {_retry_hint(src)}"
            ) from exc
        except requests.exceptions.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            if status is not None and status < 500 or attempt == attempts - 1:
                raise DownloadError(
                    f"download of {src.url} failed: the server answered HTTP {status}. You can {_manual_hint(src)}"
                ) from exc
        except requests.exceptions.RequestException as exc:
            if attempt == attempts - 1:
                raise DownloadError(
                    f"download of {src.url} failed ({_describe_network_error(exc)}); no partial file was "
                    f"kept. {_retry_hint(src)}"
                ) from exc
        except OSError as exc:
            raise DownloadError(f"cannot write the download of {src.url} into {cache}: {exc}") from exc
        time.sleep(min(1.0 * (attempt + 1), 5.0))
    raise AssertionError("unreachable")  # pragma: no cover


def _describe_network_error(exc: BaseException) -> str:
    import requests

    if isinstance(exc, requests.exceptions.Timeout):
        return f"timed out: {exc}"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return f"the connection closed before the whole file arrived: {exc}"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return f"cannot connect: {exc}"
    return f"{exc.__class__.__name__}: {exc}"


@functools.lru_cache(maxsize=4)
def _doi_md5s(doi: str) -> dict[str, str]:
    """File name -> MD5 as published by the DOI's repository (Zenodo record API)."""
    import pooch

    with _quiet_pooch():
        p = pooch.create(path=tempfile.gettempdir(), base_url=f"doi:{doi}/", registry=None)
        p.load_registry_from_doi()
    return {name: h.split(":", 1)[1] for name, h in p.registry.items() if h and h.startswith("md5:")}


def _published_md5(src: ArchiveSource) -> str | None:
    """The MD5 the source's repository publishes for ``src``, or None (with a warning)."""
    if not src.doi:
        return None
    try:
        return _doi_md5s(src.doi).get(src.name)
    except Exception as exc:  # network, API change: fall back to size / recorded hash
        log.warning("could not read the published checksum of %s from DOI %s: %s", src.name, src.doi, exc)
        return None


def _file_hash(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _size(path: Path) -> int:
    return path.stat().st_size


def _verify_cached(path: Path, *, md5: str | None, sha256: str | None, size: int | None) -> str | None:
    """None when the cached file checks out, else what is wrong."""
    if size is not None and _size(path) != size:
        return f"size {_size(path)} bytes, expected {size}"
    if md5:
        got = _file_hash(path, "md5")
        return None if got == md5.lower() else f"md5 {got}, expected the published {md5}"
    if sha256:
        got = _file_hash(path, "sha256")
        return None if got == sha256.lower() else f"sha256 {got}, expected the recorded {sha256}"
    return None


def _archive_selftest(path: Path) -> str | None:
    """Read the whole archive and check its CRCs; None when fine, else the problem."""
    try:
        kind = _archive_kind(path)
        if kind == "zip":
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()
            return None if bad is None else f"member {bad!r} fails its CRC check"
        with tarfile.open(path, "r:*") as tf:
            for m in tf:
                if m.isfile():
                    fh = tf.extractfile(m)
                    if fh is not None:
                        while fh.read(_CHUNK):
                            pass
        return None
    except ArchiveError as exc:
        return str(exc)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, OSError, RuntimeError) as exc:
        return f"{exc.__class__.__name__}: {exc}"


class _Registry:
    """``known_hashes.json``: URL -> {file, md5, sha256, size, ...}, written atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable %s (%s); hashes will be recorded again", self.path, exc)
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, url: str) -> dict:
        entry = self._load().get(url)
        return dict(entry) if isinstance(entry, dict) else {}

    def remove(self, url: str) -> None:
        data = self._load()
        if data.pop(url, None) is not None:
            atomic.write_json(self.path, data)

    def update(self, url: str, **fields) -> None:
        data = self._load()
        entry = data.get(url) if isinstance(data.get(url), dict) else {}
        entry.update({k: v for k, v in fields.items() if v is not None})
        data[url] = entry
        atomic.write_json(self.path, data)


# ----------------------------------------------------------------------------- unpacking into the layout
def _unpack_into(archive: Path, root: Path, src: ArchiveSource, max_total_bytes: int) -> None:
    """Unpack ``archive`` into ``root`` as ``ClassN/...``; write the completion marker last."""
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{atomic.TMP_PREFIX}staging-{src.folder}-", dir=root))
    try:
        unpacked = safe_extract(archive, staging / "x", max_total_bytes=max_total_bytes)
        moves = _find_class_folders(unpacked, src)
        for folder, name in moves:
            _check_dagm_content(folder, name)
        for folder, name in moves:
            _replace_dir(folder, root / name)
        atomic.write_json(
            root / MARKER_DIR / f"{src.name}.json",
            {
                "archive": src.name,
                "url": src.url,
                "folders": [name for _, name in moves],
                "unpacked": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            },
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _find_class_folders(unpacked: Path, src: ArchiveSource) -> list[tuple[Path, str]]:
    """(folder, final name) pairs: ``ClassN`` folders, looked for through single wrapper folders.

    Handles ``ClassN/...`` (official), ``ClassN/ClassN/...`` and ``Wrapper/ClassN/...``
    (mirrors), and archives holding ``Train``/``Test`` (or ``1.png ... labels.txt``)
    with no class folder, which become ``src.folder``.
    """
    current = unpacked
    for _ in range(4):
        entries = [p for p in current.iterdir() if p.name not in _IGNORED_NAMES]
        class_dirs = [p for p in entries if p.is_dir() and _CLASS_DIR.match(p.name)]
        if class_dirs:
            return [(_flatten_nested(p), p.name) for p in class_dirs]
        if len(entries) == 1 and entries[0].is_dir() and entries[0].name.lower() not in ("train", "test"):
            current = entries[0]
            continue
        break
    return [(current, src.folder)]


class _NoDagmContent(ArchiveError):
    """The archive unpacked safely but holds no DAGM class (no PNG images with a labels file)."""


def _check_dagm_content(folder: Path, name: str) -> None:
    """A DAGM class holds PNG images and a labels file (``Label/Labels.txt``, or ``labels.txt`` in
    the 2007 development archives); anything else is not what was asked for."""
    files = [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []
    pngs = sum(p.suffix.lower() == ".png" for p in files)
    labels = sum(p.name.lower() == "labels.txt" for p in files)
    if not pngs or not labels:
        found = f"{len(files)} file(s), {pngs} PNG image(s), {labels} labels file(s)"
        raise _NoDagmContent(f"{name} would hold {found}; a DAGM class has PNG images and Labels.txt")


def _flatten_nested(folder: Path) -> Path:
    """``Class1/Class1/...`` (some mirrors) -> the inner folder; otherwise ``folder`` itself."""
    inner = [p for p in folder.iterdir() if p.name not in _IGNORED_NAMES]
    if len(inner) == 1 and inner[0].is_dir() and inner[0].name.lower() == folder.name.lower():
        return inner[0]
    return folder


def _replace_dir(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``, replacing an old ``target`` (left by an unmarked earlier run)."""
    old = None
    if target.exists():
        old = target.with_name(f"{atomic.TMP_PREFIX}old-{target.name}-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------- safe extraction internals
def _archive_kind(archive: Path) -> str:
    """``"zip"`` or ``"tar"``; ArchiveError when the file is neither (or is truncated)."""
    lower = archive.name.lower()
    hint = f"delete {archive} and download it again"
    if lower.endswith(".zip"):
        if not zipfile.is_zipfile(archive):
            raise ArchiveError(f"{archive} is not a readable zip archive (truncated or corrupt?); {hint}")
        return "zip"
    if lower.endswith(_TAR_SUFFIXES):
        if not _is_tarfile(archive):
            raise ArchiveError(f"{archive} is not a readable tar archive (truncated or corrupt?); {hint}")
        return "tar"
    if zipfile.is_zipfile(archive):
        return "zip"
    if _is_tarfile(archive):
        return "tar"
    raise ArchiveError(f"{archive} is neither a zip nor a tar archive (truncated or corrupt?); {hint}")


def _is_tarfile(archive: Path) -> bool:
    try:
        return tarfile.is_tarfile(archive)
    except (OSError, EOFError, zlib.error, tarfile.TarError):
        return False


def _refuse(archive: Path, member: str, reason: str) -> ArchiveError:
    return ArchiveError(f"refusing to unpack {archive}: member {member!r} {reason}; nothing was extracted")


def _member_parts(archive: Path, name: str) -> tuple[str, ...]:
    """The member's path components, after refusing unsafe names."""
    if "\x00" in name:
        raise _refuse(archive, name, "contains a NUL byte")
    norm = name.replace("\\", "/")
    if norm.startswith("/"):
        raise _refuse(archive, name, "has an absolute path")
    if re.match(r"^[A-Za-z]:", norm):
        raise _refuse(archive, name, "starts with a drive letter")
    parts = tuple(p for p in norm.split("/") if p not in ("", "."))
    if ".." in parts:
        raise _refuse(archive, name, "has a '..' component (path traversal)")
    return parts


def _target(root: Path, parts: tuple[str, ...], archive: Path, name: str) -> Path:
    target = root.joinpath(*parts)
    real_root = os.path.realpath(root)
    if os.path.commonpath([real_root, os.path.realpath(target)]) != real_root:
        raise _refuse(archive, name, "would be written outside the destination")
    return target


def _check_totals(archive: Path, count: int, declared: int, max_total_bytes: int, max_members: int) -> None:
    if count > max_members:
        raise ArchiveError(
            f"refusing to unpack {archive}: {count} members exceed the cap of {max_members}; nothing was extracted"
        )
    if declared > max_total_bytes:
        raise ArchiveError(
            f"refusing to unpack {archive}: its members declare {declared} bytes uncompressed, more than the "
            f"cap of {max_total_bytes} bytes (possible decompression bomb); nothing was extracted"
        )


def _copy_counted(
    src: IO[bytes],
    target: Path,
    *,
    declared: int,
    already: int,
    max_total_bytes: int,
    archive: Path,
    name: str,
) -> int:
    """Stream ``src`` into ``target``, refusing more bytes than declared or than the cap."""
    written = 0
    with open(target, "wb") as out:
        while True:
            chunk = src.read(_CHUNK)
            if not chunk:
                break
            written += len(chunk)
            if written > declared:
                raise _refuse(archive, name, f"holds more data than its header declares ({declared} bytes)")
            if already + written > max_total_bytes:
                raise _refuse(
                    archive, name, f"pushes the unpacked total over the cap of {max_total_bytes} bytes"
                )
            out.write(chunk)
    return written


_CORRUPT = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, NotImplementedError, RuntimeError)


def _extract_zip(archive: Path, root: Path, max_total_bytes: int, max_members: int) -> None:
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ArchiveError(
            f"{archive} is not a readable zip ({exc}); delete it and download it again"
        ) from exc
    with zf:
        infos = zf.infolist()
        plan = []
        for info in infos:
            parts = _member_parts(archive, info.filename)
            mode = (info.external_attr >> 16) & 0xFFFF
            fmt = stat.S_IFMT(mode)
            if fmt == stat.S_IFLNK:
                raise _refuse(archive, info.filename, "is a symbolic link")
            if fmt and fmt not in (stat.S_IFREG, stat.S_IFDIR):
                raise _refuse(archive, info.filename, "is a device or other special file")
            if info.flag_bits & 0x1:
                raise _refuse(archive, info.filename, "is encrypted")
            if parts:
                plan.append((info, parts, info.is_dir() or fmt == stat.S_IFDIR))
        _check_totals(archive, len(infos), sum(i.file_size for i in infos), max_total_bytes, max_members)
        total = 0
        try:
            for info, parts, is_dir in plan:
                target = _target(root, parts, archive, info.filename)
                if is_dir:
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as member:
                    total += _copy_counted(
                        member,
                        target,
                        declared=info.file_size,
                        already=total,
                        max_total_bytes=max_total_bytes,
                        archive=archive,
                        name=info.filename,
                    )
        except _CORRUPT as exc:
            raise ArchiveError(
                f"{archive} is corrupt ({exc.__class__.__name__}: {exc}); delete it and download it again"
            ) from exc
        except OSError as exc:
            raise ArchiveError(f"cannot unpack {archive}: {exc}") from exc


def _extract_tar(archive: Path, root: Path, max_total_bytes: int, max_members: int) -> None:
    try:
        tf = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise ArchiveError(
            f"{archive} is not a readable tar ({exc}); delete it and download it again"
        ) from exc
    with tf:
        try:
            members = tf.getmembers()
            plan = []
            for m in members:
                parts = _member_parts(archive, m.name)
                if m.issym() or m.islnk():
                    kind = "symbolic" if m.issym() else "hard"
                    raise _refuse(archive, m.name, f"is a {kind} link (to {m.linkname!r})")
                if m.isdev():
                    raise _refuse(archive, m.name, "is a device or FIFO")
                if not (m.isfile() or m.isdir()):
                    raise _refuse(archive, m.name, "is not a regular file or folder")
                if parts:
                    plan.append((m, parts))
            _check_totals(
                archive,
                len(members),
                sum(m.size for m in members if m.isfile()),
                max_total_bytes,
                max_members,
            )
            total = 0
            for m, parts in plan:
                target = _target(root, parts, archive, m.name)
                if m.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                fh = tf.extractfile(m)
                if fh is None:  # pragma: no cover - regular files always have data
                    raise _refuse(archive, m.name, "has no data")
                with fh:
                    total += _copy_counted(
                        fh,
                        target,
                        declared=m.size,
                        already=total,
                        max_total_bytes=max_total_bytes,
                        archive=archive,
                        name=m.name,
                    )
        except _CORRUPT as exc:
            raise ArchiveError(
                f"{archive} is corrupt or truncated ({exc.__class__.__name__}: {exc}); "
                "delete it and download it again"
            ) from exc
        except OSError as exc:
            raise ArchiveError(f"cannot unpack {archive}: {exc}") from exc


__all__ = [
    "DEV_BASE_URL",
    "HCI_PAGE_URL",
    "KAGGLE_MIRROR_URL",
    "MAX_EXTRACT_BYTES",
    "MAX_EXTRACT_MEMBERS",
    "MIRROR_ENV",
    "SOURCES",
    "ZENODO_DOI",
    "ZENODO_RECORD",
    "ArchiveSource",
    "download",
    "fetch_archive",
    "is_extracted",
    "resolve_sources",
    "safe_extract",
]
