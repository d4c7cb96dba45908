"""PneumoniaMNIST (real, ../shared/data): the ready configuration config/pneumoniamnist.yaml.

- a local .npz is linked, not extracted, and a file without a test split gives no test split (test_fraction 0);
- an official test split, when the file has one, is scored and its table row printed;
- the full recipe on the real train/val file (`make test-real`) reaches its validation figures; its training time
  is printed. The official test split is held out: validation is all that is tuned on and
  all that is measured here (it is in-distribution, hence optimistic).
"""

import copy
import csv
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from workflow_copy import BIN, ROOT, make_workflow_copy, run
from xraypipe.config import validate_config
from xraypipe.stages import make_splits, prepare_raw

RECIPE = yaml.safe_load((ROOT / "config" / "pneumoniamnist.yaml").read_text())


def _npz(shared_data):
    return shared_data / "pneumoniamnist" / "pneumoniamnist_trainval.npz"


def _local(cfg: dict, path) -> dict:
    cfg = copy.deepcopy(cfg)
    cfg["datasets"]["pneumoniamnist"].update(source="local", root=str(path))
    cfg["datasets"]["pneumoniamnist"].pop("download", None)
    return cfg


def test_ready_config_validates_and_keeps_the_official_download():
    cfg = validate_config(copy.deepcopy(RECIPE), source="config/pneumoniamnist.yaml")
    ds = cfg["datasets"]["pneumoniamnist"]
    assert ds["source"] == "download" and ds["download"]["files"][0]["md5"] == "28209eda62fecd6e6a2d98b1501bb15f"
    assert ds["split"]["test_fraction"] == 0.0  # never an in-distribution stand-in for the official test split


def test_local_npz_is_linked_and_without_test_split_gives_no_test_rows(tmp_path, shared_data):
    cfg = validate_config(_local(RECIPE, _npz(shared_data)))
    ds = cfg["datasets"]["pneumoniamnist"]
    prepare_raw(ds, tmp_path / "raw")
    linked = tmp_path / "raw" / "pneumoniamnist_trainval.npz"
    assert linked.is_symlink() and linked.resolve() == _npz(shared_data).resolve()
    manifest = make_splits(ds, tmp_path / "raw", tmp_path / "m.csv", tmp_path / "s.csv")
    assert manifest["split"].value_counts().to_dict() == {"train": 4708, "val": 524}
    summary = pd.read_csv(tmp_path / "s.csv").set_index("split")
    assert summary.loc["train", "Pneumonia"] == 3494 and summary.loc["test", "images"] == 0


def _shrunk_recipe(cfg):
    variant = cfg["variants"]["pneumonia_cnn"]
    variant.update(epochs=4, ensemble_seeds=1)
    cfg["evaluation"] = {"bootstrap_samples": 50}
    return cfg


@pytest.mark.slow
def test_official_test_split_in_the_file_is_scored_and_printed(tmp_path, shared_data):
    """A file with train/val/test arrays (here: the real val split halved into val and test) gets its test split
    scored at the validation-chosen threshold, and the table row is printed when the workflow ends."""
    with np.load(_npz(shared_data)) as real:
        arrays = {k: real[k] for k in real.files}
    rng = np.random.default_rng(0)
    order = rng.permutation(len(arrays["val_images"]))
    half = len(order) // 2
    val, test = np.sort(order[:half]), np.sort(order[half:])
    path = tmp_path / "pneumoniamnist.npz"
    train = np.sort(rng.permutation(len(arrays["train_images"]))[:1200])  # the first 1,200 are all pneumonia: draw
    np.savez_compressed(path, train_images=arrays["train_images"][train], train_labels=arrays["train_labels"][train],
                        val_images=arrays["val_images"][val], val_labels=arrays["val_labels"][val],
                        test_images=arrays["val_images"][test], test_labels=arrays["val_labels"][test])
    wf = make_workflow_copy(tmp_path / "wf", _shrunk_recipe(_local(RECIPE, path)))
    proc = run([str(BIN / "snakemake"), "--cores", "2", "results/tables/auroc.csv"], wf, timeout=900)
    row = [line for line in proc.stdout.splitlines() if line.startswith("| pneumoniamnist | pneumonia_cnn |")]
    assert row and f"| {len(test)} ({len(test)}) |" in row[0], proc.stdout[-3000:]
    metrics = json.loads((wf / "results/metrics/pneumoniamnist/pneumonia_cnn.json").read_text())
    assert metrics["n_images"] == len(test) and metrics["n_val_images"] == len(val)
    thresholds = json.loads((wf / "results/models/pneumoniamnist/pneumonia_cnn/thresholds.json").read_text())
    assert thresholds["chosen_on"].endswith("val.csv")
    assert metrics["mean_auroc"] > 0.8  # a 4-epoch model on 1,200 images: the path, not the recipe's quality


@pytest.mark.real
@pytest.mark.timeout(2400)
def test_full_recipe_on_the_real_file_reaches_its_validation_figures(tmp_path, shared_data):
    """The shipped recipe on the real train/val file (`make test-real`; ~10 minutes on 2 cores): its training wall
    time is printed for the record, not asserted (a timing depends on the machine; benchmarks/ measures speed)."""
    wf = make_workflow_copy(tmp_path / "wf", _local(RECIPE, _npz(shared_data)))
    proc = run([str(BIN / "snakemake"), "--cores", "2", "results/tables/auroc.csv"], wf, timeout=1500)
    assert "the source has no test split" in proc.stdout
    with open(wf / "results/benchmarks/train/pneumoniamnist/pneumonia_cnn.tsv") as f:
        seconds = float(next(csv.DictReader(f, delimiter="\t"))["s"])
    print(f"PneumoniaMNIST recipe: training {seconds:.0f} s on this machine")
    metrics = json.loads((wf / "results/metrics/pneumoniamnist/pneumonia_cnn.json").read_text())
    assert metrics["validation_mean_auroc"] >= 0.98
    val = pd.read_csv(wf / "results/predictions/pneumoniamnist/pneumonia_cnn/val.csv")
    threshold = json.loads((wf / "results/models/pneumoniamnist/pneumonia_cnn/thresholds.json").read_text())
    accuracy = float(((val["prob_Pneumonia"] >= threshold["thresholds"]["Pneumonia"]) == val["label_Pneumonia"]).mean())
    assert accuracy >= 0.93
