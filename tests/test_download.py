"""Resumable, verified downloads from a local HTTP server on 127.0.0.1, and safe archive extraction."""

import hashlib
import io
import os
import tarfile
import zipfile

import pytest

from http_server import LocalServer
from xraypipe.download import DownloadError, UnsafeArchiveError, download_file, safe_extract


@pytest.fixture()
def server():
    with LocalServer() as srv:
        yield srv


def payload(n=300_000, seed=1):
    import numpy as np

    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def md5(data):
    return hashlib.md5(data).hexdigest()


def test_plain_download_is_verified_and_atomic(server, tmp_path):
    data = payload()
    url = server.add("/f.bin", data)
    out = download_file(url, tmp_path / "f.bin", md5=md5(data), backoff=0)
    assert out.read_bytes() == data
    assert not (tmp_path / "f.bin.part").exists()
    # present and verified: not downloaded again
    n = len(server.requests)
    download_file(url, tmp_path / "f.bin", md5=md5(data), backoff=0)
    assert len(server.requests) == n


def test_connection_dropped_half_way_is_resumed_with_range(server, tmp_path):
    data = payload()
    url = server.add("/drop.bin", data, behaviour="drop_once")
    out = download_file(url, tmp_path / "drop.bin", md5=md5(data), backoff=0)
    assert out.read_bytes() == data
    ranges = [r for p, r in server.requests if p == "/drop.bin"]
    assert ranges[0] is None and ranges[1] is not None and ranges[1].startswith("bytes=")
    assert int(ranges[1][6:-1]) > 0  # resumed where it stopped, not from 0


def test_interrupted_download_leaves_only_a_part_file_then_resumes(server, tmp_path):
    data = payload()
    url = server.add("/drop2.bin", data, behaviour="drop_once", max_drops=5)
    with pytest.raises(DownloadError, match=r"interrupted.*drop2\.bin\.part.*resume"):
        download_file(url, tmp_path / "drop2.bin", md5=md5(data), retries=1, backoff=0)
    assert not (tmp_path / "drop2.bin").exists()  # nothing a later rule could mistake for data
    part = tmp_path / "drop2.bin.part"
    assert 0 < part.stat().st_size < len(data)
    server.httpd.files["/drop2.bin"]["behaviour"] = "ok"
    out = download_file(url, tmp_path / "drop2.bin", md5=md5(data), backoff=0)
    assert out.read_bytes() == data and not part.exists()
    assert server.requests[-1][1] is not None  # the last request resumed with Range


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    data = payload()
    url = server.add("/norange.bin", data, behaviour="no_range")
    (tmp_path / "n.bin.part").write_bytes(b"garbage-that-must-not-survive")
    out = download_file(url, tmp_path / "n.bin", md5=md5(data), backoff=0)
    assert out.read_bytes() == data


def test_wrong_checksum_names_file_and_leaves_nothing(server, tmp_path):
    data = payload()
    url = server.add("/bad.npz", data)
    with pytest.raises(DownloadError, match=r"bad\.npz.*wrong md5 checksum: expected 0{32}, got " + md5(data)):
        download_file(url, tmp_path / "bad.npz", md5="0" * 32, backoff=0)
    assert list(tmp_path.iterdir()) == []


def test_wrong_existing_file_is_replaced(server, tmp_path):
    data = payload()
    url = server.add("/x.bin", data)
    (tmp_path / "x.bin").write_bytes(b"stale")
    download_file(url, tmp_path / "x.bin", sha256=hashlib.sha256(data).hexdigest(), backoff=0)
    assert (tmp_path / "x.bin").read_bytes() == data


def test_missing_file_is_a_clear_error(server, tmp_path):
    with pytest.raises(DownloadError, match=r"/nope\.zip: HTTP 404"):
        download_file(server.url("/nope.zip"), tmp_path / "nope.zip", backoff=0)


# ------------------------------------------------------------------------------------------- extraction
def _tar(members, mode="w:gz"):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, kind, extra in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(extra)
                tar.addfile(info, io.BytesIO(extra))
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, extra
                tar.addfile(info)
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, extra
                tar.addfile(info)
    return buf.getvalue()


def _zip(members, symlink=None):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members:
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink[0])
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, symlink[1])
    return buf.getvalue()


@pytest.mark.parametrize("members, message", [
    ([("ok.txt", "file", b"x"), ("../evil.txt", "file", b"x")], r"'\.\./evil\.txt' escapes"),
    ([("ok.txt", "file", b"x"), ("a/../../evil.txt", "file", b"x")], r"escapes"),
    ([("/tmp/evil_abs.txt", "file", b"x")], r"absolute path"),
    ([("ok.txt", "file", b"x"), ("link", "sym", "/etc/passwd")], r"'link' is a symbolic link"),
    ([("ok.txt", "file", b"x"), ("hard", "hard", "ok.txt")], r"'hard' is a hard link"),
])
def test_tar_members_escaping_the_target_are_refused(tmp_path, members, message):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(_tar(members))
    target = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match=message):
        safe_extract(archive, target)
    assert not any(target.rglob("*"))  # checked before anything is written
    assert not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize("members, symlink, message", [
    ([("ok.txt", b"x"), ("../evil.txt", b"x")], None, r"escapes"),
    ([("/abs.txt", b"x")], None, r"absolute path"),
    ([("ok.txt", b"x")], ("link", "/etc/passwd"), r"symbolic link"),
])
def test_zip_members_escaping_the_target_are_refused(tmp_path, members, symlink, message):
    archive = tmp_path / "a.zip"
    archive.write_bytes(_zip(members, symlink))
    with pytest.raises(UnsafeArchiveError, match=message):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists() and not any((tmp_path / "out").rglob("*"))


def test_safe_archives_extract_and_skip_macos_junk(tmp_path):
    (tmp_path / "a.zip").write_bytes(_zip([("chest_xray/train/x.txt", b"1"), ("__MACOSX/chest_xray/._x.txt", b"j")]))
    assert safe_extract(tmp_path / "a.zip", tmp_path / "z") == ["chest_xray/train/x.txt"]
    assert not (tmp_path / "z" / "__MACOSX").exists()
    (tmp_path / "b.tar.gz").write_bytes(_tar([("images/1.png", "file", b"png")]))
    assert safe_extract(tmp_path / "b.tar.gz", tmp_path / "t") == ["images/1.png"]
    assert (tmp_path / "t" / "images" / "1.png").read_bytes() == b"png"


def test_truncated_archive_is_a_clear_error(tmp_path):
    data = _tar([("images/1.png", "file", os.urandom(50_000))])
    (tmp_path / "cut.tar.gz").write_bytes(data[: len(data) // 2])
    from xraypipe.datasets import DatasetFormatError

    with pytest.raises(DatasetFormatError, match=r"cut\.tar\.gz"):
        safe_extract(tmp_path / "cut.tar.gz", tmp_path / "o")
