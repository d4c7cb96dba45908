"""Reader for the NIH ChestX-ray14 layout (the public release, and the project's synthetic twin).

Layout: ``images/*.png``, ``Data_Entry_2017_v2020.csv`` (or ``Data_Entry_2017.csv``, optionally ``.gz``),
``BBox_List_2017.csv``, ``train_val_list.txt`` and ``test_list.txt`` (optionally ``.gz``).
Quirks handled: the bracketed header names contain commas (``OriginalImage[Width,Height]`` is split into
two columns by a CSV reader), ages written as ``058Y`` in the 2017 metadata, ``Infiltrate`` in the box
file versus ``Infiltration`` in Data_Entry, empty trailing columns in some copies of the box file.
"""

from __future__ import annotations

import gzip
import io
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .contract import BASE_COLUMNS, DatasetFormatError

PATHOLOGIES = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)
BOXED_FINDINGS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax")
NO_FINDING = "No Finding"
# Box-file spellings that differ from Data_Entry.
_BOX_FINDING_ALIASES = {"Infiltrate": "Infiltration"}

DATA_ENTRY_NAMES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
REQUIRED_ENTRY_COLUMNS = ("Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age",
                          "Patient Gender", "View Position")


def _find(root: Path, names) -> Path | None:
    for name in names:
        for candidate in (root / name, root / f"{name}.gz"):
            if candidate.exists():
                return candidate
    return None


def _read_text(path: Path) -> str:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetFormatError(f"{path}: cannot read ({exc})") from None


def csv_error(path: Path, exc: Exception) -> DatasetFormatError:
    """One line naming the file and, where pandas says it, the line: 'Expected 10 fields in line 3, saw 11'."""
    text = " ".join(str(exc).split())
    m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", text)
    if m:
        return DatasetFormatError(f"{path}: line {m[2]}: {m[3]} fields where the header has {m[1]}")
    m = re.search(r"line (\d+)", text)
    return DatasetFormatError(f"{path}: {'line ' + m[1] + ': ' if m else ''}malformed CSV ({text})")


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(io.StringIO(_read_text(path)), dtype=str, keep_default_na=False)
    except pd.errors.ParserError as exc:
        raise csv_error(path, exc) from None
    except pd.errors.EmptyDataError:
        raise DatasetFormatError(f"{path}: empty file (no header line)") from None


def _parse_age(value: str) -> float:
    value = value.strip()
    if not value:
        return np.nan
    if value[-1] in "YMD":  # 2017 metadata: 058Y; months/days for infants
        scale = {"Y": 1.0, "M": 1 / 12, "D": 1 / 365}[value[-1]]
        return float(value[:-1]) * scale
    return float(value)


def read_image_list(path: Path) -> list[str]:
    return [line.strip() for line in _read_text(path).splitlines() if line.strip()]


def read_nih(root: str | os.PathLike, *, pathologies=None, views=None, missing_images: str = "error") -> pd.DataFrame:
    """Parse an NIH ChestX-ray14 directory into a manifest (see ``contract``)."""
    root = Path(root)
    entry_path = _find(root, DATA_ENTRY_NAMES)
    if entry_path is None:
        raise DatasetFormatError(f"{root}: no {DATA_ENTRY_NAMES[0]} (or .gz, or {DATA_ENTRY_NAMES[1]}) found")
    entries = _read_csv(entry_path)
    missing_cols = [c for c in REQUIRED_ENTRY_COLUMNS if c not in entries.columns]
    if missing_cols:
        raise DatasetFormatError(f"{entry_path}: missing column(s) {missing_cols}; found {list(entries.columns)}")
    pathologies = list(pathologies or PATHOLOGIES)

    # "No Finding" is a label only when asked for (the NIH localization study's ninth output)
    col_of = {p: i for i, p in enumerate(PATHOLOGIES + (NO_FINDING,))}
    labels = np.zeros((len(entries), len(col_of)), dtype=np.float32)
    for row, text in enumerate(entries["Finding Labels"]):
        for finding in text.split("|"):
            finding = finding.strip()
            if finding not in col_of:
                # row + 2: 1-based line number in the file, after the header line
                raise DatasetFormatError(f"{entry_path}: line {row + 2}: unknown finding {finding!r} in 'Finding Labels'")
            labels[row, col_of[finding]] = 1.0

    follow_up = []
    for row, value in enumerate(entries["Follow-up #"]):
        try:
            follow_up.append(int(value.strip()))
        except ValueError:
            raise DatasetFormatError(f"{entry_path}: line {row + 2}: 'Follow-up #' {value!r} is not an integer") from None
    ages = []
    for row, value in enumerate(entries["Patient Age"]):
        try:
            ages.append(_parse_age(value))
        except ValueError:
            raise DatasetFormatError(f"{entry_path}: line {row + 2}: unreadable 'Patient Age' {value!r}") from None

    manifest = pd.DataFrame({
        "image_id": entries["Image Index"].str.strip(),
        "path": [str(root / "images" / name.strip()) for name in entries["Image Index"]],
        "patient_id": entries["Patient ID"].str.strip().str.lstrip("0").replace("", "0"),
        "follow_up": follow_up,
        "view": entries["View Position"].str.strip().str.upper(),
        "sex": entries["Patient Gender"].str.strip(),
        "age": ages,
        "official_split": "",
    })
    for p in pathologies:
        manifest[p] = labels[:, col_of[p]]
    dup = manifest["image_id"].duplicated().to_numpy()
    if dup.any():
        row = int(np.flatnonzero(dup)[0])
        raise DatasetFormatError(f"{entry_path}: line {row + 2}: duplicate 'Image Index' {manifest['image_id'].iloc[row]!r}")

    manifest["official_split"] = _official_split(root, manifest["image_id"])
    if views:
        manifest = manifest[manifest["view"].isin([v.upper() for v in views])]
    manifest = _apply_missing_policy(manifest, missing_images, root)
    return manifest[BASE_COLUMNS + pathologies].reset_index(drop=True)


