"""The evaluate stage (test metrics at validation-chosen thresholds) and the study-level stage.

Thresholds are chosen on the validation predictions only (``evaluation.threshold_method``: ``youden`` or
``max_f1``) and written to ``thresholds.json`` beside the model, where the ``xraypipe-predict`` command finds them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from xraypipe.atomic import write_json
from xraypipe.metrics import (aggregate_studies, auroc, classification_report, evaluate_predictions,
                              fixed_threshold_report, grouped_classification)


def read_predictions(path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: predictions not found (run the predict rule first)")
    frame = pd.read_csv(path, dtype={"patient_id": str, "image_id": str})
    if not any(c.startswith("prob_") for c in frame.columns):
        raise KeyError(f"{path}: no prob_<label> columns")
    return frame


def prediction_labels(frame: pd.DataFrame) -> list[str]:
    return [c[len("prob_"):] for c in frame.columns if c.startswith("prob_")]


def _json_safe(obj):
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def evaluate(test_csv, val_csv, cfg: dict, out_json, thresholds_json) -> dict:
    """Metrics JSON for one dataset x variant: AUROC + bootstrap CI (``labels``/``mean``, as before), and under
    ``classification`` AUPRC, sensitivity, specificity, precision, F1, accuracy, balanced error, Cohen's kappa and
    the confusion counts per label at the validation-chosen thresholds, plus their macro mean."""
    test, val = read_predictions(test_csv), read_predictions(val_csv)
    pathologies = prediction_labels(test)
    if prediction_labels(val) != pathologies:
        raise KeyError(f"{val_csv}: labels {prediction_labels(val)} differ from {test_csv}'s {pathologies}")
    result = evaluate_predictions(test, pathologies, n_boot=cfg["bootstrap_samples"],
                                  level=cfg["ci_level"], seed=cfg["seed"],
                                  unit=cfg["bootstrap_unit"],
                                  min_positives=cfg["min_test_positives"])
    method = cfg["threshold_method"]
    report = classification_report(test, val, pathologies, method)
    result["classification"] = report
    # fixed operating points (a study's own rule, e.g. argmax = 0.5), reported beside, never chosen on test
    result["classification_fixed"] = [fixed_threshold_report(test, pathologies, t) for t in cfg["fixed_thresholds"]]
    # validation AUROC for reference only: the model and thresholds were chosen on it, so it is optimistic
    val_labels = val[[f"label_{p}" for p in pathologies]].to_numpy(dtype=float)
    val_scores = val[[f"prob_{p}" for p in pathologies]].to_numpy(dtype=float)
    val_aurocs = [auroc(val_labels[:, j], val_scores[:, j]) for j in range(len(pathologies))]
    result["validation_mean_auroc"] = float(np.nanmean(val_aurocs)) if np.isfinite(val_aurocs).any() else None
    result["n_val_images"] = int(len(val))
    if result["n_images"] == 0:
        print(f"{test_csv}: the test split is empty (the source has no test split); validation mean AUROC "
              f"{'n/a' if result['validation_mean_auroc'] is None else round(result['validation_mean_auroc'], 4)} (optimistic: used for model selection)", flush=True)
    flat = {"mean_auroc": result["mean"]["auroc"],
            **{f"auroc_{label}": v["auroc"] for label, v in result["labels"].items()},
            **{f"macro_{k}": v for k, v in report["macro"].items() if k != "auroc"}}
    write_json(out_json, _json_safe({**flat, **result}))
    write_json(thresholds_json, _json_safe({
        "method": method, "chosen_on": str(val_csv), "pathologies": pathologies,
        "thresholds": report["thresholds"],
        "note": "predict positive when probability >= threshold; chosen on the validation split only"}))
    return result


def study_level(test_csv, val_csv, index_csv, cfg: dict):
    """(test studies, val studies, group column, test images, val images) for a dataset whose cache index has the
    study column, else None: the predictions with the study and group columns, and their study-level means.

    The cache index (the manifest in cache order) brings the study and group columns to the predictions.
    """
    study_col = cfg["study_column"]
    group_col = cfg["group_column"]
    index = pd.read_csv(index_csv, dtype=str, keep_default_na=False)
    if study_col not in index.columns:
        return None
    extra = [c for c in (study_col, group_col) if c in index.columns]
    studies, images = [], []
    for path in (test_csv, val_csv):
        pred = read_predictions(path)
        pred = pred.drop(columns=[c for c in extra if c in pred.columns]).merge(
            index[["image_id", *extra]].drop_duplicates("image_id"), on="image_id", how="left")
        if pred[study_col].isna().any():
            missing = pred.loc[pred[study_col].isna(), "image_id"].iloc[0]
            raise KeyError(f"{index_csv}: no {study_col!r} for image {missing!r} of {path}")
        keep = ("patient_id", group_col) if group_col in pred.columns else ("patient_id",)
        studies.append(aggregate_studies(pred, prediction_labels(pred), study_col, keep=keep,
                                         how=cfg["study_aggregate"]))
        images.append(pred)
    return studies[0], studies[1], group_col, images[0], images[1]


def study_level_rows(dataset: str, variant: str, test_csv, val_csv, index_csv, cfg: dict) -> pd.DataFrame:
    """Rows of study_level.csv for one dataset x variant (empty when the dataset has no studies): per ``level``
    (``study``: a study's probability is the mean, or with ``study_aggregate: max`` the maximum, of its images';
    ``image``: each image alone, the MURA study's
    image-level table), per group and label, at the thresholds chosen on the validation split
    (``threshold_method``) and at each of ``fixed_thresholds`` (the MURA study's vote at 0.5)."""
    result = study_level(test_csv, val_csv, index_csv, cfg)
    if result is None:
        return pd.DataFrame()
    test_studies, val_studies, group_col, test_images, val_images = result
    pathologies = prediction_labels(test_studies)
    method = cfg["threshold_method"]
    rules = [(method, None)] + [(f"fixed {float(t):g}", float(t)) for t in cfg["fixed_thresholds"]]
    parts = []
    for level, test, val in (("study", test_studies, val_studies), ("image", test_images, val_images)):
        for rule, fixed in rules:
            if group_col in test.columns:
                table = grouped_classification(test, val, pathologies, group_col, method, fixed=fixed)
            else:
                report = classification_report(test, val, pathologies, method) if fixed is None else \
                    fixed_threshold_report(test, pathologies, fixed)
                table = pd.DataFrame([{"group": "all", "label": p, **m} for p, m in report["labels"].items()])
            parts.append(table.assign(level=level, threshold_method=rule))
    table = pd.concat(parts, ignore_index=True)
    table.insert(0, "variant", variant)
    table.insert(0, "dataset", dataset)
    table["n_studies"] = np.where(table["level"] == "study", table["n"], np.nan)
    return table


def load_metrics(path) -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: metrics not found (run the evaluate rule first)")
    return json.loads(path.read_text())
