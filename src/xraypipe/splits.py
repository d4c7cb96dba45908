"""Patient-wise train/val/test splits, and the leakage check every later stage relies on."""

from __future__ import annotations

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")


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
                  test_fraction: float = 0.2, seed: int = 0) -> pd.DataFrame:
    """Return a copy of ``manifest`` with a ``split`` column in {train, val, test}.

    The test split comes from the official lists when present (and ``use_official``), otherwise
    ``test_fraction`` of the patients. Validation is the official validation set when the reader marks one
    (``official_split == "val"``, e.g. MedMNIST), otherwise ``val_fraction`` of the remaining patients.
    Everything is drawn by patient, seeded, and independent of row order.
    """
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


def check_patient_leakage(manifest: pd.DataFrame, source: str = "manifest") -> None:
    """Raise SplitLeakageError naming patients found in more than one split (e.g. official lists that are not patient-wise)."""
    per_patient = manifest.groupby(manifest["patient_id"].astype(str))["split"].unique()
    leaking = per_patient[per_patient.map(len) > 1]
    if len(leaking):
        examples = "; ".join(f"patient {pid}: {sorted(splits)}" for pid, splits in leaking.head(5).items())
        raise SplitLeakageError(
            f"{source}: {len(leaking)} patient(s) appear in more than one split ({examples}). "
            "Refusing to continue: images of one patient must stay in one split.")


def split_summary(manifest: pd.DataFrame, pathologies) -> pd.DataFrame:
    rows = []
    for split in SPLITS:
        part = manifest[manifest["split"] == split]
        row = {"split": split, "images": len(part), "patients": part["patient_id"].nunique()}
        row.update({p: int((part[p].to_numpy(dtype=float) == 1.0).sum()) for p in pathologies})  # positives
        row.update({f"{p}_uncertain": int((part[p].to_numpy(dtype=float) == -1.0).sum())
                    for p in pathologies if (part[p].to_numpy(dtype=float) == -1.0).any()})
        rows.append(row)
    return pd.DataFrame(rows)
