"""Patient-wise train/val/test splits, and the leakage check every later stage relies on; and, only as an
explicit choice, the ChestX-ray8 study's random image-level split (which leaks patients across splits)."""

from __future__ import annotations

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")
SPLIT_UNITS = ("patient", "image")  # datasets.<d>.split.unit


class SplitLeakageError(RuntimeError):
    """A patient appears in more than one split."""


def _sample_patients(patients: np.ndarray, fraction: float, rng: np.random.Generator) -> set:
    """Pick ``fraction`` of the patients (at least one, and never all when there is more than one); none for 0."""
    n = len(patients)
    if n == 0 or fraction <= 0:
        return set()
    k = int(round(fraction * n))
    k = min(max(k, 1), n - 1) if n > 1 else 0
    return set(rng.permutation(patients)[:k])


def assign_splits(manifest: pd.DataFrame, *, use_official: bool = True, val_fraction: float = 0.15,
                  test_fraction: float = 0.2, seed: int = 0, unit: str = "patient") -> pd.DataFrame:
    """Return a copy of ``manifest`` with a ``split`` column in {train, val, test}.

    The test split comes from the official lists when present (and ``use_official``), otherwise
    ``test_fraction`` of the patients. Validation is the official validation set when the reader marks one
    (``official_split == "val"``, e.g. MedMNIST), otherwise ``val_fraction`` of the remaining patients.
    Everything is drawn by patient, seeded, and independent of row order.

    ``unit="image"``: ``image_level_splits`` instead (no official list, no patient grouping: it leaks).
    """
    if unit not in SPLIT_UNITS:
        raise ValueError(f"split unit must be one of {list(SPLIT_UNITS)}, not {unit!r}")
    if unit == "image":
        return image_level_splits(manifest, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    frame = manifest.copy()
    rng = np.random.default_rng(seed)
    official = frame["official_split"].fillna("") if "official_split" in frame else pd.Series("", index=frame.index)
    if use_official and (official == "test").any():
        is_test = official == "test"
    else:  # drawn by patient, leaving an official validation set (if any) intact
        eligible = (official != "val") if use_official else pd.Series(True, index=frame.index)
        patients = np.array(sorted(frame.loc[eligible, "patient_id"].astype(str).unique()))
        test_patients = _sample_patients(patients, test_fraction, rng)
        is_test = frame["patient_id"].astype(str).isin(test_patients)
    official_val = (official == "val") & ~is_test
    if use_official and official_val.any():
        is_val = official_val
    else:
        pool = np.array(sorted(frame.loc[~is_test, "patient_id"].astype(str).unique()))
        val_patients = _sample_patients(pool, val_fraction, rng)
        is_val = frame["patient_id"].astype(str).isin(val_patients)
    frame["split"] = np.where(is_test, "test", np.where(is_val, "val", "train"))
    check_patient_leakage(frame)
    return frame


def image_level_splits(manifest: pd.DataFrame, *, val_fraction: float, test_fraction: float,
                       seed: int = 0) -> pd.DataFrame:
    """The ChestX-ray8 study's protocol: the images shuffled and cut into test (``test_fraction`` of them), then
    validation (``val_fraction`` of the rest) and train, whatever patient they belong to; official lists are
    ignored. A patient's follow-up films then sit in several splits, so test figures are optimistic: this exists
    to reproduce that study's figures and to measure the leak beside a patient-wise split, never as a default.
    Seeded and independent of row order."""
    frame = manifest.copy()
    ids = np.array(sorted(frame["image_id"].astype(str)))
    order = np.random.default_rng(seed).permutation(len(ids))
    n_test = int(round(test_fraction * len(ids)))
    n_val = int(round(val_fraction * (len(ids) - n_test)))
    test, val = set(ids[order[:n_test]]), set(ids[order[n_test:n_test + n_val]])
    frame["split"] = [("test" if i in test else "val" if i in val else "train") for i in frame["image_id"].astype(str)]
    return frame


def sample_per_class(manifest: pd.DataFrame, labels, *, max_per_class: int, seed: int = 0,
                     splits=("train", "val")) -> pd.DataFrame:
    """A seeded per-class sample of the given splits (the NIH localization study: at most 5,000 images per class):
    in each split, for each label, at most ``max_per_class`` of its positive images (label == 1), drawn from the
    image ids in sorted order so that the file order does not matter; the union is kept, with every image of the
    other splits. An image positive for several labels can be drawn by each, so a label may keep more than
    ``max_per_class``; an image positive for none of ``labels`` is dropped from the sampled splits."""
    rng = np.random.default_rng(seed)
    keep = ~manifest["split"].isin(list(splits)).to_numpy()
    for split in splits:
        in_split = manifest[manifest["split"] == split].sort_values("image_id", kind="stable")
        for label in labels:
            positive = in_split.index[in_split[label].to_numpy() == 1]
            chosen = positive if len(positive) <= max_per_class else \
                positive[np.sort(rng.choice(len(positive), size=int(max_per_class), replace=False))]
            keep[manifest.index.get_indexer(chosen)] = True
    return manifest[keep].reset_index(drop=True)


def patients_in_several_splits(manifest: pd.DataFrame) -> int:
    return int((manifest.groupby(manifest["patient_id"].astype(str))["split"].nunique() > 1).sum())


def check_patient_leakage(manifest: pd.DataFrame, source: str = "manifest") -> None:
    """Raise SplitLeakageError naming patients found in more than one split (e.g. official lists that are not patient-wise)."""
    per_patient = manifest.groupby(manifest["patient_id"].astype(str))["split"].unique()
    leaking = per_patient[per_patient.map(len) > 1]
    if len(leaking):
        examples = "; ".join(f"patient {pid}: {sorted(splits)}" for pid, splits in leaking.head(5).items())
        raise SplitLeakageError(
            f"{source}: {len(leaking)} patient(s) appear in more than one split ({examples}). "
            "Refusing to continue: images of one patient must stay in one split.")


def split_summary(manifest: pd.DataFrame, pathologies, unit: str = "patient") -> pd.DataFrame:
    """Images, patients and positives per split; with an image-level split also ``patients_shared``: the
    split's patients who have images in another split too."""
    rows = []
    per_patient = manifest.groupby(manifest["patient_id"].astype(str))["split"].nunique()
    shared = set(per_patient[per_patient > 1].index)
    for split in SPLITS:
        part = manifest[manifest["split"] == split]
        row = {"split": split, "images": len(part), "patients": part["patient_id"].nunique()}
        if unit == "image":
            row["patients_shared"] = int(part["patient_id"].astype(str).drop_duplicates().isin(shared).sum())
        row.update({p: int((part[p].to_numpy(dtype=float) == 1.0).sum()) for p in pathologies})  # positives
        row.update({f"{p}_uncertain": int((part[p].to_numpy(dtype=float) == -1.0).sum())
                    for p in pathologies if (part[p].to_numpy(dtype=float) == -1.0).any()})
        rows.append(row)
    return pd.DataFrame(rows)
