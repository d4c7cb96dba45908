"""Real NIH ChestX-ray14 images through the full real metadata: config/nih_real_sample.yaml on the shared excerpt
(1,000 real 64-px images of 264 patients; all 112,120 rows of Data_Entry_2017_v2020.csv; the official lists).

Figures asserted are the shared README's: 690 images in the official train_val list, 310 in test; 499 No Finding,
Effusion 170, Infiltration 162, Atelectasis 95, Cardiomegaly 83.
"""

import copy
import csv
import gzip
import json
import time

import pandas as pd
import pytest
import yaml

from workflow_copy import BIN, ROOT, make_workflow_copy, run
from xraypipe.config import validate_config
from xraypipe.datasets.nih import read_nih
from xraypipe.stages import make_splits, prepare_raw

OVERLAY = yaml.safe_load((ROOT / "config" / "nih_real_sample.yaml").read_text())


@pytest.fixture(scope="module")
def sample_root(tmp_path_factory, shared_data):
    """A user's folder as the overlay expects it: images/ and the four metadata files (test_list.txt written from
    Data_Entry minus train_val_list, which is how the release defines it)."""
    root = tmp_path_factory.mktemp("nih_sample")
    nih = shared_data / "nih"
    (root / "images").symlink_to(nih / "images_64px", target_is_directory=True)
    for name in ("Data_Entry_2017_v2020.csv.gz", "BBox_List_2017.csv", "train_val_list.txt.gz"):
        (root / name).symlink_to(nih / name)
    with gzip.open(nih / "Data_Entry_2017_v2020.csv.gz", "rt") as f:
        every = [line.split(",", 1)[0] for line in f.read().splitlines()[1:]]
    with gzip.open(nih / "train_val_list.txt.gz", "rt") as f:
        train_val = set(f.read().split())
    (root / "test_list.txt").write_text("\n".join(i for i in every if i not in train_val) + "\n")
    return root


def overlay_config(root, **evaluation) -> dict:
    cfg = copy.deepcopy(OVERLAY)
    cfg["datasets"]["nih_sample"]["root"] = str(root)
    cfg["evaluation"] = {**cfg.get("evaluation", {}), **evaluation}
    return cfg


def test_full_metadata_drops_to_the_images_present(sample_root):
    start = time.perf_counter()
    m = read_nih(sample_root, missing_images="drop")
    seconds = time.perf_counter() - start
    print(f"read_nih over 112,120 metadata rows: {seconds:.2f} s")
    assert len(m) == 1000 and m["patient_id"].nunique() == 264
    assert m["official_split"].value_counts().to_dict() == {"train_val": 690, "test": 310}
    findings = m.drop(columns=["image_id", "path", "patient_id", "follow_up", "view", "sex", "age", "official_split"])
    assert int((findings.sum(axis=1) == 0).sum()) == 499  # No Finding
    counts = findings.sum().astype(int)
    assert counts[["Effusion", "Infiltration", "Atelectasis", "Cardiomegaly"]].tolist() == [170, 162, 95, 83]
    with pytest.raises(Exception, match=r"image file\(s\) listed in the metadata are missing.*missing_images: drop"):
        read_nih(sample_root, missing_images="error")


def test_splits_are_patient_wise_from_the_official_lists(sample_root, tmp_path):
    cfg = validate_config(overlay_config(sample_root), source="config/nih_real_sample.yaml")
    ds = cfg["datasets"]["nih_sample"]
    prepare_raw(ds, tmp_path / "raw")
    manifest = make_splits(ds, tmp_path / "raw", tmp_path / "m.csv", tmp_path / "s.csv")
    assert (manifest["split"] == "test").sum() == 310
    assert manifest.loc[manifest["official_split"] == "train_val", "split"].isin(["train", "val"]).all()
    assert manifest.groupby("patient_id")["split"].nunique().max() == 1


@pytest.mark.slow
def test_overlay_runs_end_to_end_on_the_real_images(sample_root, tmp_path):
    """Snakemake with config/nih_real_sample.yaml: both variants trained, AUROC with CIs where a finding has at least
    10 test positives and 'too few positives' for the rest; prints each stage's wall time."""
    base = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg = {**base, **overlay_config(sample_root, bootstrap_samples=200)}
    cfg["datasets"] = {**base["datasets"], **cfg["datasets"]}
    cfg["training"] = {**base.get("training", {}), "threads": 2}
    wf = make_workflow_copy(tmp_path / "wf", cfg)
    start = time.perf_counter()
    proc = run([str(BIN / "snakemake"), "--cores", "2", "results/tables/auroc.csv",
                "results/tables/classification.csv"], wf, timeout=1500)
    print(f"whole run: {time.perf_counter() - start:.0f} s")
    for tsv in sorted((wf / "results" / "benchmarks").rglob("*.tsv")):
        with open(tsv) as f:
            print(f"{tsv.relative_to(wf / 'results' / 'benchmarks')}: {float(next(csv.DictReader(f, delimiter=chr(9)))['s']):.1f} s")
    positives = pd.read_csv(wf / "results/splits/nih_sample.summary.csv").set_index("split").loc["test"]
    for variant in ("resnet18", "small_cnn"):
        metrics = json.loads((wf / f"results/metrics/nih_sample/{variant}.json").read_text())
        assert metrics["n_images"] == 310 and metrics["min_positives"] == 10
        for label, values in metrics["labels"].items():
            assert values["n_positive"] == positives[label]
            if values["n_positive"] >= 10:
                assert values["auroc"] is not None and values["ci_low"] <= values["auroc"] <= values["ci_high"]
            else:
                assert values["auroc"] is None and values["status"] == "too few positives"
        scored = [v for v in metrics["labels"].values() if v["auroc"] is not None]
        assert scored and metrics["mean"]["n_labels"] == len(scored)
    table = (wf / "results/tables/auroc.md").read_text()
    print(table)
    assert "too few positives (" in table and "| nih_sample | resnet18 | 310 (" in table
    assert "| nih_sample | resnet18 |" in proc.stdout  # the table is printed when the run ends


def test_errors_name_the_users_folder_not_the_results_link(sample_root, tmp_path):
    from xraypipe.datasets import DatasetFormatError

    cfg = validate_config(overlay_config(sample_root), source="config/nih_real_sample.yaml")
    ds = {**cfg["datasets"]["nih_sample"], "missing_images": "error"}
    prepare_raw(ds, tmp_path / "raw")
    with pytest.raises(DatasetFormatError) as info:
        make_splits(ds, tmp_path / "raw", tmp_path / "m.csv", tmp_path / "s.csv")
    message = str(info.value)
    assert str(tmp_path / "raw") not in message
    assert str((sample_root / "images").resolve()) in message and "missing_images: drop" in message
