"""The requirement files generated from ``pyproject.toml``, the one source of the project's direct pins.

    python -m xraypipe.requirements            # (make requirements) rewrite the generated files
    python -m xraypipe.requirements --check    # exit status 1 naming every stale file (tests/test_environment.py)

``pyproject.toml`` holds the runtime pins (``[project] dependencies``: what ``pip install .`` installs) and the
extras ``pipeline`` (Snakemake, DVC), ``slurm``, ``test`` and ``bench``. Generated from them:

- ``requirements.txt``: runtime + pipeline + slurm + test, what ``make setup`` installs (with
  ``requirements-lock.txt`` as constraints) into the project's ``.venv``;
- ``envs/pipeline.yaml``: runtime + pipeline + slurm, the conda environment for ``snakemake --sdm conda``;
- ``benchmarks/requirements.txt``: bench (``make bench``).

The comments above a pin in ``pyproject.toml`` (why the package is there) are carried into the text files.
Only the standard library is used (``tomllib``, Python 3.11+), so this runs before any environment exists.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the project (pyproject.toml), when run from a checkout
EXTRAS = ("pipeline", "slurm", "test", "bench")
GENERATED = "Generated from pyproject.toml by `make requirements` (python -m xraypipe.requirements); do not edit."

REQUIREMENTS_HEADER = f"""\
# Direct dependencies, pinned: the runtime ones of the package (pyproject.toml [project] dependencies) and its
# extras pipeline, slurm and test.
# {GENERATED}
# Transitive pins: requirements-lock.txt (used as constraints by `make setup`).
"""
BENCH_HEADER = f"""\
# Benchmark-only dependencies (benchmarks/speed.py): the reference loader the epoch feed is compared with.
# {GENERATED}
# Install with the project's lock as constraints so torch/torchvision stay at the pinned versions:
#   .venv/bin/pip install -r benchmarks/requirements.txt -c requirements-lock.txt     (or: make bench)
"""
CONDA_HEADER = f"""\
# Conda environment for `snakemake --sdm conda` (e.g. on a cluster without the project's .venv): the runtime pins
# of pyproject.toml and its extras pipeline and slurm.
# {GENERATED}
# The pipeline's own package is found by the scripts themselves (scripts/ put ../src on sys.path), so nothing is
# installed from the repo.
"""


def read_groups(pyproject: str | Path | None = None) -> dict[str, list[str]]:
    """``{"runtime": [...], "pipeline": [...], ...}``: the requirement strings of ``pyproject.toml``, in order."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        raise SystemExit("xraypipe.requirements needs Python 3.11+ (tomllib)") from None
    path = Path(pyproject) if pyproject is not None else ROOT / "pyproject.toml"
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found (run from a checkout of the project)")
    project = tomllib.loads(path.read_text())["project"]
    extras = project.get("optional-dependencies", {})
    missing = [e for e in EXTRAS if e not in extras]
    if missing:
        raise ValueError(f"{path}: [project.optional-dependencies] lacks {missing}")
    return {"runtime": list(project["dependencies"]), **{e: list(extras[e]) for e in EXTRAS}}


def read_comments(pyproject: str | Path | None = None) -> dict[str, list[str]]:
    """The comment lines written directly above each requirement string of ``pyproject.toml``."""
    path = Path(pyproject) if pyproject is not None else ROOT / "pyproject.toml"
    comments, pending = {}, []
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped)
            continue
        m = re.fullmatch(r'"([^"]+)",?', stripped)
        if m and pending:
            comments[m[1]] = pending
        pending = []
    return comments


def _text(header: str, requirements: list[str], comments: dict[str, list[str]]) -> str:
    lines = header.splitlines()
    for req in requirements:
        lines += comments.get(req, [])
        lines.append(req)
    return "\n".join(lines) + "\n"


def render(pyproject: str | Path | None = None) -> dict[str, str]:
    """Path relative to the project -> the content it should have."""
    groups, comments = read_groups(pyproject), read_comments(pyproject)
    pipeline = groups["runtime"] + groups["pipeline"] + groups["slurm"]
    requirements = pipeline + ["# test tools"] + groups["test"]
    conda = CONDA_HEADER + "\n".join([
        "name: xraypipe", "channels:", "  - conda-forge", "  - nodefaults", "dependencies:", "  - python=3.11",
        "  - pip", "  - pip:", *(f"      - {r}" for r in pipeline)]) + "\n"
    return {
        "requirements.txt": _text(REQUIREMENTS_HEADER, requirements, comments),
        "envs/pipeline.yaml": conda,
        "benchmarks/requirements.txt": _text(BENCH_HEADER, groups["bench"], comments),
    }


def stale(root: str | Path | None = None) -> list[str]:
    """The generated files under ``root`` whose content differs from what ``pyproject.toml`` gives."""
    root = Path(root) if root is not None else ROOT
    return [rel for rel, text in render(root / "pyproject.toml").items()
            if not (root / rel).exists() or (root / rel).read_text() != text]


def write(root: str | Path | None = None) -> list[str]:
    root = Path(root) if root is not None else ROOT
    changed = []
    for rel, text in render(root / "pyproject.toml").items():
        path = root / rel
        if not path.exists() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            changed.append(rel)
    return changed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m xraypipe.requirements", description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="only check; exit 1 naming the stale files")
    p.add_argument("--root", type=Path, default=ROOT, help="the project directory (default: this checkout)")
    args = p.parse_args(argv)
    if args.check:
        out_of_date = stale(args.root)
        for rel in out_of_date:
            print(f"{rel}: stale; regenerate with `make requirements`", file=sys.stderr)
        return 1 if out_of_date else 0
    for rel in write(args.root):
        print(f"wrote {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
