"""One writer per ``results/``: a Snakemake run and a DVC run never work on the same results at once.

Each engine guards itself against a second run of its own kind (Snakemake's ``.snakemake/locks``, DVC's
``.dvc/tmp/lock``); neither knows the other. So every stage script claims ``results/`` for the *engine run* it
belongs to before it touches a file, and a Snakemake run claims it when it starts (``onstart``):

- the claim is ``results/.writer.json`` (engine, run id, host, pid and start time of the engine process), written
  under an ``flock`` on ``results/.writer.lock`` so that two claimants cannot both win;
- a claim is held while its engine process runs; once that process has ended the claim is stale and is taken over
  (nothing to release, nothing left behind by a kill);
- jobs of the same run share the claim (Snakemake's parallel and cluster jobs; DVC's stages, run one by one);
- a claimant of another engine stops with :class:`ResultsBusyError`, naming the holder.

A Snakemake run in a DVC repository also holds DVC's own repository lock while it runs, so a ``dvc repro`` started
meanwhile stops at once, before it deletes any output (DVC removes a stage's outputs before running its command,
which is too late for a check inside the command).

The run id comes from ``XRAYPIPE_RUN`` (set by the Snakefile for its jobs), else from ``DVC_ROOT`` (set by DVC for
stage commands: the run is the nearest ``dvc`` ancestor process), else the script itself is the run ("manual").
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path

CLAIM_NAME = ".writer.json"
GUARD_NAME = ".writer.lock"
RUN_ENV = "XRAYPIPE_RUN"


class ResultsBusyError(RuntimeError):
    """``results/`` is being written by a run of another engine."""


def _proc_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a live holder from a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    now = _proc_start(pid)
    return start is None or now is None or now == start


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])


def _dvc_ancestor() -> int:
    """The pid of the nearest ancestor process running DVC (the stage command's ``dvc repro``/``dvc exp run``)."""
    pid = os.getppid()
    for _ in range(16):
        if pid <= 1:
            break
        args = _cmdline(pid)
        if any(os.path.basename(a) == "dvc" or a.endswith(("/dvc", "dvc/__main__.py")) or a == "dvc" for a in args[:3]):
            return pid
        pid = _parent(pid)
    return os.getppid()


def current_run() -> dict:
    """Who this process writes for: engine, run id, and the engine process (host, pid, start)."""
    host = socket.gethostname()
    given = os.environ.get(RUN_ENV)
    if given:
        engine, _, rest = given.partition(":")
        run_host, _, pid = rest.rpartition(":")
        pid = int(pid) if pid.isdigit() else os.getpid()
        return {"engine": engine, "run": given, "host": run_host or host, "pid": pid,
                "start": _proc_start(pid) if (run_host or host) == host else None}
    if os.environ.get("DVC_ROOT"):
        pid = _dvc_ancestor()
        return {"engine": "dvc", "run": f"dvc:{host}:{pid}", "host": host, "pid": pid, "start": _proc_start(pid)}
    pid = os.getpid()
    return {"engine": "manual", "run": f"manual:{host}:{pid}", "host": host, "pid": pid, "start": _proc_start(pid)}


def snakemake_run_id() -> str:
    """The run id a Snakemake main process gives its jobs (``XRAYPIPE_RUN``)."""
    return f"snakemake:{socket.gethostname()}:{os.getpid()}"


def _holds(claim: dict) -> bool:
    if claim.get("host") != socket.gethostname():
        return True  # cannot look at another host's processes: taken as running
    return _alive(int(claim.get("pid", 0)), claim.get("start"))


def _describe(claim: dict) -> str:
    started = claim.get("claimed_at", "?")
    return (f"a {claim.get('engine', '?')} run (pid {claim.get('pid', '?')} on {claim.get('host', '?')}, "
            f"claimed {started}, command: {claim.get('command', '?')})")


def claim_results(results_dir: str | os.PathLike = "results", run: dict | None = None) -> dict:
    """Claim ``results_dir`` for this process's run; raise ResultsBusyError naming a live holder of another engine.

    Jobs of one engine never block each other here (each engine serialises its own runs); a claim whose engine
    process has ended is taken over."""
    run = run or current_run()
    results = Path(results_dir)
    results.mkdir(parents=True, exist_ok=True)
    claim_path = results / CLAIM_NAME
    with open(results / GUARD_NAME, "a+") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        try:
            held = json.loads(claim_path.read_text()) if claim_path.exists() else None
        except (OSError, json.JSONDecodeError):
            held = None
        if held and held.get("run") == run["run"]:
            return held
        if held and held.get("engine") != run["engine"] and _holds(held):
            raise ResultsBusyError(
                f"{results}/ is being written by {_describe(held)}; this {run['engine']} run would overwrite its "
                f"files. Wait for it to finish (or stop it) and run again; {claim_path} names the holder.")
        claim = {**run, "claimed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                 "command": " ".join(_cmdline(run["pid"])).strip() or "?"}
        tmp = claim_path.with_name(f"{CLAIM_NAME}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(claim, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, claim_path)
        return claim


_DVC_LOCK = None


def hold_dvc_lock(root: str | os.PathLike = ".") -> bool:
    """Take DVC's repository lock for the rest of this process (a Snakemake run), so that ``dvc repro`` cannot
    start meanwhile; False where the folder is no DVC repository. ResultsBusyError when DVC holds it."""
    global _DVC_LOCK
    tmp = Path(root) / ".dvc" / "tmp"
    if not (Path(root) / ".dvc").is_dir():
        return False
    if _DVC_LOCK is not None:
        return True
    try:
        import zc.lockfile  # installed with DVC
    except ImportError:
        return False

    tmp.mkdir(parents=True, exist_ok=True)
    try:
        _DVC_LOCK = zc.lockfile.LockFile(str(tmp / "lock"), content_template="{pid} (xraypipe: snakemake run)")
    except zc.lockfile.LockError:
        holder = ""
        with contextlib.suppress(OSError):
            holder = (tmp / "lock").read_text().strip()
        raise ResultsBusyError(f"{tmp / 'lock'}: a DVC command is running in this repository (lock holder: "
                               f"{holder or '?'}); wait for it to finish, then start Snakemake") from None
    return True