def _official_split(root: Path, image_ids: pd.Series) -> pd.Series:
    train_path = _find(root, ["train_val_list.txt"])
    test_path = _find(root, ["test_list.txt"])
    if train_path is None and test_path is None:
        return pd.Series("", index=image_ids.index)
    train = set(read_image_list(train_path)) if train_path else None
    test = set(read_image_list(test_path)) if test_path else None
    if train is not None and test is not None:
        both = train & test
        if both:
            raise DatasetFormatError(f"{train_path} and {test_path} both list {sorted(both)[0]!r}")
    # The official release: the test list is every image not in train_val (and vice versa).
    if test is None:
        return image_ids.map(lambda i: "train_val" if i in train else "test")
    if train is None:
        return image_ids.map(lambda i: "test" if i in test else "train_val")
    split = image_ids.map(lambda i: "train_val" if i in train else ("test" if i in test else ""))
    unlisted = image_ids[split == ""]
    if len(unlisted):
        raise DatasetFormatError(
            f"{root}: {len(unlisted)} image(s) are in neither train_val_list nor test_list, e.g. {unlisted.iloc[0]!r}")
    return split


def _apply_missing_policy(manifest: pd.DataFrame, policy: str, root: Path) -> pd.DataFrame:
    exists = manifest["path"].map(os.path.exists)
    if exists.all():
        return manifest
    if policy == "drop":
        return manifest[exists]
    first = manifest.loc[~exists, "path"].iloc[0]
    raise DatasetFormatError(
        f"{root}: {int((~exists).sum())} image file(s) listed in the metadata are missing, e.g. {first}; "
        "set missing_images: drop for this dataset to use only the images present")


BOX_FILE = "BBox_List_2017.csv"


def find_box_file(root) -> Path | None:
    """The release's ground-truth box file in ``root`` (or its .gz), None when the copy has none."""
    return _find(Path(root), [BOX_FILE])


def read_nih_boxes(path: str | os.PathLike) -> pd.DataFrame:
    """Parse BBox_List_2017.csv into columns image_id, finding (Data_Entry spelling), x, y, w, h (1024 frame)."""
    path = Path(path)
    frame = _read_csv(path)
    frame = frame.loc[:, [c for c in frame.columns if not c.startswith("Unnamed")]]
    expected = ["Image Index", "Finding Label", "Bbox [x", "y", "w", "h]"]
    if list(frame.columns[:6]) != expected:
        raise DatasetFormatError(f"{path}: line 1: expected header {','.join(expected)!r}, found {','.join(frame.columns)!r}")
    boxes = pd.DataFrame({
        "image_id": frame["Image Index"].str.strip(),
        "finding": frame["Finding Label"].str.strip().replace(_BOX_FINDING_ALIASES),
    })
    for src, dst in zip(expected[2:], "xywh"):
        try:
            boxes[dst] = frame[src].astype(float)
        except ValueError as exc:
            raise DatasetFormatError(f"{path}: column {src!r} is not numeric ({exc})") from None
    unknown = ~boxes["finding"].isin(PATHOLOGIES)
    if unknown.any():
        row = int(np.flatnonzero(unknown.to_numpy())[0])
        raise DatasetFormatError(f"{path}: line {row + 2}: unknown finding {boxes['finding'].iloc[row]!r}")
    return boxes
