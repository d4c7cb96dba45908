"""Reader for MURA v1.1 (musculoskeletal radiographs), and its synthetic twin.

Layout (as in the release archive)::

    MURA-v1.1/train_image_paths.csv     one image path per line, no header
    MURA-v1.1/train_labeled_studies.csv "<study dir>/,<0|1>" per line, no header
    MURA-v1.1/valid_image_paths.csv, valid_labeled_studies.csv
    MURA-v1.1/{train,valid}/XR_<PART>/patient<NNNNN>/study<K>_{positive,negative}/image<M>.png

Labels are per *study* (1 = abnormal); every image inherits its study's label (column ``Abnormal``) and keeps
``study_id`` (e.g. ``train/XR_WRIST/patient00001/study1_positive``) so predictions can be aggregated per study,
and ``body_part`` (one of ``BODY_PARTS``). The official ``valid`` set is the test split (the MURA test set is
hidden); validation is carved from train by patient. MURA has no sex/age/view: "" / NaN.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .common import apply_missing_policy, find_dataset_dir, parse_labels, read_csv, relative_to_base, strip_release_dir
from .contract import BASE_COLUMNS, DatasetFormatError

PATHOLOGIES = ("Abnormal",)
BODY_PARTS = ("XR_ELBOW", "XR_FINGER", "XR_FOREARM", "XR_HAND", "XR_HUMERUS", "XR_SHOULDER", "XR_WRIST")
_IMAGE = re.compile(r"(?:^|/)(train|valid)/(XR_[A-Z]+)/(patient\d+)/(study(\d+)_[a-z]+)/([^/]+)$")
SPLITS = (("train", "train_val"), ("valid", "test"))


def _study_labels(path: Path, base: Path) -> dict[str, float]:
    frame = read_csv(path, header=False, names=["study", "label"])
    labels = parse_labels(frame["label"], path, "label", {"1": 1.0, "0": 0.0}, first_line=1)
    out = {}
    for row, (study, label) in enumerate(zip(frame["study"], labels)):
        key = strip_release_dir(base, study.strip())
        if key in out:
            raise DatasetFormatError(f"{path}: line {row + 1}: study {study!r} listed twice")
        out[key] = float(label)
    return out


def read_mura(root: str | os.PathLike, *, pathologies=None, views=None, missing_images: str = "error",
              body_parts=None) -> pd.DataFrame:
    root = Path(root)
    base = find_dataset_dir(root, "train_image_paths.csv")
    pathologies = list(pathologies or PATHOLOGIES)
    rows, seen = [], {}
    for prefix, split in SPLITS:
        paths_csv, studies_csv = base / f"{prefix}_image_paths.csv", base / f"{prefix}_labeled_studies.csv"
        for f in (paths_csv, studies_csv):
            if not f.exists():
                raise DatasetFormatError(f"{base}: {f.name} not found")
        labels = _study_labels(studies_csv, base)
        images = read_csv(paths_csv, header=False, names=["path"])
        for line, rel in enumerate(images["path"].str.strip(), start=1):
            m = _IMAGE.search(rel)
            if not m:
                raise DatasetFormatError(f"{paths_csv}: line {line}: unexpected image path {rel!r} "
                                         "(expected <split>/XR_<PART>/patient<N>/study<K>_<label>/<image>)")
            study = strip_release_dir(base, rel.rsplit("/", 1)[0])
            if study not in labels:
                raise DatasetFormatError(f"{paths_csv}: line {line}: study {study!r} of {rel!r} has no label in "
                                         f"{studies_csv.name}")
            if m[2] not in BODY_PARTS:
                raise DatasetFormatError(f"{paths_csv}: line {line}: unknown body part {m[2]!r}; known: {', '.join(BODY_PARTS)}")
            image_id = strip_release_dir(base, rel)
            if image_id in seen:
                raise DatasetFormatError(f"{paths_csv}: line {line}: image {rel!r} listed twice (first: "
                                         f"{seen[image_id]})")
            seen[image_id] = f"{paths_csv.name} line {line}"
            rows.append({"image_id": image_id, "path": str(relative_to_base(base, rel)),
                         "patient_id": m[3], "follow_up": int(m[5]) - 1, "view": "", "sex": "", "age": np.nan,
                         "official_split": split, "study_id": study, "body_part": m[2], "Abnormal": labels[study]})
    manifest = pd.DataFrame(rows)
    if manifest.empty:
        raise DatasetFormatError(f"{base}: no images listed")
    if body_parts:
        unknown = [b for b in body_parts if b not in BODY_PARTS]
        if unknown:
            raise DatasetFormatError(f"body_parts: unknown {unknown}; known: {', '.join(BODY_PARTS)}")
        manifest = manifest[manifest["body_part"].isin(body_parts)]
    if views:
        manifest = manifest[manifest["view"].isin([v.upper() for v in views])]
    manifest = apply_missing_policy(manifest, missing_images, base)
    return manifest[BASE_COLUMNS + ["study_id", "body_part"] + pathologies].reset_index(drop=True)
