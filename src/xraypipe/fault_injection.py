"""Kill points for the fault-injection suite (tests/test_fault_injection.py): SIGKILL the whole run at a named
moment of an atomic write, so that a test can prove a rerun repairs any interruption.

Off unless ``XRAYPIPE_KILL_AT`` is set (the tests set it; nothing else should):

- ``XRAYPIPE_KILL_AT="<phase>:<glob>[#<n>]"``: kill at the n-th (default first) write in this process whose final
  path (relative to the working directory, ``/``-separated) matches ``glob`` (fnmatch), at ``phase``:
  ``start`` (temporary created, nothing written), ``torn`` (body done; the temporary is cut to half its bytes,
  or half its files for a folder, as a write cut off by the kill would leave it), ``rename`` (temporary complete,
  not yet renamed) or ``after`` (renamed into place; the job has not finished).
- ``XRAYPIPE_KILL_GROUP=<pgid>``: the process group to kill (the run's: Snakemake and every job). A process in
  another group only kills itself, so a stray setting cannot take down the shell that started it.
"""

from __future__ import annotations

import fnmatch
import os
import signal
from pathlib import Path

KILL_AT_ENV = "XRAYPIPE_KILL_AT"
KILL_GROUP_ENV = "XRAYPIPE_KILL_GROUP"
PHASES = ("start", "torn", "rename", "after")

_matches_seen = 0


def parse_kill_spec(spec: str) -> tuple[str, str, int]:
    """``"torn:results/cache/*/train.npy#2"`` -> ``("torn", "results/cache/*/train.npy", 2)``."""
    phase, sep, rest = spec.partition(":")
    if not sep or phase not in PHASES or not rest:
        raise ValueError(f"{KILL_AT_ENV}={spec!r}: expected <phase>:<glob>[#<n>] with phase one of {', '.join(PHASES)}")
    glob, _, nth = rest.partition("#")
    if nth and (not nth.isdigit() or int(nth) < 1):
        raise ValueError(f"{KILL_AT_ENV}={spec!r}: the occurrence after # must be a positive integer")
    return phase, glob, int(nth or 1)


def _relative(path: Path) -> str:
    path = Path(os.path.abspath(path))
    try:
        return path.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return path.as_posix()


def _tear(tmp: Path) -> None:
    if tmp.is_dir():
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        for p in files[len(files) // 2:]:
            p.unlink()
    elif tmp.exists():
        with open(tmp, "r+b") as f:
            f.truncate(tmp.stat().st_size // 2)


def kill_point(phase: str, final: Path, tmp: Path | None = None) -> None:
    """Called by the atomic writers at each phase; returns at once unless a kill is armed for this write."""
    spec = os.environ.get(KILL_AT_ENV)
    if not spec:
        return
    want_phase, glob, nth = parse_kill_spec(spec)
    if phase != want_phase or not fnmatch.fnmatchcase(_relative(final), glob):
        return
    global _matches_seen
    _matches_seen += 1
    if _matches_seen < nth:
        return
    if phase == "torn" and tmp is not None:
        _tear(tmp)
    group = os.environ.get(KILL_GROUP_ENV, "")
    if group.isdigit() and int(group) == os.getpgrp():
        os.killpg(int(group), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
