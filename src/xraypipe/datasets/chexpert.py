"""Reader for CheXpert v1.0 (``CheXpert-v1.0-small`` and the full ``CheXpert-v1.0``), and its synthetic twin.

Layout (as in the release archive)::

    CheXpert-v1.0-small/train.csv, valid.csv
    CheXpert-v1.0-small/{train,valid}/patient<NNNNN>/study<K>/view<M>_{frontal,lateral}.jpg

``root`` may be that folder or its parent. The CSV ``Path`` column starts with the folder name.
Columns: ``Path, Sex, Age, Frontal/Lateral, AP/PA`` and 14 observations whose cells are ``1.0`` (positive),
``0.0`` (negative), ``-1.0`` (uncertain) or blank (not mentioned).

Manifest encoding (see ``contract``): 1.0 / 0.0 as is, **-1.0 kept** (the reader declares ``has_uncertain``; the
uncertainty policy is a label-encoding choice made downstream), blank -> NaN. ``view``: the ``AP/PA`` value for
frontal images (``AP``, ``PA``; "" when blank) and ``LATERAL`` for lateral images. ``sex``: ``M``/``F`` ("" for
Unknown). Official split: ``train.csv`` -> ``train_val``, ``valid.csv`` (the official validation set, 200
patients, radiologist-labelled) -> ``test``; the splits stage carves validation from train by patient.
``study_id`` is ``patient<N>/study<K>``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .common import apply_missing_policy, find_dataset_dir, parse_age, parse_labels, read_csv, relative_to_base, strip_release_dir
from .contract import BASE_COLUMNS, DatasetFormatError

PATHOLOGIES = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
               "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
               "Fracture", "Support Devices")
META_COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")
LABEL_VALUES = {"1.0": 1.0, "1": 1.0, "0.0": 0.0, "0": 0.0, "-1.0": -1.0, "-1": -1.0, "": np.nan}
SEX = {"Male": "M", "Female": "F", "Unknown": "", "": ""}
_PATIENT_STUDY = re.compile(r"(patient\d+)/study(\d+)/")
CSV_FILES = (("train.csv", "train_val"), ("valid.csv", "test"))


def parse_chexpert_csv(path: Path, base_dir: Path, pathologies=None) -> pd.DataFrame:
    """One CheXpert CSV -> manifest rows (without the official split and without checking the images)."""
    path = Path(path)
    frame = read_csv(path, required=META_COLUMNS + tuple(pathologies or PATHOLOGIES))
    pathologies = list(pathologies or PATHOLOGIES)
    rel = frame["Path"].str.strip()
    ids, patients, follow, studies = [], [], [], []
    for row, value in enumerate(rel):
        m = _PATIENT_STUDY.search(value)
        if not m:
            raise DatasetFormatError(f"{path}: line {row + 2}: 'Path' {value!r} has no patient<N>/study<K>/ part")
        ids.append(strip_release_dir(base_dir, value))
        patients.append(m[1])
        studies.append(f"{m[1]}/study{m[2]}")
        follow.append(int(m[2]) - 1)
    sex = []
    for row, value in enumerate(frame["Sex"]):
        if value.strip() not in SEX:
            raise DatasetFormatError(f"{path}: line {row + 2}: unknown 'Sex' {value!r}; expected Male, Female or Unknown")
        sex.append(SEX[value.strip()])
    views = []
    for row, (fl, appa) in enumerate(zip(frame["Frontal/Lateral"].str.strip(), frame["AP/PA"].str.strip().str.upper())):
        if fl == "Frontal":
            views.append(appa if appa in ("AP", "PA") else ("" if not appa else appa))
        elif fl == "Lateral":
            views.append("LATERAL")
        else:
            raise DatasetFormatError(f"{path}: line {row + 2}: unknown 'Frontal/Lateral' {fl!r}; expected Frontal or Lateral")
    manifest = pd.DataFrame({
        "image_id": ids,
        "path": [str(relative_to_base(base_dir, v)) for v in rel],
        "patient_id": patients,
        "follow_up": follow,
        "view": views,
        "sex": sex,
        "age": parse_age(frame["Age"], path),
        "official_split": "",
        "study_id": studies,
    })
    for p in pathologies:
        manifest[p] = parse_labels(frame[p], path, p, LABEL_VALUES)
    dup = manifest["image_id"].duplicated()
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        raise DatasetFormatError(f"{path}: line {row + 2}: duplicate 'Path' {rel.iloc[row]!r}")
    return manifest


def read_chexpert(root: str | os.PathLike, *, pathologies=None, views=None, missing_images: str = "error") -> pd.DataFrame:
    root = Path(root)
    base = find_dataset_dir(root, "train.csv")
    pathologies = list(pathologies or PATHOLOGIES)
    parts = []
    for name, split in CSV_FILES:
        path = base / name
        if not path.exists():
            if name == "train.csv":
                raise DatasetFormatError(f"{base}: {name} not found")
            continue  # a release without valid.csv: the splits stage draws a test split by patient
        part = parse_chexpert_csv(path, base, pathologies)
        part["official_split"] = split
        parts.append(part)
    manifest = pd.concat(parts, ignore_index=True)
    both = set(manifest.loc[manifest["official_split"] == "test", "patient_id"]) & set(
        manifest.loc[manifest["official_split"] == "train_val", "patient_id"])
    if both:
        raise DatasetFormatError(f"{base}: patient {sorted(both)[0]!r} is in both train.csv and valid.csv")
    if manifest["image_id"].duplicated().any():
        raise DatasetFormatError(f"{base}: image {manifest.loc[manifest['image_id'].duplicated(), 'image_id'].iloc[0]!r} "
                                 "is listed in both train.csv and valid.csv")
    if views:
        manifest = manifest[manifest["view"].isin([v.upper() for v in views])]
    manifest = apply_missing_policy(manifest, missing_images, base)
    return manifest[BASE_COLUMNS + ["study_id"] + pathologies].reset_index(drop=True)
