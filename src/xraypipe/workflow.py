"""The experiment's file layout and per-stage parameters, shared by the Snakefile, the scripts and tests.

dvc.yaml writes the same paths with DVC's ``${}`` templating; tests/test_workflow_consistency.py checks
that both define the same outputs and track the same parameters.
"""

from __future__ import annotations

import copy
import json

PATHS = {
    # the configuration as given (validated, no defaults filled in), as JSON: DVC's params file (dvc.yaml)
    "config_json": "results/config.json",
    "raw": "results/raw/{dataset}",
    "manifest": "results/splits/{dataset}.csv",
    "split_summary": "results/splits/{dataset}.summary.csv",
    "cache_array": "results/cache/{dataset}/{split}.npy",
    "cache_index": "results/cache/{dataset}/index.csv",
    "cache_skipped": "results/cache/{dataset}/skipped.csv",
    # issue 8: per-pixel mean/std images of the training split (variants.<v>.normalization: per_pixel)
    "pixel_stats": "results/cache/{dataset}/pixel_stats.npz",
    "model": "results/models/{dataset}/{variant}/model.pt",
    "history": "results/models/{dataset}/{variant}/history.csv",
    "checkpoint": "results/checkpoints/{dataset}/{variant}/last.pt",
    "predictions": "results/predictions/{dataset}/{variant}/{split}.csv",
    "metrics": "results/metrics/{dataset}/{variant}.json",
    "auroc_table": "results/tables/auroc.csv",
    "auroc_markdown": "results/tables/auroc.md",
    # issue 5: evaluation, localization, tables, figures
    "thresholds": "results/models/{dataset}/{variant}/thresholds.json",
    "loc_summary": "results/localization/{dataset}/{variant}/summary.csv",
    "loc_scored": "results/localization/{dataset}/{variant}/scored.csv",
    "loc_detected": "results/localization/{dataset}/{variant}/detected.csv",
    "loc_heatmaps": "results/localization/{dataset}/{variant}/heatmaps.npz",
    "loc_info": "results/localization/{dataset}/{variant}/info.json",
    # issue 8: a detector (Mask R-CNN / Faster R-CNN) trained on the boxes (xraypipe.detection, rules/detect.smk)
    "detector_model": "results/detectors/{dataset}/model.pt",
    "detector_history": "results/detectors/{dataset}/history.csv",
    "det_summary": "results/localization/{dataset}/{variant}/detector/summary.csv",
    "det_scored": "results/localization/{dataset}/{variant}/detector/scored.csv",
    "det_detected": "results/localization/{dataset}/{variant}/detector/detected.csv",
    "det_split": "results/localization/{dataset}/{variant}/detector/box_split.csv",
    "det_info": "results/localization/{dataset}/{variant}/detector/info.json",
    "classification_table": "results/tables/classification.csv",
    "classification_markdown": "results/tables/classification.md",
    "iobb_table": "results/tables/iobb.csv",
    "iobb_markdown": "results/tables/iobb.md",
    "study_table": "results/tables/study_level.csv",
    "study_markdown": "results/tables/study_level.md",
    "auroc_html": "results/tables/auroc.html",
    "classification_html": "results/tables/classification.html",
    "iobb_html": "results/tables/iobb.html",
    "study_html": "results/tables/study_level.html",
    "fig_roc": "results/figures/roc_{dataset}.png",
    "fig_labels": "results/figures/label_distribution_{dataset}.png",
    "fig_training": "results/figures/training_{dataset}.png",
    "fig_confusion": "results/figures/confusion_{dataset}_{variant}.png",
    "fig_gradcam": "results/figures/gradcam_{dataset}_{variant}.png",
    # issue 8: patient-wise k-fold cross-validation (xraypipe.cv, rules/cv.smk)
    "cv_folds": "results/cv/{dataset}/{variant}/folds.csv",
    "cv_model": "results/cv/{dataset}/{variant}/fold{fold}/model.pt",
    "cv_history": "results/cv/{dataset}/{variant}/fold{fold}/history.csv",
    "cv_metrics": "results/cv/{dataset}/{variant}/fold{fold}/metrics.json",
    "cv_checkpoint": "results/checkpoints/{dataset}/{variant}/cv_fold{fold}/last.pt",
    "cv_table": "results/tables/cross_validation_{variant}.csv",
    "cv_markdown": "results/tables/cross_validation_{variant}.md",
    "cv_html": "results/tables/cross_validation_{variant}.html",
}

