import gzip

import numpy as np
import pytest

from xraypipe.datasets import DatasetFormatError, validate_manifest
from xraypipe.datasets.nih import PATHOLOGIES, read_nih, read_nih_boxes


@pytest.fixture(scope="module")
def real_manifest(shared_data):
    return read_nih(shared_data / "nih", missing_images="drop")


def test_reads_the_real_metadata(shared_data, tmp_path):
    # all 112,120 rows parse when images are not required: link the metadata without images
    root = tmp_path / "nih"
    root.mkdir()
    for name in ("Data_Entry_2017_v2020.csv.gz", "train_val_list.txt.gz"):
        (root / name).symlink_to(shared_data / "nih" / name)
    (root / "images").mkdir()
    with pytest.raises(DatasetFormatError, match=r"112120 image file\(s\) listed in the metadata are missing"):
        read_nih(root)
    full = read_nih(root, missing_images="drop")
    assert len(full) == 0
    # and the label parsing over the whole file, through the same code path with all images "present"
    monkey = pytest.MonkeyPatch()
    monkey.setattr("xraypipe.datasets.nih.os.path.exists", lambda p: True)
    try:
        full = read_nih(root)
    finally:
        monkey.undo()
    assert len(full) == 112_120
    assert list(full.columns[:8]) == ["image_id", "path", "patient_id", "follow_up", "view", "sex", "age", "official_split"]
    assert set(full["view"]) == {"PA", "AP"}
    assert full["patient_id"].nunique() == 30_805
    # official split: 86,524 train_val, the rest test; the official lists are patient-wise
    assert (full["official_split"] == "train_val").sum() == 86_524
    assert (full["official_split"] == "test").sum() == 112_120 - 86_524
    assert full.groupby("patient_id")["official_split"].nunique().max() == 1
    # published label counts (Wang et al. 2017 / NIH README): e.g. Infiltration 19,894, Hernia 227
    counts = full[list(PATHOLOGIES)].sum()
    assert counts["Infiltration"] == 19_894 and counts["Hernia"] == 227 and counts["Effusion"] == 13_317
    validate_manifest(full, list(PATHOLOGIES))


def test_real_images_present_and_first_rows(real_manifest):
    assert len(real_manifest) == 24
    first = real_manifest.iloc[0]
    assert first["image_id"] == "00000001_000.png" and first["patient_id"] == "1" and first["view"] == "PA"
    assert first["Cardiomegaly"] == 1.0 and first["Emphysema"] == 0.0 and first["age"] == 57
    row = real_manifest.set_index("image_id").loc["00000001_001.png"]
    assert row["Cardiomegaly"] == 1.0 and row["Emphysema"] == 1.0 and row["follow_up"] == 1


def test_subset_of_pathologies_and_views(shared_data):
    m = read_nih(shared_data / "nih", pathologies=["Effusion", "Hernia"], views=["AP"], missing_images="drop")
    assert [c for c in m.columns if c in PATHOLOGIES] == ["Effusion", "Hernia"]
    assert set(m["view"]) <= {"AP"}


def test_real_box_file(shared_data):
    boxes = read_nih_boxes(shared_data / "nih" / "BBox_List_2017.csv")
    assert len(boxes) == 984 and boxes["image_id"].nunique() == 880
    assert "Infiltrate" not in set(boxes["finding"]) and "Infiltration" in set(boxes["finding"])
    assert set(boxes["finding"]) == {"Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule",
                                     "Pneumonia", "Pneumothorax"}
    assert boxes[["x", "y", "w", "h"]].notna().all().all()


def test_box_file_with_trailing_empty_columns(tmp_path):
    path = tmp_path / "BBox_List_2017.csv"
    path.write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\n00000001_000.png,Infiltrate,1,2,3,4,,,\n")
    boxes = read_nih_boxes(path)
    assert boxes.iloc[0].to_dict() == {"image_id": "00000001_000.png", "finding": "Infiltration", "x": 1.0, "y": 2.0,
                                       "w": 3.0, "h": 4.0}


HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
          "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]\n")


def _tiny_root(tmp_path, rows, lists=True):
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "Data_Entry_2017_v2020.csv").write_text(HEADER + "".join(r + "\n" for r in rows))
    for r in rows:
        (root / "images" / r.split(",")[0]).write_bytes(b"")
    return root


def test_unknown_finding_names_file_and_line(tmp_path):
    root = _tiny_root(tmp_path, ["00000001_000.png,No Finding,0,1,50,M,PA,2500,2500,0.14,0.14",
                                 "00000002_000.png,Cardiomegaly|Pneumonitis,0,2,060Y,F,AP,2500,2500,0.14,0.14"])
    with pytest.raises(DatasetFormatError, match=r"Data_Entry_2017_v2020.csv: line 3: unknown finding 'Pneumonitis'"):
        read_nih(root)


def test_missing_column_names_file(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    (root / "Data_Entry_2017_v2020.csv").write_text("Image Index,Finding Labels\nx.png,No Finding\n")
    with pytest.raises(DatasetFormatError, match=r"Data_Entry_2017_v2020.csv: missing column\(s\) \['Follow-up #'"):
        read_nih(root)


def test_old_age_format_and_gz_lists(tmp_path):
    root = _tiny_root(tmp_path, ["00000001_000.png,No Finding,0,1,058Y,M,PA,2500,2500,0.14,0.14",
                                 "00000002_000.png,Mass,0,2,003M,F,AP,2500,2500,0.14,0.14"])
    with gzip.open(root / "train_val_list.txt.gz", "wt") as f:
        f.write("00000001_000.png\n")
    m = read_nih(root)
    assert m["age"].tolist() == [58.0, 0.25]
    assert m["official_split"].tolist() == ["train_val", "test"]
    assert np.isfinite(m["Mass"]).all()


def test_image_in_neither_list_is_an_error(tmp_path):
    root = _tiny_root(tmp_path, ["00000001_000.png,No Finding,0,1,50,M,PA,2500,2500,0.14,0.14",
                                 "00000002_000.png,Mass,0,2,50,F,AP,2500,2500,0.14,0.14"])
    (root / "train_val_list.txt").write_text("00000001_000.png\n")
    (root / "test_list.txt").write_text("")
    with pytest.raises(DatasetFormatError, match=r"neither train_val_list nor test_list.*00000002_000.png"):
        read_nih(root)


def test_no_finding_is_a_label_only_when_asked_for(tmp_path):
    """The NIH localization study's ninth output: 1 for 'No Finding' rows, 0 for rows with a finding."""
    root = tmp_path / "nih"
    (root / "images").mkdir(parents=True)
    header = "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position\n"
    rows = ["a.png,No Finding,0,1,40,F,PA", "b.png,Mass|Effusion,0,2,50,M,AP", "c.png,Mass,1,2,50,M,AP"]
    (root / "Data_Entry_2017_v2020.csv").write_text(header + "\n".join(rows) + "\n")
    for name in ("a.png", "b.png", "c.png"):
        (root / "images" / name).write_bytes(b"")
    default = read_nih(root)
    assert "No Finding" not in default.columns and list(default.columns[-14:]) == list(PATHOLOGIES)
    nine = read_nih(root, pathologies=["Mass", "Effusion", "No Finding"])
    assert nine["No Finding"].tolist() == [1.0, 0.0, 0.0] and nine["Mass"].tolist() == [0.0, 1.0, 1.0]
