"""What a stage's job writes to its log: timestamped lines, progress that a file can hold, and a closing account.

- Every line a job prints goes to its log with a timestamp when the stream is not a terminal (Snakemake and DVC
  redirect it to ``results/logs/...``); on a terminal lines stay as printed.
- :func:`progress` is a tqdm bar on a terminal and otherwise one line every ``XRAYPIPE_PROGRESS_SECONDS`` seconds
  (30 by default) and one at the end: a log file gets no carriage-return redraws.
- :func:`params_changes` names the configuration keys that changed since the job's last run (Snakemake's own
  re-run reason shows only the digest of the stage's keys, see ``rules/common.smk``).
- :func:`stage_account` is the job's last line: what it read, what it wrote (with sizes) and how long it took.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path

PROGRESS_SECONDS_ENV = "XRAYPIPE_PROGRESS_SECONDS"


def timestamp(now: float | None = None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() if now is None else now))


class TimestampedStream(io.TextIOBase):
    """A text stream that writes each line to ``inner`` prefixed with the time it was completed."""

    def __init__(self, inner, clock=time.time):
        self.inner = inner
        self.clock = clock
        self._pending = ""

    def write(self, text: str) -> int:
        # a carriage return ends a line too: a redraw becomes its own line instead of piling up in one
        lines = (self._pending + text).replace("\r\n", "\n").replace("\r", "\n").split("\n")
        self._pending = lines.pop()
        for line in lines:
            if line.strip():
                self.inner.write(f"{timestamp(self.clock())} {line}\n")
        return len(text)

    def flush(self) -> None:
        if self._pending.strip():
            self.inner.write(f"{timestamp(self.clock())} {self._pending}\n")
        self._pending = ""
        self.inner.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.inner.fileno()

    @property
    def encoding(self):
        return getattr(self.inner, "encoding", "utf-8")


@contextlib.contextmanager
def timestamped_streams():
    """Timestamp the lines of stdout and stderr where they are not terminals, for the ``with`` block."""
    saved = sys.stdout, sys.stderr
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if not isinstance(stream, TimestampedStream) and not stream.isatty():
            setattr(sys, name, TimestampedStream(stream))
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        sys.stdout, sys.stderr = saved


class LineProgress:
    """tqdm's small API (iteration, ``update``, ``set_postfix``, ``close``) as periodic log lines."""

    def __init__(self, iterable=None, total: int | None = None, desc: str = "", unit: str = "it",
                 every_seconds: float | None = None, stream=None, clock=time.monotonic):
        self.iterable = iterable
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.desc, self.unit = desc, unit
        self.every = float(os.environ.get(PROGRESS_SECONDS_ENV, 30) if every_seconds is None else every_seconds)
        self.stream = stream
        self.clock = clock
        self.n = 0
        self.postfix: dict = {}
        self.start = self.last = clock()
        self.closed = False

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)

    def __len__(self):
        return self.total or 0

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self.last >= self.every:
            self.last = now
            self._line(now)

    def set_postfix(self, refresh: bool = False, **values) -> None:
        self.postfix = values

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._line(self.clock(), done=True)

    def _line(self, now: float, done: bool = False) -> None:
        elapsed = max(now - self.start, 1e-9)
        of = f"/{self.total}" if self.total else ""
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        extra = "".join(f", {k}={v}" for k, v in self.postfix.items())
        state = "done in" if done else "after"
        print(f"{self.desc}: {self.n}{of} {self.unit}{share} {state} {elapsed:.1f} s, "
              f"{self.n / elapsed:.1f} {self.unit}/s{extra}", file=self.stream or sys.stderr, flush=True)


def progress(iterable=None, *, total: int | None = None, desc: str = "", unit: str = "it", enabled: bool = True):
    """A progress display: tqdm on a terminal, :class:`LineProgress` lines in a log, nothing when not ``enabled``."""
    if not enabled:
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, disable=True)
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, mininterval=1)
    return LineProgress(iterable, total=total, desc=desc, unit=unit)


# ------------------------------------------------------------------------------ configuration changes
def _leaves(node, prefix: str = "") -> dict:
    if isinstance(node, dict) and node:
        out = {}
        for key, value in node.items():
            out.update(_leaves(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: node}


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def params_changes(previous: dict | None, current: dict) -> list[str]:
    """One line per dotted key whose value differs between two stage configurations (added, removed, changed)."""
    if previous is None:
        return []
    old, new = _leaves(previous), _leaves(current)
    lines = []
    for key in sorted(old.keys() | new.keys()):
        if key not in old:
            lines.append(f"{key}: (not set) -> {_short(new[key])}")
        elif key not in new:
            lines.append(f"{key}: {_short(old[key])} -> (not set)")
        elif old[key] != new[key]:
            lines.append(f"{key}: {_short(old[key])} -> {_short(new[key])}")
    return lines


def read_params_record(path: str | os.PathLike) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None  # no earlier run, or a record cut short by a kill: nothing to compare with


def log_params_changes(record_path: str | os.PathLike, current: dict) -> None:
    previous = read_params_record(record_path)
    if previous is None:
        print("configuration: no record of an earlier run of this job", flush=True)
        return
    changes = params_changes(previous, current)
    if changes:
        print(f"configuration changed since this job's last run ({len(changes)} keys):", flush=True)
        for line in changes:
            print(f"  {line}", flush=True)
    else:
        print("configuration: unchanged since this job's last run", flush=True)


def write_params_record(record_path: str | os.PathLike, current: dict) -> None:
    from xraypipe.atomic import write_text

    write_text(Path(record_path), json.dumps(current, sort_keys=True, indent=1) + "\n")


# ------------------------------------------------------------------------------ what the job read and wrote
def _size(path: Path) -> str:
    if path.is_dir():
        files = [p for p in path.rglob("*") if p.is_file()]
        return f"{len(files)} files, {_bytes(sum(p.stat().st_size for p in files))}"
    return _bytes(path.stat().st_size) if path.exists() else "missing"


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _stage_spec(params_group: str, argv: list[str] | None = None):
    """The stage table's entry for this process: the stage whose config group is ``params_group`` and whose
    command (script and subcommand, e.g. ``scripts/figures.py roc``) this process runs."""
    from xraypipe.workflow import STAGES

    argv = sys.argv if argv is None else argv
    script = Path(argv[0]).name if argv else ""
    for spec in STAGES:
        words = spec.script.split()
        if spec.params == params_group and Path(words[0]).name == script and all(w in argv[1:] for w in words[1:]):
            return spec
    return None


def stage_account(stage: str, args, seconds: float) -> list[str]:
    """Lines naming the files the job of ``stage`` read and wrote (from its command-line flags) and its wall time."""
    spec = _stage_spec(stage)
    if spec is None:
        return [f"stage {stage} finished in {seconds:.1f} s"]

    def paths(names) -> list[str]:
        out = []
        for name in names:
            value = getattr(args, name, None)
            if value:
                out += value if isinstance(value, list) else [value]
        return out

    lines = [f"read: {p}" for p in paths([n for n, s in spec.inputs.items() if s.flag])]
    lines += [f"used: {p}" for p in paths(spec.paths)]
    lines += [f"wrote: {p} ({_size(Path(p))})" for p in paths([n for n, s in spec.outputs.items() if s.flag])]
    lines.append(f"stage {spec.name} finished in {seconds:.1f} s")
    return lines
