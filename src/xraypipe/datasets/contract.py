"""The dataset contract every reader fulfils (modelled on torchxrayvision's Dataset).

A reader turns a dataset directory into a *manifest*: a pandas DataFrame with one row per image,
row-aligned with the images, holding

- ``image_id``   unique image name within the dataset,
- ``path``       path of the image file,
- ``patient_id`` string; all splits are made by patient,
- ``follow_up``  integer visit index within the patient (0 when unknown),
- ``view``       view position (PA, AP, LL, LATERAL, ...; "" when unknown),
- ``sex``, ``age`` (NaN when unknown),
- ``official_split``  ``train_val`` / ``test`` from the dataset's official lists, "" when none,
- one float column per pathology: 1.0 positive, 0.0 negative, NaN unknown (not mentioned / blank),
  and, only for readers declaring ``has_uncertain=True`` (CheXpert), -1.0 = *uncertain* as written in the
  source. -1.0 is kept in the manifest on purpose: mapping it (U-Ignore -> NaN, U-Zeros -> 0, U-Ones -> 1,
  ...) is a label-encoding decision taken downstream, never by a reader.

Optional columns (``OPTIONAL_COLUMNS``) a reader may add; every later stage carries them along:

- ``study_id``    the study an image belongs to (MURA: labels are per study; CheXpert: patient/study),
- ``body_part``   MURA's body part (``XR_ELBOW``, ...),
- ``array_key``, ``array_index``  for datasets shipped as arrays (MedMNIST ``.npz``): the image is
  ``np.load(path)[array_key][array_index]``; the cache stage reads these instead of decoding a file.

Every model, loss and metric consumes this contract only, so each works on every dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

BASE_COLUMNS = ["image_id", "path", "patient_id", "follow_up", "view", "sex", "age", "official_split"]
OPTIONAL_COLUMNS = ["study_id", "body_part", "array_key", "array_index"]
UNCERTAIN = -1.0
# official_split values: "train_val" (the release's training pool), "val" (an official validation set that the
# splits stage uses as is), "test", or "" (no official split).
OFFICIAL_SPLITS = ("train_val", "val", "test", "")


class DatasetFormatError(ValueError):
    """A dataset file is missing or malformed; the message names the file (and row/column)."""


@dataclass(frozen=True)
class DatasetReader:
    name: str
    pathologies: tuple[str, ...]
    read: Callable[..., pd.DataFrame]
    generate: Callable[[Path, dict], dict] | None = None
    has_uncertain: bool = False          # labels may be -1.0 (uncertain), see the module docstring
    options: tuple[str, ...] = ()        # extra dataset config keys passed to ``read`` (e.g. body_parts)
    find_boxes: Callable[[Path], Path | None] | None = None  # the raw directory's ground-truth box file, if any
    extra_labels: tuple[str, ...] = ()   # labels a config may ask for beyond the default ones (NIH: No Finding)


def manifest_columns(manifest: pd.DataFrame, pathologies) -> list[str]:
    """BASE_COLUMNS, the optional columns present, then the pathologies: the column order of every manifest."""
    return BASE_COLUMNS + [c for c in OPTIONAL_COLUMNS if c in manifest.columns] + list(pathologies)


def validate_manifest(manifest: pd.DataFrame, pathologies: list[str], source: str = "manifest",
                      allow_uncertain: bool = False) -> None:
    """Raise DatasetFormatError if ``manifest`` breaks the contract (-1.0 allowed only with ``allow_uncertain``)."""
    missing = [c for c in BASE_COLUMNS + list(pathologies) if c not in manifest.columns]
    if missing:
        raise DatasetFormatError(f"{source}: missing column(s) {missing}")
    if manifest["image_id"].duplicated().any():
        dup = manifest.loc[manifest["image_id"].duplicated(), "image_id"].iloc[0]
        raise DatasetFormatError(f"{source}: duplicate image_id {dup!r}")
    for p in pathologies:
        values = manifest[p].to_numpy(dtype=float)
        ok = np.isnan(values) | (values == 0.0) | (values == 1.0)
        if allow_uncertain:
            ok |= values == UNCERTAIN
        bad = ~ok
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            allowed = "0, 1, -1 (uncertain) or NaN" if allow_uncertain else "0, 1 or NaN"
            raise DatasetFormatError(f"{source}: row {row}: label {p!r} has value {values[row]!r}; expected {allowed}")
    if "official_split" in manifest.columns:
        bad_split = ~manifest["official_split"].fillna("").isin(OFFICIAL_SPLITS)
        if bad_split.any():
            row = int(np.flatnonzero(bad_split.to_numpy())[0])
            raise DatasetFormatError(f"{source}: row {row}: official_split {manifest['official_split'].iloc[row]!r}; "
                                     f"expected one of {OFFICIAL_SPLITS}")


def pathology_columns(manifest: pd.DataFrame, reader_pathologies) -> list[str]:
    return [p for p in reader_pathologies if p in manifest.columns]


# ------------------------------------------------------------------------------------------------ the manifest file
NON_LABEL_COLUMNS = set(BASE_COLUMNS) | set(OPTIONAL_COLUMNS) | {"split", "cache_row"}


def manifest_pathologies(frame: pd.DataFrame) -> list[str]:
    """The label columns of a manifest or cache index (every column that is not an image attribute)."""
    return [c for c in frame.columns if c not in NON_LABEL_COLUMNS]


def read_manifest(path: str | Path) -> pd.DataFrame:
    """A manifest CSV as written by the splits stage, with its id and text columns kept as strings."""
    return pd.read_csv(path, dtype={"patient_id": str, "image_id": str, "view": str, "official_split": str,
                                    "sex": str, "study_id": str, "body_part": str, "array_key": str},
                       keep_default_na=True).fillna({"official_split": "", "view": ""})
