"""Resumable, verified HTTP downloads and safe archive extraction (standard library only).

``download_file(url, dest, md5=..., sha256=...)``:

- writes to ``<dest>.part`` and renames it to ``dest`` only after the whole body arrived and the checksum
  (when one is known) matched, so a ``.part`` file is never mistaken for data and ``dest`` is always complete;
- resumes an interrupted transfer with an HTTP ``Range`` request (a server answering 200 instead of 206 is
  handled by starting over); a connection dropped half-way is retried ``retries`` times, each time resuming;
- on a checksum mismatch removes the corrupt ``.part`` and raises ``DownloadError`` naming the URL, the file,
  the expected and the actual digest; an existing ``dest`` whose checksum matches is not downloaded again.

``safe_extract(archive, target)`` extracts ``.tar``, ``.tar.gz``/``.tgz`` and ``.zip`` archives, refusing
(before anything is written) any member that would escape ``target``: absolute paths, ``..`` components,
symbolic and hard links, device files. macOS resource forks (``__MACOSX/``, ``._*``) are skipped.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import shutil
import socket
import stat
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from xraypipe.datasets.contract import DatasetFormatError

log = logging.getLogger(__name__)

CHUNK = 1 << 20
PART_SUFFIX = ".part"
USER_AGENT = "xraypipe-download/1 (+https://example.invalid/xraypipe)"


class DownloadError(DatasetFormatError):
    """A download failed (HTTP error, interrupted too often, wrong checksum); the message names URL and file."""


class UnsafeArchiveError(DatasetFormatError):
    """An archive member would be written outside the target directory (or is a link/device)."""


# --------------------------------------------------------------------------------------------- checksums
def file_digest(path: str | os.PathLike, algorithm: str = "md5") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def expected_digests(md5: str | None = None, sha256: str | None = None) -> dict[str, str]:
    return {k: v.lower() for k, v in (("md5", md5), ("sha256", sha256)) if v}


def verify_file(path: str | os.PathLike, *, md5: str | None = None, sha256: str | None = None,
                what: str | None = None) -> None:
    """Raise DownloadError if ``path`` does not have the expected digest(s)."""
    for algorithm, expected in expected_digests(md5, sha256).items():
        actual = file_digest(path, algorithm)
        if actual != expected:
            raise DownloadError(f"{what or path}: wrong {algorithm} checksum: expected {expected}, got {actual} "
                                f"(file {path})")


def _matches(path: Path, digests: dict[str, str]) -> bool:
    return all(file_digest(path, a) == v for a, v in digests.items())


# --------------------------------------------------------------------------------------------- download
def _open(url: str, offset: int, timeout: float):
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _content_range_start(value: str | None) -> int | None:
    m = re.match(r"bytes (\d+)-\d+/(\d+|\*)", value or "")
    return int(m[1]) if m else None


def download_file(url: str, dest: str | os.PathLike, *, md5: str | None = None, sha256: str | None = None,
                  size: int | None = None, retries: int = 5, timeout: float = 60.0, backoff: float = 1.0,
                  progress: bool = False) -> Path:
    """Download ``url`` to ``dest`` (resumable, verified, atomic); return ``dest``. See the module docstring."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + PART_SUFFIX)
    digests = expected_digests(md5, sha256)
    if dest.exists():
        if not digests or _matches(dest, digests):
            log.info("%s: already present%s", dest, " (checksum ok)" if digests else "")
            return dest
        log.warning("%s: checksum mismatch, downloading again", dest)
        dest.unlink()

    attempt = 0
    while True:
        offset = part.stat().st_size if part.exists() else 0
        try:
            with _open(url, offset, timeout) as response:
                status = getattr(response, "status", 200)
                if offset and status == 206 and _content_range_start(response.headers.get("Content-Range")) == offset:
                    mode = "ab"
                else:
                    if offset:
                        log.info("%s: server ignored the Range request (HTTP %s); starting over", url, status)
                    mode, offset = "wb", 0
                length = response.headers.get("Content-Length")
                expected_end = offset + int(length) if length is not None else None
                with open(part, mode) as handle:
                    while True:
                        block = response.read(CHUNK)
                        if not block:
                            break
                        handle.write(block)
                got = part.stat().st_size
                if expected_end is not None and got < expected_end:
                    raise http.client.IncompleteRead(b"", expected_end - got)
            break
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and offset:  # range not satisfiable: the .part is already complete (or bogus)
                if size is None or offset == size:
                    break
                part.unlink()
            if exc.code in (404, 401, 403, 410):
                raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason} (downloading {dest.name})") from None
            attempt += 1
            if attempt > retries:
                raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason} after {retries} retries "
                                    f"(partial data kept in {part}; run again to resume)") from None
        except (http.client.HTTPException, urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError) as exc:
            attempt += 1
            have = part.stat().st_size if part.exists() else 0
            if attempt > retries:
                raise DownloadError(f"{url}: download of {dest.name} interrupted ({type(exc).__name__}: {exc}) "
                                    f"after {retries} retries; {have} bytes kept in {part}; run again to resume") from None
            log.warning("%s: interrupted at %d bytes (%s); resuming (retry %d/%d)", url, have, exc, attempt, retries)
        time.sleep(backoff * attempt)

    if size is not None and part.stat().st_size != int(size):
        got = part.stat().st_size
        part.unlink()
        raise DownloadError(f"{url}: {dest.name} has {got} bytes, expected {size}; the partial file was removed")
    try:
        verify_file(part, md5=md5, sha256=sha256, what=f"{url} -> {dest.name}")
    except DownloadError:
        part.unlink()  # a corrupt download must not be resumed or mistaken for data
        raise
    os.replace(part, dest)
    return dest


