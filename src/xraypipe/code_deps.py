"""A stage's code dependencies: its script and the import closure of that script within the package.

Read from the source with :mod:`ast` (imports inside functions included), so nothing is imported or run. Both
engines track these files: a change to a module re-runs exactly the stages whose scripts reach it.
"""

from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the project (scripts/, src/)
PACKAGE = Path(__file__).resolve().parent
# files a module reads at run time (not imports): tracked with the module
PACKAGE_DATA = {"xraypipe.config": ["src/xraypipe/schemas/config.schema.yaml"]}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@lru_cache(maxsize=None)
def package_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


@lru_cache(maxsize=None)  # every stage's closure reaches the same modules: parse each once
def imported_modules(path: Path, package: str = "") -> frozenset[str]:
    """Module names an ``import`` / ``from ... import`` anywhere in ``path`` may refer to (``package``: the
    importing module's package, for relative imports)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(Path(path).read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            found |= {source} | {f"{source}.{a.name}" for a in node.names}
    return frozenset(found)


def _with_parents(name: str) -> list[str]:
    """Importing ``a.b.c`` runs ``a/__init__``, ``a/b/__init__`` and ``a/b/c``."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


@lru_cache(maxsize=None)
def _module_closure(start: frozenset) -> frozenset:
    modules = package_modules()
    seen: set[str] = set()
    todo = [m for name in start for m in _with_parents(name) if m in modules]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = modules[name]
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        todo += [m for target in imported_modules(path, package) for m in _with_parents(target)
                 if m in modules and m not in seen]
    return frozenset(seen)


def code_deps(script: str) -> list[str]:
    """The script (a path relative to the project) and every package file it may import or read, sorted."""
    return list(_code_deps(script))


@lru_cache(maxsize=None)
def _code_deps(script: str) -> tuple[str, ...]:
    start = frozenset(imported_modules(ROOT / script))
    closure = _module_closure(start)
    files = {script} | {str(package_modules()[m].relative_to(ROOT)) for m in closure}
    files |= {f for m in closure for f in PACKAGE_DATA.get(m, [])}
    return tuple(sorted(files))



def fingerprint(script: str, root: str | Path | None = None) -> dict[str, str]:
    """The sha256 of each file of :func:`code_deps`, read under ``root``: the project the engine runs in (the
    files it tracks), which need not be where the imported package lives (an installed or editable copy)."""
    root = Path(root) if root is not None else ROOT
    return {f: hashlib.sha256((root / f).read_bytes()).hexdigest() for f in code_deps(script)}
