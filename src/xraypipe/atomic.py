"""Atomic output helpers: every file the pipeline writes appears complete or not at all.

Each helper writes to a temporary sibling (same directory, so the final ``os.replace`` is a
rename on one filesystem) and renames it into place only after the body finished without error.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from xraypipe.fault_injection import kill_point


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.tmp-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporaries that killed writers of ``path`` left beside it (``.<name>.tmp-<pid>-*`` whose pid is
    no longer running on this host); a live writer's temporary is left alone. The removed paths."""
    path = Path(path)
    prefix = _temp_prefix(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    for entry in path.parent.iterdir():
        if not entry.name.startswith(prefix):
            continue
        pid = entry.name[len(prefix):].split("-", 1)[0]
        if not pid.isdigit() or _pid_alive(int(pid)):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
        removed.append(entry)
    return removed


def _temp_sibling(path: Path, *, directory: bool) -> Path:
    """A new temporary beside ``path``, named after it and this process (so a rerun can tell a killed writer's
    leftovers, which it removes first, from a live one's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    prefix = f"{_temp_prefix(path)}{os.getpid()}-"
    if directory:
        return Path(tempfile.mkdtemp(prefix=prefix, dir=path.parent))
    fd, name = tempfile.mkstemp(prefix=prefix, dir=path.parent, suffix=path.suffix)
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path; on success it is renamed to ``path``, on error removed."""
    final = Path(path)
    tmp = _temp_sibling(final, directory=False)
    try:
        kill_point("start", final, tmp)
        yield tmp
        kill_point("torn", final, tmp)
        kill_point("rename", final, tmp)
        os.replace(tmp, final)
        kill_point("after", final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces ``path`` (removed first if present)."""
    final = Path(path)
    tmp = _temp_sibling(final, directory=True)
    try:
        kill_point("start", final, tmp)
        yield tmp
        kill_point("torn", final, tmp)
        kill_point("rename", final, tmp)
        if final.is_symlink() or final.is_file():
            final.unlink()
        elif final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        kill_point("after", final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n")


def write_csv(path: str | os.PathLike, frame, **kwargs) -> None:
    """Write a pandas DataFrame atomically (index off unless asked)."""
    kwargs.setdefault("index", False)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, **kwargs)