def fetch(source: str, dest: str | os.PathLike, **kwargs) -> Path:
    """``source`` is an http(s) URL (downloaded to ``dest``), a ``file://`` URL or a local path (verified in place)."""
    parsed = urllib.parse.urlparse(str(source))
    if parsed.scheme in ("http", "https"):
        return download_file(source, dest, **kwargs)
    path = Path(urllib.request.url2pathname(parsed.path) if parsed.scheme == "file" else str(source)).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found (download source {source!r})")
    verify_file(path, md5=kwargs.get("md5"), sha256=kwargs.get("sha256"), what=str(path))
    return path


# --------------------------------------------------------------------------------------------- extraction
def is_archive(path: str | os.PathLike) -> bool:
    name = str(path).lower()
    return name.endswith((".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")) or (
        name.endswith(".gz") and tarfile.is_tarfile(path))


def _skip(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return bool(parts) and (parts[0] == "__MACOSX" or parts[-1].startswith("._") or parts[-1] == ".DS_Store")


def _check_name(archive: Path, name: str) -> PurePosixPath:
    posix = name.replace("\\", "/")
    pure = PurePosixPath(posix)
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix) or pure.is_absolute():
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path; refusing to extract")
    if ".." in pure.parts:
        raise UnsafeArchiveError(f"{archive}: member {name!r} escapes the target directory ('..'); refusing to extract")
    return pure


def _plan_tar(archive: Path, tar: tarfile.TarFile):
    members = []
    for m in tar.getmembers():
        if _skip(m.name):
            continue
        _check_name(archive, m.name)
        if m.issym() or m.islnk():
            raise UnsafeArchiveError(f"{archive}: member {m.name!r} is a {'symbolic' if m.issym() else 'hard'} link "
                                     f"(-> {m.linkname!r}); refusing to extract")
        if not (m.isfile() or m.isdir()):
            raise UnsafeArchiveError(f"{archive}: member {m.name!r} is a device/fifo; refusing to extract")
        members.append(m)
    return members


def _plan_zip(archive: Path, zf: zipfile.ZipFile):
    infos = []
    for info in zf.infolist():
        if _skip(info.filename):
            continue
        _check_name(archive, info.filename)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise UnsafeArchiveError(f"{archive}: member {info.filename!r} is a symbolic link; refusing to extract")
        infos.append(info)
    return infos


def _write_members(archive: Path, target: Path, root: Path, entries) -> list[str]:
    """Write (name, is_dir, open) archive entries under ``root``, after checking that none escapes it."""
    for name, _, _ in entries:
        out = (root / name).resolve()
        if root not in out.parents and out != root:
            raise UnsafeArchiveError(f"{archive}: member {name!r} escapes {target}")
    written = []
    for name, is_dir, open_member in entries:
        out = root / name
        if is_dir:
            out.mkdir(parents=True, exist_ok=True)
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        with open_member() as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, CHUNK)
        written.append(name)
    return written


def safe_extract(archive: str | os.PathLike, target: str | os.PathLike) -> list[str]:
    """Extract ``archive`` into ``target`` (created); return the member names written.

    Every member is checked before anything is written, so a refused archive leaves ``target`` untouched.
    """
    archive, target = Path(archive), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                entries = [(i.filename, i.is_dir(), lambda i=i: zf.open(i)) for i in _plan_zip(archive, zf)]
                written = _write_members(archive, target, root, entries)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tar:
                entries = [(m.name, m.isdir(), lambda m=m: tar.extractfile(m)) for m in _plan_tar(archive, tar)]
                written = _write_members(archive, target, root, entries)
        else:
            raise DatasetFormatError(f"{archive}: not a zip or tar archive")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        if isinstance(exc, FileNotFoundError) and not archive.exists():
            raise FileNotFoundError(f"{archive}: archive not found") from None
        raise DatasetFormatError(f"{archive}: corrupt or truncated archive ({type(exc).__name__}: {exc})") from None
    return written
