"""Readers of every dataset, on their synthetic twins (exact release layouts) and on the real excerpts."""

import shutil

import numpy as np
import pandas as pd
import pytest

from xraypipe import datasets
from xraypipe.datasets import DatasetFormatError, validate_manifest
from xraypipe.datasets.chexpert import PATHOLOGIES as CHEXPERT, parse_chexpert_csv, read_chexpert
from xraypipe.datasets.kermany import parse_file_name, read_kermany
from xraypipe.datasets.medmnist import read_medmnist
from xraypipe.datasets.mura import BODY_PARTS, read_mura
from xraypipe.splits import assign_splits


def twin(tmp_path_factory, reader, params=None):
    out = tmp_path_factory.mktemp(reader) / "raw"
    summary = datasets.READERS.get(reader).generate(out, params or {})
    return out, summary


@pytest.fixture(scope="module")
def chexpert_twin(tmp_path_factory):
    return twin(tmp_path_factory, "chexpert", {"n_patients": 60, "uncertain_fraction": 0.2})


@pytest.fixture(scope="module")
def mura_twin(tmp_path_factory):
    return twin(tmp_path_factory, "mura")


@pytest.fixture(scope="module")
def kermany_twin(tmp_path_factory):
    return twin(tmp_path_factory, "kermany")


# ------------------------------------------------------------------------------------------- CheXpert
def test_chexpert_real_excerpt_parses_with_uncertain_and_blank(shared_data):
    path = shared_data / "chexpert" / "train_excerpt.csv"
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    base = shared_data / "chexpert" / "CheXpert-v1.0-small"  # the CSV's Path column starts with this folder name
    m = parse_chexpert_csv(path, base)
    assert len(m) == 300 == len(raw)
    validate_manifest(m, list(CHEXPERT), allow_uncertain=True)
    with pytest.raises(DatasetFormatError, match=r"-1\.0.*expected 0, 1 or NaN"):
        validate_manifest(m, list(CHEXPERT))  # -1 only for readers that declare it
    # every cell maps exactly: '1.0' -> 1, '0.0' -> 0, '-1.0' -> -1, '' -> NaN
    for col in CHEXPERT:
        expected = raw[col].map({"1.0": 1.0, "0.0": 0.0, "-1.0": -1.0, "": np.nan}).to_numpy(float)
        np.testing.assert_array_equal(m[col].to_numpy(float), expected)
    assert (m[list(CHEXPERT)] == -1).to_numpy().sum() == (raw[list(CHEXPERT)] == "-1.0").to_numpy().sum() > 0
    first = m.iloc[0]
    assert first["image_id"] == "train/patient00001/study1/view1_frontal.jpg"
    assert first["path"] == str(shared_data / "chexpert" / "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg")
    assert (first["patient_id"], first["study_id"], first["view"], first["sex"], first["age"]) == (
        "patient00001", "patient00001/study1", "AP", "F", 68.0)
    lateral = raw["Frontal/Lateral"] == "Lateral"
    assert lateral.any() and (m.loc[lateral.to_numpy(), "view"] == "LATERAL").all()
    assert set(m.loc[~lateral.to_numpy(), "view"]) <= {"AP", "PA"}
    assert set(m["sex"]) <= {"M", "F", ""}


def test_chexpert_errors_name_file_line_and_column(tmp_path, shared_data):
    lines = (shared_data / "chexpert" / "train_excerpt.csv").read_text().splitlines()
    bad = lines[:4] + [lines[4].replace(",1.0,", ",2.0,", 1)] + lines[5:10]
    (tmp_path / "train.csv").write_text("\n".join(bad) + "\n")
    with pytest.raises(DatasetFormatError, match=r"train\.csv: line 5: unknown label value '2\.0' in column"):
        parse_chexpert_csv(tmp_path / "train.csv", tmp_path)
    header = lines[0].replace("Pleural Effusion", "Effusion")
    (tmp_path / "train.csv").write_text("\n".join([header] + lines[1:5]) + "\n")
    with pytest.raises(DatasetFormatError, match=r"train\.csv: missing column\(s\) \['Pleural Effusion'\]"):
        parse_chexpert_csv(tmp_path / "train.csv", tmp_path)


