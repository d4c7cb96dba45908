"""Reproduction tables: published figures beside ours with CIs, computed from hand-made pipeline outputs with
known answers."""

import json

import numpy as np
import pandas as pd
import pytest

from xraypipe.config import validate_config
from xraypipe.reproduction import STUDIES, bootstrap_at_threshold, reproduction_rows


def test_accuracy_f1_and_kappa_at_a_threshold_with_a_patient_bootstrap():
    y = np.array([1, 1, 0, 0, 1, 0, np.nan])
    s = np.array([0.9, 0.4, 0.2, 0.6, 0.7, 0.1, 0.9])  # at 0.5: tp 2, fn 1, fp 1, tn 2 (the NaN label left out)
    acc, lo, hi = bootstrap_at_threshold(y, s, 0.5, "accuracy", n_boot=200, seed=0)
    assert acc == pytest.approx(4 / 6) and lo <= acc <= hi and hi - lo > 0
    assert bootstrap_at_threshold(y, s, 0.5, "f1", n_boot=10)[0] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    # kappa: observed 4/6, chance (3*3 + 3*3) / 36 = 1/2 -> (2/3 - 1/2) / (1/2) = 1/3
    assert bootstrap_at_threshold(y, s, 0.5, "kappa", n_boot=10)[0] == pytest.approx(1 / 3)
    # one patient holding every image: each resample is the whole set again, so the interval is a point
    one = bootstrap_at_threshold(y, s, 0.5, "accuracy", groups=["p"] * 7, n_boot=50)
    assert one[1] == pytest.approx(one[0]) and one[2] == pytest.approx(one[0])
    with pytest.raises(ValueError, match="unknown metric"):
        bootstrap_at_threshold(y, s, 0.5, "auroc")


def _mura_run(tmp_path):
    """A MURA-like run: conv4 predictions on 2 elbow studies (4 images) and 1 wrist study (2 images)."""
    index = pd.DataFrame({"image_id": [f"i{k}" for k in range(6)], "split": "test", "cache_row": range(6),
                          "study_id": ["s1", "s1", "s2", "s2", "s3", "s3"],
                          "body_part": ["ELBOW"] * 4 + ["WRIST"] * 2, "patient_id": ["a", "a", "b", "b", "c", "c"]})
    index.to_csv(tmp_path / "index.csv", index=False)
    # elbow images: 3 of 4 right at 0.5; studies: s1 mean 0.75 (label 1: right), s2 mean 0.525 (label 0: wrong)
    predictions = pd.DataFrame({"image_id": index["image_id"], "patient_id": index["patient_id"],
                                "label_Abnormal": [1, 1, 0, 0, 1, 1],
                                "prob_Abnormal": [0.9, 0.6, 0.1, 0.95, 0.7, 0.6]})
    predictions.to_csv(tmp_path / "test.csv", index=False)
    metrics = {"labels": {"Abnormal": {"auroc": 0.75, "ci_low": 0.5, "ci_high": 0.9}}}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    pd.DataFrame({"epoch": [1, 2], "train_loss": [0.7, 0.5]}).to_csv(tmp_path / "history.csv", index=False)
    return {("mura", "conv4"): {"predictions": str(tmp_path / "test.csv"), "metrics": str(tmp_path / "metrics.json"),
                                "history": str(tmp_path / "history.csv")},
            "mura": {"index": str(tmp_path / "index.csv")}, "iobb": str(tmp_path / "absent.csv")}


def _config(variants, **extra):
    return validate_config({
        "experiment": {"datasets": ["mura"], "variants": variants},
        "datasets": {"mura": {"reader": "mura", "source": "synthetic", "preprocess": {"image_size": 64}}},
        "variants": {v: {"model": "small_cnn"} for v in variants},
        "evaluation": {"bootstrap_samples": 50, "study_column": "study_id", "group_column": "body_part"}, **extra},
        source="test")


def test_mura_reproduction_compares_each_published_figure_with_ours_on_the_same_rows(tmp_path):
    table = reproduction_rows("mura", _config(["conv4"]), _mura_run(tmp_path)).set_index(["arm", "level", "scope"])
    elbow_image = table.loc[("Conv4", "image", "Elbow")]
    assert (elbow_image["published"], elbow_image["ours"]) == (0.72, pytest.approx(0.75))  # 3 of 4 images
    assert elbow_image["ours_ci_low"] <= 0.75 <= elbow_image["ours_ci_high"]
    assert table.loc[("Conv4", "study", "Elbow"), "ours"] == pytest.approx(0.5)  # studies: 1 of 2
    assert table.loc[("Conv4", "image", "Wrist"), "ours"] == pytest.approx(1.0)
    assert table.loc[("Conv4", "image", "all"), "ours"] == pytest.approx(5 / 6)
    assert np.isnan(table.loc[("Conv4", "image", "Finger"), "ours"])  # no finger image in this run
    assert elbow_image["differs"] == "synthetic twin (the format, not the study's images); 64 px (study 224 px)"
    conv3 = table.loc[("Conv3", "image", "Humerus")]  # an arm that did not run
    assert np.isnan(conv3["ours"]) and conv3["differs"] == "this arm did not run in the experiment"


