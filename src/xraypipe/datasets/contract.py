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
- one float column per pathology: 1.0 positive, 0.0 negative, NaN unknown.

Every model, loss and metric consumes this contract only, so each works on every dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

BASE_COLUMNS = ["image_id", "path", "patient_id", "follow_up", "view", "sex", "age", "official_split"]


class DatasetFormatError(ValueError):
    """A dataset file is missing or malformed; the message names the file (and row/column)."""


@dataclass(frozen=True)
class DatasetReader:
    name: str
    pathologies: tuple[str, ...]
    read: Callable[..., pd.DataFrame]
    generate: Callable[[Path, dict], dict] | None = None


def validate_manifest(manifest: pd.DataFrame, pathologies: list[str], source: str = "manifest") -> None:
    """Raise DatasetFormatError if ``manifest`` breaks the contract."""
    missing = [c for c in BASE_COLUMNS + list(pathologies) if c not in manifest.columns]
    if missing:
        raise DatasetFormatError(f"{source}: missing column(s) {missing}")
    if manifest["image_id"].duplicated().any():
        dup = manifest.loc[manifest["image_id"].duplicated(), "image_id"].iloc[0]
        raise DatasetFormatError(f"{source}: duplicate image_id {dup!r}")
    for p in pathologies:
        values = manifest[p].to_numpy(dtype=float)
        bad = ~(np.isnan(values) | (values == 0.0) | (values == 1.0))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DatasetFormatError(f"{source}: row {row}: label {p!r} has value {values[row]!r}; expected 0, 1 or NaN")


def pathology_columns(manifest: pd.DataFrame, reader_pathologies) -> list[str]:
    return [p for p in reader_pathologies if p in manifest.columns]