def test_chexpert_twin_layout_truth_and_reader(chexpert_twin):
    root, summary = chexpert_twin
    base = root / "CheXpert-v1.0-small"
    header = (shared_header := (base / "train.csv").read_text().splitlines()[0])
    assert header.startswith("Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum")
    assert (base / "valid.csv").read_text().splitlines()[0] == shared_header
    m = read_chexpert(root)
    validate_manifest(m, list(CHEXPERT), allow_uncertain=True)
    assert len(m) == summary["images"]
    assert set(m["official_split"]) == {"train_val", "test"}
    test = m[m["official_split"] == "test"]
    assert not test[list(CHEXPERT)].isin([-1.0]).any().any() and not test[list(CHEXPERT)].isna().any().any()
    # hidden truth: 80% of the uncertain labels are truly positive (the reader never reads this file)
    truth = pd.read_csv(root / "synthetic_truth.csv")
    truth["image_id"] = truth["Path"].str.replace("CheXpert-v1.0-small/", "", regex=False)
    merged = m.merge(truth, on="image_id", suffixes=("", "_truth"))
    assert len(merged) == len(m)
    unc = np.concatenate([merged.loc[merged[c] == -1, f"{c}_truth"].to_numpy() for c in CHEXPERT[1:]])
    assert len(unc) > 100 and 0.7 < unc.mean() < 0.9
    # observed 1/0 always agree with the truth; blank is truly negative
    for c in CHEXPERT[1:]:
        obs, tru = merged[c].to_numpy(float), merged[f"{c}_truth"].to_numpy(float)
        known = (obs == 0) | (obs == 1)
        assert (obs[known] == tru[known]).all()
        assert (tru[np.isnan(obs)] == 0).all()
    assert {"LATERAL", "AP", "PA"} <= set(m["view"])
    lat = read_chexpert(root, views=["LATERAL"])
    assert len(lat) == summary["lateral"] and set(lat["view"]) == {"LATERAL"}
    # the root may be the release folder itself
    assert len(read_chexpert(base)) == len(m)


def test_chexpert_missing_image_and_splits_by_patient(chexpert_twin, tmp_path):
    root, _ = chexpert_twin
    copy = tmp_path / "c"
    shutil.copytree(root, copy)
    victim = next((copy / "CheXpert-v1.0-small" / "train").rglob("*.jpg"))
    victim.unlink()
    with pytest.raises(DatasetFormatError, match=r"1 image file\(s\) listed in the metadata are missing, e\.g\. .*"
                       + victim.name):
        read_chexpert(copy)
    m = read_chexpert(copy, missing_images="drop")
    s = assign_splits(m, val_fraction=0.2)
    assert (s.loc[s["official_split"] == "test", "split"] == "test").all()
    assert s.groupby("patient_id")["split"].nunique().max() == 1
    assert set(s["split"]) == {"train", "val", "test"}


# ------------------------------------------------------------------------------------------- MURA
def test_mura_twin_study_labels_body_parts(mura_twin):
    root, summary = mura_twin
    base = root / "MURA-v1.1"
    first = (base / "train_image_paths.csv").read_text().splitlines()[0]
    assert first.startswith("MURA-v1.1/train/XR_") and "/patient" in first and first.endswith("/image1.png")
    study_line = (base / "train_labeled_studies.csv").read_text().splitlines()[0]
    assert study_line.startswith("MURA-v1.1/train/XR_") and study_line[-3:] in ("/,0", "/,1")
    m = read_mura(root)
    validate_manifest(m, ["Abnormal"])
    assert len(m) == summary["images"] and m["study_id"].nunique() == summary["studies"]
    assert set(m["body_part"]) == set(BODY_PARTS)
    sizes = m.groupby("study_id").size()
    assert sizes.min() >= 1 and sizes.max() <= 4 and sizes.max() > 1
    # every image inherits its study's label, which matches the folder name
    assert (m.groupby("study_id")["Abnormal"].nunique() == 1).all()
    assert ((m["study_id"].str.endswith("_positive")) == (m["Abnormal"] == 1)).all()
    assert set(m["official_split"]) == {"train_val", "test"}
    wrist = read_mura(root, body_parts=["XR_WRIST", "XR_HAND"])
    assert set(wrist["body_part"]) == {"XR_WRIST", "XR_HAND"} and len(wrist) < len(m)


def test_mura_errors(mura_twin, tmp_path):
    root, _ = mura_twin
    copy = tmp_path / "m"
    shutil.copytree(root, copy)
    studies = copy / "MURA-v1.1" / "train_labeled_studies.csv"
    lines = studies.read_text().splitlines()
    studies.write_text("\n".join([lines[0][:-1] + "7"] + lines[1:]) + "\n")
    with pytest.raises(DatasetFormatError, match=r"train_labeled_studies\.csv: line 1: unknown label value '7'"):
        read_mura(copy)
    studies.write_text("\n".join(lines[1:]) + "\n")
    with pytest.raises(DatasetFormatError, match=r"train_image_paths\.csv: line \d+: study .* has no label"):
        read_mura(copy)


# ------------------------------------------------------------------------------------------- Kermany
def test_kermany_file_names():
    # every pattern of the real release (the shared README lists seven); the number orders a patient's images
    assert parse_file_name("person1_bacteria_1.jpeg") == ("person1", "bacteria", 1000)
    assert parse_file_name("person1946_virus_3385.jpeg") == ("person1946", "virus", 3385000)
    assert parse_file_name("person1_virus_12_3.jpeg") == ("person1", "virus", 12003)
    assert parse_file_name("IM-0115-0001.jpeg") == ("IM-0115", None, 1000)
    assert parse_file_name("IM-0011-0001-0002.jpeg") == ("IM-0011", None, 1002)
    assert parse_file_name("NORMAL2-IM-0357-0001.jpeg") == ("NORMAL2-IM-0357", None, 1000)
    assert parse_file_name("NORMAL2-IM-0173-0001-0002.jpeg") == ("NORMAL2-IM-0173", None, 1002)
    assert parse_file_name("odd name.jpeg") == ("odd name", None, None)


