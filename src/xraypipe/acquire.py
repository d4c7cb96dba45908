"""``prepare_raw`` for ``source: download`` (and ``source: local`` pointing at an archive).

Config (``datasets.<name>.download``; see the schema)::

    download:
      dir: data/downloads          # downloads are kept in <dir>/<dataset>/ (outside results/, so a failed or
                                   # re-run job resumes from the .part file instead of starting over)
      retries: 5
      files:
        - url: https://...         # http(s)://, file:// or a local path (a registration-gated archive)
          name: images_001.tar.gz  # file name in the download dir (default: last component of the URL path)
          md5: ...                 # and/or sha256: verified when given
          extract: true            # default: true for .zip/.tar/.tar.gz/.tgz names
          dest: ""                 # archives: sub-directory of the raw dir to extract into (default: its root);
                                   # other files: path inside the raw dir (default: name)

Every file is fetched (resumable, verified, atomic; see :mod:`xraypipe.download`), then the raw directory is
assembled in a temporary sibling -- archives safely extracted, other files hard-linked (copied across
filesystems) -- and renamed into place, so ``results/raw/<dataset>`` is complete or absent.
"""

from __future__ import annotations

import logging
import os
import shutil
import urllib.parse
from pathlib import Path

from xraypipe.atomic import atomic_dir
from xraypipe.datasets.contract import DatasetFormatError
from xraypipe.download import fetch, is_archive, safe_extract

log = logging.getLogger(__name__)
DEFAULT_DIR = "data/downloads"


def _file_name(entry: dict, index: int) -> str:
    """The entry's file name in the download folder: a plain name, never a path (it must not point elsewhere)."""
    if entry.get("name"):
        name = str(entry["name"])
        if name in (".", "..") or "/" in name or "\\" in name or "\0" in name or name != name.strip():
            raise DatasetFormatError(f"download.files[{index}].name: {name!r} is not a plain file name (no folders, "
                                     "no '..'); downloads are kept in download.dir/<dataset>/")
        return name
    source = entry.get("url") or ""
    name = os.path.basename(urllib.parse.urlparse(source).path)
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise DatasetFormatError(f"download.files[{index}]: cannot derive a file name from {source!r}; set 'name'")
    return name


def _place(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _inside(root: Path, rel: str, what: str) -> Path:
    out = (root / rel).resolve()
    if out != root.resolve() and root.resolve() not in out.parents:
        raise DatasetFormatError(f"{what}: {rel!r} points outside the dataset directory")
    return root / rel


def prepare_download(dataset_cfg: dict, out_dir: str | os.PathLike, *, progress: bool = False) -> dict:
    out_dir = Path(out_dir)
    spec = dataset_cfg.get("download") or {}
    files = spec.get("files") or []
    if not files:
        raise DatasetFormatError(f"{out_dir.name}: source is 'download' but download.files is empty")
    cache = Path(spec.get("dir") or DEFAULT_DIR).expanduser() / out_dir.name
    fetched = []
    for i, entry in enumerate(files):
        source = entry.get("url")
        name = _file_name(entry, i)
        if not source:
            raise DatasetFormatError(
                f"{out_dir.name}: download.files[{i}] ({name}) has no url: this file is not publicly linked "
                "(registration-gated or a folder page); put the URL you were given, or a local path, in 'url'")
        path = fetch(source, cache / name, md5=entry.get("md5"), sha256=entry.get("sha256"), size=entry.get("size"),
                     retries=int(spec["retries"]), progress=progress)
        log.info("%s: %s ready (%d bytes)", out_dir.name, path, path.stat().st_size)
        fetched.append((i, entry, name, path))
    summary = {"files": [], "extracted_members": 0}
    with atomic_dir(out_dir) as tmp:
        for i, entry, name, path in fetched:
            extract = entry.get("extract")
            if extract is None:
                extract = is_archive(path)
            if extract:
                target = _inside(tmp, entry.get("dest") or ".", f"download.files[{i}].dest")
                members = safe_extract(path, target)
                summary["extracted_members"] += len(members)
            else:
                _place(path, _inside(tmp, entry.get("dest") or name, f"download.files[{i}].dest"))
            summary["files"].append(name)
    return summary


def extract_local_archive(archive: Path, out_dir: str | os.PathLike) -> dict:
    """``source: local`` with ``root`` an archive file (e.g. CheXpert-v1.0-small.zip): extract it safely."""
    with atomic_dir(out_dir) as tmp:
        members = safe_extract(archive, tmp)
    return {"extracted_from": str(archive), "extracted_members": len(members)}
