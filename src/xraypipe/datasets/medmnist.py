"""Readers for MedMNIST v2/v3 PneumoniaMNIST and ChestMNIST (``.npz``: 28, 64, 128 or 224 px).

An ``.npz`` holds ``{train,val,test}_images`` (N, S, S) uint8 and ``{train,val,test}_labels`` (N, C) uint8.
There are no image files: each manifest row points at the array (``path`` = the ``.npz``, ``array_key``,
``array_index``) and the cache stage copies (and, if needed, resizes) the arrays directly, so nothing is
materialised as PNG. MedMNIST has no patient ids: ``patient_id`` is the image id, i.e. splits are image-level;
the official ``train``/``val``/``test`` splits (for ChestMNIST the NIH official, patient-wise split) are used as
is (``official_split`` train_val / val / test). Files: ``<flavour>.npz`` (28 px) or ``<flavour>_<size>.npz``;
exactly one must be in ``root``.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from .contract import BASE_COLUMNS, DatasetFormatError
from .nih import PATHOLOGIES as NIH_PATHOLOGIES

FLAVOURS = {
    "pneumoniamnist": ("Pneumonia",),
    # MedMNIST label order: atelectasis ... hernia, the NIH order; "pleural" is Pleural_Thickening
    "chestmnist": NIH_PATHOLOGIES,
}
SIZES = (28, 64, 128, 224)
SPLITS = (("train", "train_val"), ("val", "val"), ("test", "test"))


def find_npz(root: Path, flavour: str) -> Path:
    root = Path(root)
    if root.is_file():
        return root
    names = [root / f"{flavour}.npz"] + [root / f"{flavour}_{s}.npz" for s in SIZES]
    hits = [p for p in names if p.exists()]
    if not hits:
        others = sorted(p.name for p in root.glob("*.npz")) if root.is_dir() else []
        if len(others) == 1:
            return root / others[0]
        raise DatasetFormatError(f"{root}: no {flavour}.npz or {flavour}_<size>.npz found (found: {others})")
    if len(hits) > 1:
        raise DatasetFormatError(f"{root}: several {flavour} files {[p.name for p in hits]}; keep one")
    return hits[0]


def npz_shapes(path: Path) -> dict[str, tuple]:
    """Array shapes in an .npz without decompressing the arrays (reads each member's .npy header)."""
    shapes = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                if not name.endswith(".npy"):
                    continue
                with zf.open(name) as f:
                    version = np.lib.format.read_magic(f)
                    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                    shape = read(f)[0]
                shapes[name[:-4]] = shape
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise DatasetFormatError(f"{path}: not a readable .npz ({type(exc).__name__}: {exc})") from None
    return shapes


def read_medmnist(root: str | os.PathLike, *, flavour: str, pathologies=None, views=None,
                  missing_images: str = "error") -> pd.DataFrame:
    names = FLAVOURS[flavour]
    pathologies = list(pathologies or names)
    path = find_npz(Path(root), flavour)
    shapes = npz_shapes(path)
    parts = []
    with np.load(path) as data:
        for split, official in SPLITS:
            key = f"{split}_images"
            if key not in shapes:
                continue
            if f"{split}_labels" not in shapes:
                raise DatasetFormatError(f"{path}: has {key} but no {split}_labels")
            labels = np.asarray(data[f"{split}_labels"])
            n = shapes[key][0]
            if labels.ndim == 1:
                labels = labels[:, None]
            if labels.shape != (n, len(names)):
                raise DatasetFormatError(f"{path}: {split}_labels has shape {labels.shape}; expected ({n}, {len(names)}) "
                                         f"for {flavour}")
            if len(shapes[key]) not in (3, 4):
                raise DatasetFormatError(f"{path}: {key} has shape {shapes[key]}; expected (N, S, S) or (N, S, S, C)")
            bad = ~np.isin(labels, (0, 1))
            if bad.any():
                row, col = (int(v) for v in np.argwhere(bad)[0])
                raise DatasetFormatError(f"{path}: {split}_labels row {row}: unknown label value {labels[row, col].item()!r} "
                                         f"for {names[col]!r}; expected 0 or 1")
            ids = [f"{split}_{i:06d}" for i in range(n)]
            part = pd.DataFrame({"image_id": ids, "path": str(path), "patient_id": ids, "follow_up": 0, "view": "",
                                 "sex": "", "age": np.nan, "official_split": official, "array_key": key,
                                 "array_index": np.arange(n)})
            for j, name in enumerate(names):
                if name in pathologies:
                    part[name] = labels[:, j].astype(np.float32)
            parts.append(part)
    if not parts:
        raise DatasetFormatError(f"{path}: no train_images/val_images/test_images arrays (found {sorted(shapes)})")
    manifest = pd.concat(parts, ignore_index=True)
    if views:
        manifest = manifest[manifest["view"].isin([v.upper() for v in views])]
    return manifest[BASE_COLUMNS + ["array_key", "array_index"] + pathologies].reset_index(drop=True)