def test_kermany_twin_patients_and_official_test(kermany_twin):
    root, summary = kermany_twin
    xr = root / "chest_xray"
    assert sorted(p.name for p in xr.iterdir()) == ["test", "train", "val"]
    names = [p.name for p in xr.rglob("*.jpeg")]
    assert any(n.startswith("person") and "_bacteria_" in n for n in names)
    assert any(n.startswith("NORMAL2-IM-") for n in names) and any(n.startswith("IM-") for n in names)
    m = read_kermany(root)
    validate_manifest(m, ["Pneumonia", "Bacterial", "Viral"])
    assert (m["official_split"] == "test").sum() == summary["test"]
    assert (m["official_split"] == "train_val").sum() == summary["train"] + summary["val"]
    assert m["patient_id"].nunique() == summary["n_patients"]
    assert m.groupby("patient_id").size().max() > 1  # several images per patient, grouped
    # as in the release, test/ numbers its patients independently of train/: the ids are namespaced by folder
    bare = m["patient_id"].str.split("/", n=1).str[1]
    assert set(bare[m["official_split"] == "test"]) & set(bare[m["official_split"] == "train_val"])
    assert (m["patient_id"].str.split("/").str[0] == m["official_split"].map({"test": "test", "train_val": "train"})).all()
    pneu = m[m["Pneumonia"] == 1]
    assert ((pneu["Bacterial"] + pneu["Viral"]) == 1).all() and (m.loc[m["Pneumonia"] == 0, ["Bacterial", "Viral"]] == 0).all().all()
    s = assign_splits(m, val_fraction=0.25)
    assert s.groupby("patient_id")["split"].nunique().max() == 1  # the val folder's images stay with their patient
    assert (s.loc[m["official_split"] == "test", "split"] == "test").all()


# ------------------------------------------------------------------------------------------- MedMNIST
def test_pneumoniamnist_real_trainval_npz(shared_data, tmp_path):
    (tmp_path / "pneumoniamnist.npz").symlink_to(shared_data / "pneumoniamnist" / "pneumoniamnist_trainval.npz")
    m = read_medmnist(tmp_path, flavour="pneumoniamnist")
    validate_manifest(m, ["Pneumonia"])
    assert (m["official_split"] == "train_val").sum() == 4708 and (m["official_split"] == "val").sum() == 524
    with np.load(shared_data / "pneumoniamnist" / "pneumoniamnist_trainval.npz") as d:
        assert m.loc[m["official_split"] == "train_val", "Pneumonia"].sum() == d["train_labels"].sum()
        assert m.loc[m["official_split"] == "val", "Pneumonia"].sum() == d["val_labels"].sum()
    s = assign_splits(m)
    assert (s.loc[m["official_split"] == "val", "split"] == "val").all()  # the official val set is used as is
    assert (s["split"] == "test").any()  # no test arrays in this file: drawn from the rest


def test_medmnist_twins_have_the_official_format(tmp_path_factory):
    for flavour, n_labels in (("pneumoniamnist", 1), ("chestmnist", 14)):
        for size in (28, 64):
            root, summary = twin(tmp_path_factory, flavour, {"size": size, "n_train": 12, "n_val": 4, "n_test": 6})
            name = f"{flavour}.npz" if size == 28 else f"{flavour}_{size}.npz"
            with np.load(root / name) as d:
                assert sorted(d.files) == sorted(f"{s}_{k}" for s in ("train", "val", "test") for k in ("images", "labels"))
                assert d["train_images"].shape == (12, size, size) and d["train_images"].dtype == np.uint8
                assert d["test_labels"].shape == (6, n_labels) and d["test_labels"].dtype == np.uint8
            m = datasets.READERS.get(flavour).read(root)
            assert len(m) == 22 and set(m["official_split"]) == {"train_val", "val", "test"}


def test_medmnist_bad_labels_are_named(tmp_path):
    np.savez_compressed(tmp_path / "pneumoniamnist.npz", train_images=np.zeros((3, 28, 28), np.uint8),
                        train_labels=np.array([[0], [2], [1]], np.uint8))
    with pytest.raises(DatasetFormatError, match=r"train_labels row 1: unknown label value 2"):
        read_medmnist(tmp_path, flavour="pneumoniamnist")
    np.savez_compressed(tmp_path / "pneumoniamnist.npz", train_images=np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(DatasetFormatError, match=r"has train_images but no train_labels"):
        read_medmnist(tmp_path, flavour="pneumoniamnist")


def test_every_reader_has_a_twin_with_checked_params():
    for name in datasets.READERS.names():
        assert datasets.READERS.get(name).generate is not None
    with pytest.raises(ValueError, match="unknown generator parameter 'n_patient'"):
        datasets.check_synthetic_params("mura", {"n_patient": 3})
    with pytest.raises(ValueError, match="'uncertain_positive_share' must be a number in"):
        datasets.check_synthetic_params("chexpert", {"uncertain_positive_share": 1.5})