def test_a_renamed_arm_is_found_through_reproduction_variants(tmp_path):
    paths = _mura_run(tmp_path)
    paths[("mura", "my_conv4")] = paths.pop(("mura", "conv4"))
    cfg = _config(["my_conv4"], reproduction={"studies": ["mura"], "variants": {"conv4": "my_conv4"}})
    table = reproduction_rows("mura", cfg, paths)
    assert table.loc[(table["arm"] == "Conv4") & (table["scope"] == "Elbow") & (table["level"] == "image"),
                     "ours"].item() == pytest.approx(0.75)


def test_auroc_hit_fraction_and_loss_figures_come_from_the_runs_own_files(tmp_path):
    metrics = {"labels": {"Atelectasis": {"auroc": 0.70, "ci_low": 0.6, "ci_high": 0.8}}}
    (tmp_path / "m.json").write_text(json.dumps(metrics))
    pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [0.9, 0.4, 0.3]}).to_csv(tmp_path / "h.csv", index=False)
    iobb = pd.DataFrame({"dataset": "nih", "variant": "resnet18_study", "localizer": "maskrcnn/unconditioned",
                         "kind": "measured", "T": 0.5, "metric": ["acc_iou", "acc_iou_ci_low", "acc_iou_ci_high"],
                         "Atelectasis": [0.4, 0.3, 0.5]})
    iobb.to_csv(tmp_path / "iobb.csv", index=False)
    cfg = validate_config({"experiment": {"datasets": ["nih"], "variants": ["resnet18_study"]},
                           "datasets": {"nih": {"reader": "nih", "source": "synthetic"}},
                           "variants": {"resnet18_study": {"model": "resnet18"}}}, source="test")
    paths = {("nih", "resnet18_study"): {"metrics": str(tmp_path / "m.json"), "history": str(tmp_path / "h.csv")},
             "iobb": str(tmp_path / "iobb.csv")}
    table = reproduction_rows("nih_localization", cfg, paths)
    auc = table[(table["metric"] == "auroc") & (table["scope"] == "Atelectasis")].iloc[0]
    assert (auc["published"], auc["ours"], auc["ours_ci_low"], auc["ours_ci_high"]) == (0.74, 0.70, 0.6, 0.8)
    hit = table[(table["metric"] == "hit_iou") & (table["scope"] == "Atelectasis") & (table["T"] == 0.5)].iloc[0]
    assert (hit["published"], hit["ours"], hit["ours_ci_low"], hit["ours_ci_high"]) == (0.472, 0.4, 0.3, 0.5)
    assert np.isnan(table[(table["metric"] == "auroc") & (table["scope"] == "Mass")]["ours"].iloc[0])


def test_every_study_has_figures_and_an_unknown_study_is_named():
    assert set(STUDIES) == {"pediatric_pneumonia", "mura", "chexpert", "chexpert_encodings", "chestxray8",
                            "nih_localization"}
    assert all(len(s.figures) for s in STUDIES.values())
    with pytest.raises(ValueError, match="unknown study 'mur'"):
        reproduction_rows("mur", _config(["conv4"]), {})


def test_chexpert_encodings_rows_are_study_level_aurocs_over_the_maximum_of_the_views(tmp_path):
    """Four studies of two views each; s1 and s4 positive, s2 and s3 negative. The mean over views ranks them
    s1 (.75) > s3 (.575) > s2 (.4) > s4 (.375): AUROC 0.5; the maximum, s1 (.8) > s4 (.7) > s3 (.6) > s2 (.5): 1.0."""
    studies = ["s1", "s1", "s2", "s2", "s3", "s3", "s4", "s4"]
    index = pd.DataFrame({"image_id": [f"i{k}" for k in range(8)], "split": "test", "cache_row": range(8),
                          "study_id": studies, "patient_id": ["a", "a", "b", "b", "c", "c", "d", "d"]})
    index.to_csv(tmp_path / "index.csv", index=False)
    labels = [1, 1, 0, 0, 0, 0, 1, 1]
    predictions = pd.DataFrame({"image_id": index["image_id"], "patient_id": index["patient_id"],
                                "label_Edema": labels, "prob_Edema": [0.8, 0.7, 0.5, 0.3, 0.6, 0.55, 0.7, 0.05]})
    predictions.to_csv(tmp_path / "test.csv", index=False)
    (tmp_path / "m.json").write_text(json.dumps({"labels": {"Edema": {"auroc": 0.1, "ci_low": 0.0, "ci_high": 0.2}}}))
    paths = {("chexpert", "u_ones"): {"predictions": str(tmp_path / "test.csv"), "metrics": str(tmp_path / "m.json")},
             "chexpert": {"index": str(tmp_path / "index.csv")}}

    def edema_row(aggregate):
        cfg = validate_config({"experiment": {"datasets": ["chexpert"], "variants": ["u_ones"]},
                               "datasets": {"chexpert": {"reader": "chexpert", "source": "synthetic"}},
                               "variants": {"u_ones": {"model": "small_cnn", "encoding": "u_ones"}},
                               "evaluation": {"bootstrap_samples": 50, "study_aggregate": aggregate}}, source="test")
        table = reproduction_rows("chexpert_encodings", cfg, paths)
        return table[(table["arm"] == "DenseNet-121, U-Ones") & (table["scope"] == "Edema")].iloc[0]

    row = edema_row("max")
    assert (row["published"], row["level"], row["ours"]) == (0.941, "study", pytest.approx(1.0))  # not the metrics file
    assert row["ours_ci_low"] <= 1.0 <= row["ours_ci_high"]
    assert edema_row("mean")["ours"] == pytest.approx(0.5)
    assert "Table 2" in row["published_source"]