# Config keys (dotted, with {dataset}/{variant} placeholders) each stage depends on. Snakemake passes exactly
# these to the script (so a change re-runs just the affected jobs); dvc.yaml lists them under params.
STAGE_PARAMS = {
    "raw": ["datasets.{dataset}.reader", "datasets.{dataset}.source", "datasets.{dataset}.root",
            "datasets.{dataset}.synthetic", "datasets.{dataset}.download"],
    "splits": ["datasets.{dataset}.reader", "datasets.{dataset}.pathologies", "datasets.{dataset}.views",
               "datasets.{dataset}.missing_images", "datasets.{dataset}.split", "datasets.{dataset}.body_parts"],
    "cache": ["datasets.{dataset}.preprocess"],
    "pixel_stats": [],  # a function of the cached training split only
    "train": ["variants.{variant}", "training.device", "training.amp", "training.channels_last",
              "training.distributed"],
    "predict": ["training.device"],
    "evaluate": ["evaluation.bootstrap_samples", "evaluation.ci_level", "evaluation.bootstrap_unit", "evaluation.seed",
                 "evaluation.threshold_method", "evaluation.min_test_positives"],
    "table": ["experiment", "evaluation.ci_level", "datasets", "variants"],
    "localize": ["evaluation.localization", "datasets.{dataset}.preprocess", "training.device"],
    # issue 8: the detector trains on the box split and its training keys (not on max_images, the heatmap keys or
    # the inference keys score_threshold/max_per_finding); detect scores like localize
    "train_detector": [f"evaluation.localization.detector.{k}" for k in (
        "architecture", "backbone", "weights", "backbone_weights", "fpn_channels", "epochs", "batch_size", "lr",
        "weight_decay", "seed")] + ["evaluation.localization.box_split", "datasets.{dataset}.preprocess",
                                    "training.device"],
    "detect": ["evaluation.localization", "datasets.{dataset}.preprocess", "training.device"],
    "study_table": ["experiment", "datasets", "evaluation.threshold_method", "evaluation.study_column",
                    "evaluation.group_column"],
    "figures": ["experiment"],
    # issue 8: the fold assignment, each fold's training (the variant's own keys, like train) and the table
    "cv_folds": ["cross_validation.folds", "cross_validation.seed"],
    "train_fold": ["variants.{variant}", "training.device", "training.amp", "training.channels_last",
                   "training.distributed"],
    "cv_table": ["experiment.datasets", "cross_validation.folds"],
}


def stage_params(config: dict, stage: str, **names) -> dict:
    """The nested sub-config holding only ``STAGE_PARAMS[stage]`` (missing keys are simply absent)."""
    result: dict = {}
    for dotted in STAGE_PARAMS[stage]:
        keys = dotted.format(**names).split(".")
        node = config
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                break
            node = node[key]
        else:
            target = result
            for key in keys[:-1]:
                target = target.setdefault(key, {})
            target[keys[-1]] = copy.deepcopy(node)
    return result


def stage_params_json(config: dict, stage: str, **names) -> str:
    return json.dumps(stage_params(config, stage, **names), sort_keys=True, separators=(",", ":"))


def experiment_pairs(config: dict) -> list[tuple[str, str]]:
    return [(d, v) for d in config["experiment"]["datasets"] for v in config["experiment"]["variants"]]


def cv_variants(config: dict) -> list[str]:
    """The variants cross-validated (``cross_validation.variants``; empty = cross-validation off)."""
    return list((config.get("cross_validation") or {}).get("variants") or [])


def cv_runs(config: dict) -> list[tuple[str, str, int]]:
    """(dataset, variant, fold) of every cross-validation training job: experiment datasets x CV variants x folds."""
    folds = (config.get("cross_validation") or {}).get("folds") or []
    return [(d, v, int(f)) for d in config["experiment"]["datasets"] for v in cv_variants(config) for f in folds]
