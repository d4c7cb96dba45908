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


def test_image_level_split_is_the_chestxray8_protocol_and_leaks_patients():
    from xraypipe.splits import patients_in_several_splits, split_summary

    m = _manifest(n_patients=100, per_patient=3, official=lambda p: "test" if p < 10 else "train_val")
    s = assign_splits(m, val_fraction=1 / 9, test_fraction=0.1, seed=0, unit="image")
    # 80/10/10 of the 300 images, the official lists ignored
    assert s["split"].value_counts().to_dict() == {"train": 240, "test": 30, "val": 30}
    assert not (s.loc[s["patient_id"].astype(int) < 10, "split"] == "test").all()
    # seeded, independent of row order
    again = assign_splits(m.sample(frac=1.0, random_state=5), val_fraction=1 / 9, test_fraction=0.1, seed=0,
                          unit="image")
    assert s.set_index("image_id")["split"].sort_index().equals(again.set_index("image_id")["split"].sort_index())
    # the leak it exists to measure: patients with images in several splits, counted in the summary
    shared = patients_in_several_splits(s)
    assert shared > 0
    with pytest.raises(SplitLeakageError):
        check_patient_leakage(s)
    summary = split_summary(s, ["Mass"], unit="image").set_index("split")
    # (seed 0: every test patient also has images in train or val)
    assert summary.loc["test", "patients_shared"] == s.loc[s["split"] == "test", "patient_id"].nunique()
    assert 0 < summary.loc["train", "patients_shared"] <= shared
    assert "patients_shared" not in split_summary(assign_splits(m, seed=0), ["Mass"]).columns
    with pytest.raises(ValueError, match="split unit must be one of"):
        assign_splits(m, unit="study")


def test_image_level_split_runs_through_splits_and_cache_with_a_warning(tmp_path, capsys):
    from xraypipe.config import validate_config
    from xraypipe.stages import build_cache, make_splits
    from xraypipe.synthetic.nih import generate_nih_synthetic

    raw = tmp_path / "raw"
    generate_nih_synthetic(raw, {"n_patients": 30, "image_size": 32, "follow_ups": [2, 4]})

    def dataset(unit):
        cfg = {"experiment": {"datasets": ["d"], "variants": ["v"]}, "variants": {"v": {"model": "small_cnn"}},
               "datasets": {"d": {"reader": "nih", "source": "local", "root": str(raw),
                                  "split": {"unit": unit, "use_official": False, "test_fraction": 0.1,
                                            "val_fraction": 1 / 9},
                                  "preprocess": {"image_size": 32}}}}
        return validate_config(cfg)["datasets"]["d"]

    manifest = make_splits(dataset("image"), raw, tmp_path / "m.csv", tmp_path / "s.csv")
    err = capsys.readouterr().err
    assert "WARNING" in err and "split.unit is 'image'" in err and "optimistic" in err
    assert pd.read_csv(tmp_path / "s.csv")["patients_shared"].sum() > 0
    index = build_cache(dataset("image"), tmp_path / "m.csv", tmp_path / "cache")
    assert len(index) == len(manifest) and "WARNING" in capsys.readouterr().err
    # the same leaking manifest under a patient-wise dataset is refused, naming the file
    with pytest.raises(SplitLeakageError, match="m.csv"):
        build_cache(dataset("patient"), tmp_path / "m.csv", tmp_path / "cache2")


def test_per_class_sample_caps_each_label_in_the_training_splits_and_never_touches_test():
    from xraypipe.splits import sample_per_class

    rows = []
    for i in range(40):
        split = ("train", "val", "test")[i % 4 if i % 4 < 3 else 0]
        rows.append({"image_id": f"{i:03d}", "patient_id": str(i), "split": split,
                     "Mass": float(i % 2 == 0), "No Finding": float(i % 2 == 1 and i % 5 != 0)})
    manifest = pd.DataFrame(rows)
    sampled = sample_per_class(manifest, ["Mass", "No Finding"], max_per_class=3, seed=0)
    for split in ("train", "val"):
        part = sampled[sampled["split"] == split]
        assert part["Mass"].sum() <= 3 and part["No Finding"].sum() <= 3
        assert ((part["Mass"] == 1) | (part["No Finding"] == 1)).all()  # images of neither label are dropped
    test = manifest[manifest["split"] == "test"]
    assert sampled[sampled["split"] == "test"]["image_id"].tolist() == test["image_id"].tolist()
    # seeded and independent of the file order
    again = sample_per_class(manifest.iloc[::-1].reset_index(drop=True), ["Mass", "No Finding"], max_per_class=3, seed=0)
    assert sorted(again["image_id"]) == sorted(sampled["image_id"])
    other = sample_per_class(manifest, ["Mass", "No Finding"], max_per_class=3, seed=1)
    assert sorted(other["image_id"]) != sorted(sampled["image_id"])
    # a cap above every count keeps every labelled image
    everything = sample_per_class(manifest, ["Mass", "No Finding"], max_per_class=100, seed=0)
    labelled = manifest[(manifest["split"] == "test") | (manifest["Mass"] == 1) | (manifest["No Finding"] == 1)]
    assert sorted(everything["image_id"]) == sorted(labelled["image_id"])


def test_split_sizes_line_counts_images_and_patients_per_split_in_order():
    import pandas as pd

    from xraypipe.stages import split_sizes_line

    manifest = pd.DataFrame({"split": ["test", "train", "train", "train", "val"],
                             "patient_id": ["p3", "p1", "p1", "p2", "p4"]})
    assert split_sizes_line(manifest) == "splits: train 3 images / 2 patients, val 1 / 1, test 1 / 1"
