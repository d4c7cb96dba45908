import pandas as pd
import pytest

from xraypipe.splits import SplitLeakageError, assign_splits, check_patient_leakage


def _manifest(n_patients=50, per_patient=3, official=None):
    rows = []
    for p in range(n_patients):
        for f in range(per_patient):
            rows.append({"image_id": f"{p:08d}_{f:03d}.png", "patient_id": str(p), "follow_up": f,
                         "official_split": "" if official is None else official(p), "Mass": float(p % 2)})
    return pd.DataFrame(rows)


def test_random_split_is_patient_wise_and_seeded():
    m = _manifest()
    a = assign_splits(m, val_fraction=0.2, test_fraction=0.2, seed=1)
    b = assign_splits(m.sample(frac=1.0, random_state=3), val_fraction=0.2, test_fraction=0.2, seed=1)
    assert a.groupby("patient_id")["split"].nunique().max() == 1
    assert set(a["split"]) == {"train", "val", "test"}
    # independent of row order
    assert a.set_index("image_id")["split"].sort_index().equals(b.set_index("image_id")["split"].sort_index())
    assert a.groupby("split")["patient_id"].nunique().to_dict() == {"test": 10, "train": 32, "val": 8}
    c = assign_splits(m, val_fraction=0.2, test_fraction=0.2, seed=2)
    assert not a["split"].equals(c["split"])


def test_official_lists_define_test_and_val_is_carved_by_patient():
    m = _manifest(official=lambda p: "test" if p < 10 else "train_val")
    s = assign_splits(m, val_fraction=0.25, seed=0)
    assert (s.loc[s["patient_id"].astype(int) < 10, "split"] == "test").all()
    assert set(s.loc[s["patient_id"].astype(int) >= 10, "split"]) == {"train", "val"}
    assert s.loc[s["split"] == "val", "patient_id"].nunique() == 10
    # ignoring the official lists on request
    r = assign_splits(m, use_official=False, val_fraction=0.25, test_fraction=0.3, seed=0)
    assert not (r.loc[r["patient_id"].astype(int) < 10, "split"] == "test").all()


def test_leaking_official_lists_are_refused():
    # an official list that puts follow-ups of one patient in both train_val and test
    m = _manifest(official=lambda p: "test" if p < 10 else "train_val")
    m.loc[(m["patient_id"] == "3") & (m["follow_up"] == 2), "official_split"] = "train_val"
    with pytest.raises(SplitLeakageError, match=r"1 patient\(s\) appear in more than one split \(patient 3"):
        assign_splits(m, val_fraction=0.2, seed=0)


def test_check_patient_leakage_detects_any_pair():
    m = _manifest(n_patients=4)
    m["split"] = "train"
    check_patient_leakage(m)
    m.loc[5, "split"] = "val"
    with pytest.raises(SplitLeakageError, match="patient 1"):
        check_patient_leakage(m, source="x.csv")
