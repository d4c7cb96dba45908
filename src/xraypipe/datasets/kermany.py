"""Reader for the Kermany et al. (2018) pediatric chest X-ray release (``ChestXRay2017.zip``, Kaggle copy too).

Layout::

    chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/<file>.jpeg       (``val`` only in the Kaggle copy)

``root`` may be ``chest_xray`` itself or any parent up to two levels (the Kaggle copy nests
``chest_xray/chest_xray``; ``__MACOSX`` folders are ignored). Patient ids come from the file names:

- ``person<N>_bacteria_<K>.jpeg`` / ``person<N>_virus_<K>.jpeg`` -> ``person<N>``,
- ``IM-<PPPP>-<SSSS>.jpeg`` -> ``IM-<PPPP>``,  ``NORMAL2-IM-<PPPP>-<SSSS>.jpeg`` -> ``NORMAL2-IM-<PPPP>``,

any other name -> its stem (one patient per image; counted in the log). Labels: ``Pneumonia`` (folder), and
``Bacterial`` / ``Viral`` (from the file name; NaN when the name says neither). The official 624-image ``test``
folder is the test split; ``train`` and the tiny Kaggle ``val`` folder (16 images, drawn from train) form the
training pool, from which the splits stage carves validation *by patient*.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .common import IMAGE_SUFFIXES, apply_missing_policy
from .contract import BASE_COLUMNS, DatasetFormatError

log = logging.getLogger(__name__)

PATHOLOGIES = ("Pneumonia", "Bacterial", "Viral")
CLASSES = ("NORMAL", "PNEUMONIA")
FOLDERS = (("train", "train_val"), ("val", "train_val"), ("test", "test"))
_PATTERNS = (
    re.compile(r"^(?P<patient>person\d+)_(?P<kind>bacteria|virus)_(?P<seq>\d+)$", re.I),
    re.compile(r"^(?P<patient>NORMAL2-IM-\d+)-(?P<seq>\d+)$", re.I),
    re.compile(r"^(?P<patient>IM-\d+)-(?P<seq>\d+)$", re.I),
)


def parse_file_name(name: str) -> tuple[str, str | None, int | None]:
    """(patient id, 'bacteria'/'virus'/None, sequence number or None) of a Kermany file name."""
    stem = Path(name).stem
    for pattern in _PATTERNS:
        m = pattern.match(stem)
        if m:
            kind = m.groupdict().get("kind")
            return m["patient"], kind.lower() if kind else None, int(m["seq"])
    return stem, None, None


def find_kermany_dir(root: Path) -> Path:
    candidates = [root, root / "chest_xray", root / "chest_xray" / "chest_xray"]
    candidates += [d for d in sorted(root.iterdir()) if d.is_dir() and d.name != "__MACOSX"] if root.is_dir() else []
    for c in candidates:
        if (c / "train").is_dir() and (c / "test").is_dir():
            return c
    raise DatasetFormatError(f"{root}: no chest_xray/train and chest_xray/test folders found")


def read_kermany(root: str | os.PathLike, *, pathologies=None, views=None, missing_images: str = "error") -> pd.DataFrame:
    base = find_kermany_dir(Path(root))
    pathologies = list(pathologies or PATHOLOGIES)
    rows, unparsed = [], 0
    for folder, split in FOLDERS:
        if not (base / folder).is_dir():
            continue
        for cls in CLASSES:
            d = base / folder / cls
            if not d.is_dir():
                raise DatasetFormatError(f"{base / folder}: class folder {cls}/ missing")
            for f in sorted(d.iterdir()):
                if f.name.startswith(".") or f.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                patient, kind, seq = parse_file_name(f.name)
                unparsed += seq is None
                pneumonia = 1.0 if cls == "PNEUMONIA" else 0.0
                bacterial = viral = 0.0
                if pneumonia:
                    bacterial = 1.0 if kind == "bacteria" else (0.0 if kind == "virus" else np.nan)
                    viral = 1.0 if kind == "virus" else (0.0 if kind == "bacteria" else np.nan)
                rows.append({"image_id": f"{folder}/{cls}/{f.name}", "path": str(f), "patient_id": patient,
                             "seq": -1 if seq is None else seq, "view": "", "sex": "", "age": np.nan,
                             "official_split": split, "Pneumonia": pneumonia, "Bacterial": bacterial, "Viral": viral})
    if not rows:
        raise DatasetFormatError(f"{base}: no images in {{train,val,test}}/{{NORMAL,PNEUMONIA}}")
    if unparsed:
        log.warning("%s: %d file name(s) match no known pattern; each is its own patient", base, unparsed)
    manifest = pd.DataFrame(rows)
    manifest["follow_up"] = manifest.sort_values(["seq", "image_id"]).groupby("patient_id").cumcount()
    if views:
        manifest = manifest[manifest["view"].isin([v.upper() for v in views])]
    manifest = apply_missing_policy(manifest, missing_images, base)
    return manifest[BASE_COLUMNS + pathologies].reset_index(drop=True)
