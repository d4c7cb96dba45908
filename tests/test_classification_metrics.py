"""Threshold-dependent metrics, threshold choice, seed summaries and study-level aggregation, checked against
scikit-learn or hand-worked examples."""

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from xraypipe.metrics import (aggregate_studies, auprc, binary_metrics, choose_threshold, classification_report,
                              confusion, grouped_classification, mean_sd, rates_from_confusion, seed_groups,
                              summarise_over_seeds)


def _data(seed, n=300, ties=True):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(float)
    s = rng.normal(y * 0.9, 1.0)
    if ties:
        s = np.round(s, 1)
    return y, s


@pytest.mark.parametrize("seed", range(6))
def test_auprc_equals_sklearn_average_precision(seed):
    y, s = _data(seed, ties=seed % 2 == 0)
    assert auprc(y, s) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)


def test_auprc_hand_worked_and_nan_labels():
    # scores 0.9(+) 0.8(-) 0.7(+) 0.1(-): AP = 0.5*1 + 0.5*(2/3)
    assert auprc([1, 0, 1, 0, np.nan], [0.9, 0.8, 0.7, 0.1, 0.5]) == pytest.approx(0.5 + 1 / 3)
    assert np.isnan(auprc([0, 0], [0.1, 0.2]))


@pytest.mark.parametrize("seed", range(6))
def test_threshold_metrics_equal_sklearn(seed):
    y, s = _data(seed)
    t = float(np.quantile(s, 0.6))
    m = binary_metrics(y, s, t)
    pred = (s >= t).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (tp, fp, tn, fn)
    assert m["sensitivity"] == pytest.approx(skm.recall_score(y, pred))
    assert m["specificity"] == pytest.approx(skm.recall_score(y, pred, pos_label=0))
    assert m["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["balanced_error"] == pytest.approx(1 - skm.balanced_accuracy_score(y, pred))
    assert m["kappa"] == pytest.approx(skm.cohen_kappa_score(y, pred))
    assert m["auroc"] == pytest.approx(skm.roc_auc_score(y, s))
    assert m["auprc"] == pytest.approx(skm.average_precision_score(y, s))


def test_rates_hand_worked_example():
    # 40 tp, 10 fn, 20 fp, 30 tn: po = 0.7, pe = (60*50 + 40*50)/100^2 = 0.5, kappa = 0.4
    r = rates_from_confusion({"tp": 40, "fn": 10, "fp": 20, "tn": 30})
    assert r["sensitivity"] == pytest.approx(0.8) and r["specificity"] == pytest.approx(0.6)
    assert r["precision"] == pytest.approx(40 / 60) and r["f1"] == pytest.approx(80 / 110)
    assert r["accuracy"] == pytest.approx(0.7) and r["balanced_error"] == pytest.approx(0.3)
    assert r["kappa"] == pytest.approx(0.4)
    assert confusion([1, 0, np.nan, 1], [1, 1, 1, 0]) == {"tp": 1, "fp": 1, "tn": 0, "fn": 1}


@pytest.mark.parametrize("seed", range(4))
def test_youden_and_max_f1_thresholds_match_a_sklearn_sweep(seed):
    y, s = _data(seed)
    fpr, tpr, thr = skm.roc_curve(y, s, drop_intermediate=False)
    j = tpr - fpr
    best_j = j.max()
    t = choose_threshold(y, s, "youden")
    pred = s >= t
    assert skm.recall_score(y, pred) - (1 - skm.recall_score(y, pred, pos_label=0)) == pytest.approx(best_j)
    assert t == pytest.approx(thr[np.flatnonzero(np.isclose(j, best_j))[0]])  # highest threshold among ties
    f1s = [skm.f1_score(y, s >= u) for u in np.unique(s)]
    t_f1 = choose_threshold(y, s, "max_f1")
    assert skm.f1_score(y, s >= t_f1) == pytest.approx(max(f1s))
    with pytest.raises(ValueError, match="unknown threshold method"):
        choose_threshold(y, s, "best")


def test_thresholds_come_from_validation_not_test():
    pathologies = ["A"]
    val = pd.DataFrame({"label_A": [0, 0, 1, 1], "prob_A": [0.1, 0.2, 0.3, 0.4]})   # separable at 0.3
    test = pd.DataFrame({"label_A": [0, 0, 1, 1], "prob_A": [0.6, 0.7, 0.8, 0.9]})  # all above 0.3
    rep = classification_report(test, val, pathologies, "youden")
    assert rep["thresholds"]["A"] == pytest.approx(0.3)
    a = rep["labels"]["A"]
    assert (a["tp"], a["fp"], a["tn"], a["fn"]) == (2, 2, 0, 0)  # a test-chosen threshold would give 2, 0, 2, 0
    assert a["auroc"] == 1.0 and rep["macro"]["specificity"] == 0.0


def test_mean_sd_and_seed_groups():
    assert mean_sd([1.0, 2.0, 3.0, np.nan]) == pytest.approx((2.0, 1.0, 3))
    m, s, n = mean_sd([0.5])
    assert m == 0.5 and np.isnan(s) and n == 1
    variants = {"r": {"model": "resnet18", "seed": 0}, "r1": {"model": "resnet18", "seed": 1},
                "c": {"model": "small_cnn", "seed": 0}, "r2": {"model": "resnet18", "seed": 2}}
    groups = seed_groups(variants)
    assert groups == {"r": "r", "r1": "r", "r2": "r", "c": "c"}
    table = pd.DataFrame({"dataset": "d", "variant": ["r", "r1", "r2", "c"], "auroc": [0.7, 0.8, 0.9, 0.5]})
    out = summarise_over_seeds(table, groups, ["dataset"], ["auroc"])
    assert out.to_dict("records") == [{"dataset": "d", "group": "r", "n_seeds": 3, "auroc_mean": pytest.approx(0.8),
                                       "auroc_sd": pytest.approx(np.std([0.7, 0.8, 0.9], ddof=1))}]


def _mura_like():
    """Hand-made MURA-like frame: 4 studies of 1-3 images, two body parts, one study-level label."""
    return pd.DataFrame({
        "image_id": [f"i{k}" for k in range(8)],
        "patient_id": ["p1", "p1", "p2", "p3", "p3", "p3", "p4", "p4"],
        "study_id": ["s1", "s1", "s2", "s3", "s3", "s3", "s4", "s4"],
        "body_part": ["XR_WRIST", "XR_WRIST", "XR_HAND", "XR_HAND", "XR_HAND", "XR_HAND", "XR_WRIST", "XR_WRIST"],
        "label_abnormal": [1, 1, 0, 1, 1, np.nan, 0, 0],
        "prob_abnormal": [0.9, 0.5, 0.2, 0.1, 0.4, 0.7, 0.3, 0.6],
    })


def test_study_level_aggregation_is_the_mean_of_the_images():
    studies = aggregate_studies(_mura_like(), ["abnormal"], keep=("patient_id", "body_part"))
    assert studies["study_id"].tolist() == ["s1", "s2", "s3", "s4"]
    assert studies["n_images"].tolist() == [2, 1, 3, 2]
    np.testing.assert_allclose(studies["prob_abnormal"], [0.7, 0.2, 0.4, 0.45])
    assert studies["label_abnormal"].tolist() == [1, 0, 1, 0]
    assert studies["body_part"].tolist() == ["XR_WRIST", "XR_HAND", "XR_HAND", "XR_WRIST"]
    bad = _mura_like()
    bad.loc[1, "label_abnormal"] = 0
    with pytest.raises(ValueError, match="study 's1'"):
        aggregate_studies(bad, ["abnormal"])
    with pytest.raises(KeyError, match="study_col"):
        aggregate_studies(_mura_like(), ["abnormal"], study_column="study_col")


def test_per_group_table_uses_validation_thresholds():
    test = aggregate_studies(_mura_like(), ["abnormal"], keep=("patient_id", "body_part"))
    val = pd.DataFrame({"label_abnormal": [0, 1, 0, 1], "prob_abnormal": [0.1, 0.5, 0.3, 0.8]})  # threshold 0.5
    table = grouped_classification(test, val, ["abnormal"], "body_part").set_index("group")
    assert set(table.index) == {"XR_HAND", "XR_WRIST", "all"}
    assert (table["threshold"] == 0.5).all()
    wrist = table.loc["XR_WRIST"]  # s1 (label 1, 0.7 -> +), s4 (label 0, 0.45 -> -)
    assert (wrist["tp"], wrist["tn"], wrist["fp"], wrist["fn"]) == (1, 1, 0, 0) and wrist["kappa"] == 1.0
    everything = table.loc["all"]
    pred = (test["prob_abnormal"] >= 0.5).astype(int)
    assert everything["kappa"] == pytest.approx(skm.cohen_kappa_score(test["label_abnormal"], pred))


def test_study_and_image_level_rows_at_the_chosen_and_the_fixed_threshold(tmp_path):
    """The MURA study's tables: study-level (mean of the images) and image-level rows per body part, at the
    validation-chosen threshold and at its fixed 0.5 vote."""
    from xraypipe.evaluation import study_level_rows

    frame = _mura_like()
    index = frame[["image_id", "patient_id", "study_id", "body_part"]]
    preds = frame.drop(columns=["study_id", "body_part"])
    preds.to_csv(tmp_path / "test.csv", index=False)
    preds.to_csv(tmp_path / "val.csv", index=False)
    index.to_csv(tmp_path / "index.csv", index=False)
    cfg = {"study_column": "study_id", "study_aggregate": "mean", "group_column": "body_part", "threshold_method": "youden",
           "fixed_thresholds": [0.5]}
    rows = study_level_rows("mura", "v", tmp_path / "test.csv", tmp_path / "val.csv", tmp_path / "index.csv", cfg)
    assert set(zip(rows["level"], rows["threshold_method"])) == {
        ("study", "youden"), ("study", "fixed 0.5"), ("image", "youden"), ("image", "fixed 0.5")}
    overall = rows[rows["group"] == "all"].set_index(["level", "threshold_method"])
    # study level at 0.5: s1 0.7 (+, label 1), s2 0.2 (-, 0), s3 0.4 (-, 1), s4 0.45 (-, 0)
    s = overall.loc[("study", "fixed 0.5")]
    assert (s["tp"], s["fn"], s["tn"], s["fp"], s["n_studies"]) == (1, 1, 2, 0, 4)
    # image level at 0.5 over the 7 images with a label: i0 0.9 (+,1) i1 0.5 (+,1) i2 0.2 (-,0) i3 0.1 (-,1)
    # i4 0.4 (-,1) i6 0.3 (-,0) i7 0.6 (+,0)
    i = overall.loc[("image", "fixed 0.5")]
    assert (i["tp"], i["fn"], i["tn"], i["fp"], i["n"]) == (2, 2, 2, 1, 7) and np.isnan(i["n_studies"])
    assert (rows.loc[rows["threshold_method"] == "fixed 0.5", "threshold"] == 0.5).all()
    assert set(rows["group"]) == {"XR_HAND", "XR_WRIST", "all"}


def test_a_study_score_is_the_mean_or_the_maximum_of_its_images():
    frame = pd.DataFrame({"study_id": ["s1", "s1", "s2"], "patient_id": ["a", "a", "b"], "label_x": [1.0, 1.0, 0.0],
                          "prob_x": [0.2, 0.8, 0.3]})
    assert aggregate_studies(frame, ["x"])["prob_x"].tolist() == pytest.approx([0.5, 0.3])
    assert aggregate_studies(frame, ["x"], how="max")["prob_x"].tolist() == pytest.approx([0.8, 0.3])
    with pytest.raises(ValueError, match="unknown study aggregate 'median'"):
        aggregate_studies(frame, ["x"], how="median")
