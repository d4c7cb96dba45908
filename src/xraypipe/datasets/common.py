"""Helpers shared by the readers: CSV reading with file/line errors, label parsing, the missing-image policy."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .contract import DatasetFormatError
from .nih import _apply_missing_policy, _read_csv, _read_text, csv_error  # noqa: F401  (re-exported)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def read_csv(path: Path, *, header: bool = True, names=None, required=()) -> pd.DataFrame:
    """All cells as strings ('' for blank); DatasetFormatError names the file and the missing columns."""
    if header:
        frame = _read_csv(path)
    else:
        import io

        try:
            frame = pd.read_csv(io.StringIO(_read_text(path)), dtype=str, keep_default_na=False, header=None,
                                names=names)
        except pd.errors.ParserError as exc:
            raise csv_error(path, exc) from None
        except pd.errors.EmptyDataError:
            frame = pd.DataFrame(columns=names)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DatasetFormatError(f"{path}: missing column(s) {missing}; found {list(frame.columns)}")
    return frame


def parse_labels(values, path: Path, column: str, mapping: dict, *, first_line: int = 2) -> np.ndarray:
    """Map each string cell through ``mapping``; an unknown value raises naming file, line and column."""
    out = np.empty(len(values), dtype=np.float32)
    for row, value in enumerate(values):
        key = str(value).strip()
        try:
            out[row] = mapping[key]
        except KeyError:
            allowed = ", ".join(repr(k) for k in mapping)
            raise DatasetFormatError(f"{path}: line {row + first_line}: unknown label value {key!r} in column "
                                     f"{column!r}; expected one of {allowed}") from None
    return out


def parse_age(values, path: Path, column: str = "Age", *, first_line: int = 2) -> list[float]:
    ages = []
    for row, value in enumerate(values):
        value = str(value).strip()
        try:
            ages.append(float(value) if value else np.nan)
        except ValueError:
            raise DatasetFormatError(f"{path}: line {row + first_line}: unreadable {column!r} {value!r}") from None
    return ages


def apply_missing_policy(manifest: pd.DataFrame, policy: str, root: Path) -> pd.DataFrame:
    return _apply_missing_policy(manifest, policy, root)


def find_dataset_dir(root: Path, marker: str, *, max_depth: int = 2) -> Path:
    """The directory at or below ``root`` (depth <= max_depth, __MACOSX ignored) holding ``marker``."""
    root = Path(root)
    level = [root]
    for _ in range(max_depth + 1):
        hits = [d for d in level if (d / marker).exists()]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise DatasetFormatError(f"{root}: several directories hold {marker}: {[str(h) for h in hits]}; "
                                     "point root at one of them")
        level = [c for d in level if d.is_dir() for c in sorted(d.iterdir())
                 if c.is_dir() and c.name != "__MACOSX" and not c.name.startswith(".")]
    raise DatasetFormatError(f"{root}: no {marker} found (looked up to {max_depth} directories deep)")


def relative_to_base(csv_dir: Path, rel: str) -> Path:
    """Resolve a path written in a release CSV: relative to the release folder's parent when it starts with the
    folder's name (CheXpert ``CheXpert-v1.0-small/train/...``, MURA ``MURA-v1.1/train/...``), else to the folder."""
    parts = Path(rel).parts
    if parts and parts[0] == csv_dir.name:
        return csv_dir.parent / rel
    return csv_dir / rel


def strip_release_dir(csv_dir: Path, rel: str) -> str:
    parts = Path(rel.rstrip("/")).parts
    if parts and parts[0] == csv_dir.name:
        parts = parts[1:]
    return "/".join(parts)


def exists(path) -> bool:
    return os.path.exists(path)
