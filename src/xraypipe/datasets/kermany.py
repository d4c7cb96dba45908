"""Reader for the Kermany et al. (2018) pediatric chest X-ray release (``ChestXRay2017.zip``, Kaggle copy too).

Layout::

    chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/<file>.jpeg       (``val`` only in the Kaggle copy)

``root`` may be ``chest_xray`` itself or any parent up to two levels (the Kaggle copy nests
``chest_xray/chest_xray``; ``__MACOSX`` folders are ignored). Only ``train/`` is required: a train-only copy has
no official test split, and the splits stage then draws a patient-wise stand-in (``split.test_fraction``) or none.

Patient ids come from the file names; every pattern of the real release is known:

- ``person<N>_bacteria_<K>.jpeg``, ``person<N>_virus_<K>.jpeg``, ``person<N>_virus_<K>_<J>.jpeg`` -> ``person<N>``,
- ``IM-<P>-<S>.jpeg``, ``IM-<P>-<S>-<J>.jpeg`` -> ``IM-<P>``,
- ``NORMAL2-IM-<P>-<S>.jpeg``, ``NORMAL2-IM-<P>-<S>-<J>.jpeg`` -> ``NORMAL2-IM-<P>``.

The release numbers ``test/`` patients independently of ``train/`` (170 ids occur in both folders), and its
official split is by folder. So every patient id is namespaced by its official split: ``train/person1`` and
``test/person1`` are different children. The Kaggle ``val`` folder (16 images drawn from train) shares the
``train`` namespace, so its images stay with their patients. A name matching no pattern becomes its own patient
(with a warning that lists how many).

Labels: ``Pneumonia`` (folder), and ``Bacterial`` / ``Viral`` (from the file name; NaN when it says neither).
The official 624-image ``test`` folder is the test split; ``train`` and ``val`` form the training pool, from
which the splits stage carves validation *by patient*.
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
# folder -> (official split, patient-id namespace)
FOLDERS = (("train", "train_val", "train"), ("val", "train_val", "train"), ("test", "test", "test"))
_PATTERNS = (
    re.compile(r"^(?P<patient>person\d+)_(?P<kind>bacteria|virus)_(?P<seq>\d+)(?:_(?P<sub>\d+))?$", re.I),
    re.compile(r"^(?P<patient>NORMAL2-IM-\d+)-(?P<seq>\d+)(?:-(?P<sub>\d+))?$", re.I),
    re.compile(r"^(?P<patient>IM-\d+)-(?P<seq>\d+)(?:-(?P<sub>\d+))?$", re.I),
)


def parse_file_name(name: str) -> tuple[str, str | None, int | None]:
    """(patient id, 'bacteria'/'virus'/None, sequence number or None) of a Kermany file name.

    The sequence number orders a patient's images: ``<S>`` then the optional ``<J>`` (``S * 1000 + J``).
    """
    stem = Path(name).stem
    for pattern in _PATTERNS:
        m = pattern.match(stem)
        if m:
            kind = m.groupdict().get("kind")
            sub = m["sub"]
            return m["patient"], kind.lower() if kind else None, int(m["seq"]) * 1000 + (int(sub) if sub else 0)
    return stem, None, None


def find_kermany_dir(root: Path) -> Path:
    candidates = [root, root / "chest_xray", root / "chest_xray" / "chest_xray"]
    candidates += [d for d in sorted(root.iterdir()) if d.is_dir() and d.name != "__MACOSX"] if root.is_dir() else []
    for c in candidates:
        if (c / "train").is_dir():
            return c
    raise DatasetFormatError(f"{root}: no chest_xray/train folder found (the release layout is "
                             "chest_xray/{train,test}/{NORMAL,PNEUMONIA}/)")


def read_kermany(root: str | os.PathLike, *, pathologies=None, views=None, missing_images: str = "error") -> pd.DataFrame:
    base = find_kermany_dir(Path(root))
    pathologies = list(pathologies or PATHOLOGIES)
    rows, unparsed = [], []
    for folder, split, namespace in FOLDERS:
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
                if seq is None:
                    unparsed.append(f"{folder}/{cls}/{f.name}")
                pneumonia = 1.0 if cls == "PNEUMONIA" else 0.0
                bacterial = viral = 0.0
                if pneumonia:
                    bacterial = 1.0 if kind == "bacteria" else (0.0 if kind == "virus" else np.nan)
                    viral = 1.0 if kind == "virus" else (0.0 if kind == "bacteria" else np.nan)
                rows.append({"image_id": f"{folder}/{cls}/{f.name}", "path": str(f),
                             "patient_id": f"{namespace}/{patient}",
                             "seq": -1 if seq is None else seq, "view": "", "sex": "", "age": np.nan,
                             "official_split": split, "Pneumonia": pneumonia, "Bacterial": bacterial, "Viral": viral})
    if not rows:
        raise DatasetFormatError(f"{base}: no images in {{train,val,test}}/{{NORMAL,PNEUMONIA}}")
    if unparsed:
        log.warning("%s: %d file name(s) match no known pattern, e.g. %s; each is its own patient", base,
                    len(unparsed), unparsed[0])
    manifest = pd.DataFrame(rows)
    manifest["follow_up"] = manifest.sort_values(["seq", "image_id"]).groupby("patient_id").cumcount()
    if views:
        manifest = manifest[manifest["view"].isin([v.upper() for v in views])]
    manifest = apply_missing_policy(manifest, missing_images, base)
    return manifest[BASE_COLUMNS + pathologies].reset_index(drop=True)
