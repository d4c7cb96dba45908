"""Reproduction tables: each study's own published figures beside ours on the same metric, with CIs.

``STUDIES`` holds, per study, the figures its report gives (copied from the report, with the table or figure they
come from) and which of our variants (the names its ``config/<study>.yaml`` uses) runs that arm. ``reproduction_rows``
computes ours from the pipeline's outputs: AUROCs from the evaluate stage's metrics (their patient-clustered
bootstrap CIs), accuracy / F1 / kappa at the study's decision rule from the test predictions (a patient-clustered
bootstrap of the same resampler as the AUROC's), MURA's per-body-part accuracies at image and study level, the NIH
localization study's IoU hit fractions from the IoBB table, and final training losses from the training history
(no interval: one run). A figure whose arm did not run here gets an empty "ours".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from xraypipe.metrics import aggregate_studies, bootstrap_auroc, bootstrap_weights, percentile_interval


@dataclass(frozen=True)
class Figure:
    """One published figure: ``metric`` of ``arm`` (our ``variant``) on ``scope`` (a label, a body part or
    ``all``) at ``level`` (image / study), at the fixed ``threshold`` (None: a threshold-free metric), from
    ``source`` (the report's table or figure)."""

    arm: str
    variant: str | None
    metric: str  # auroc, accuracy, f1, kappa, hit_iou, final_train_loss
    scope: str
    value: float
    source: str
    level: str = "image"
    threshold: float | None = None
    t: float | None = None  # hit_iou: the overlap threshold T


@dataclass(frozen=True)
class Study:
    title: str
    reader: str  # the datasets of ours that stand for the study's data
    image_size: dict  # our variant -> the study's input size (px)
    protocol: str  # what differs, whatever the data: split, selection, weights
    figures: tuple = field(default_factory=tuple)


def _rows(arm, variant, metric, values: dict, source, **kw):
    return tuple(Figure(arm, variant, metric, scope, value, source, **kw) for scope, value in values.items())


_MURA_IMAGE = {"Elbow": 0.720, "Finger": 0.666, "Forearm": 0.638, "Wrist": 0.730, "Shoulder": 0.698, "Humerus": 0.691}
_MURA_STUDY = {"Elbow": 0.770, "Finger": 0.711, "Wrist": 0.734, "Shoulder": 0.688, "Humerus": 0.758}
_CHEXPERT_LABELS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
_CHEXPERT_TABLE_1 = {  # arm -> (our variant, AUROCs in _CHEXPERT_LABELS order); all U-Ones
    "Transfer learning (linear probe)": ("linear_probe", (0.720, 0.673, 0.658, 0.779, 0.724)),
    "Trained from scratch (every layer from ImageNet)": ("finetune_all", (0.834, 0.790, 0.868, 0.906, 0.920)),
    "Trained from TF (probe, then every layer)": ("probe_then_finetune", (0.788, 0.831, 0.857, 0.911, 0.933)),
    "CheXpert paper (U-Ones, 30-checkpoint ensemble)": (None, (0.858, 0.832, 0.899, 0.941, 0.934)),
}
# The CheXpert paper (Irvin et al. 2019), its Table 2: validation-set AUROC (200 studies, scored per study: the
# maximum over the study's views) of DenseNet-121 trained with each uncertainty encoding, in _CHEXPERT_LABELS order
_CHEXPERT_ENCODINGS = {"U-Ignore": ("u_ignore", (0.818, 0.828, 0.938, 0.934, 0.928)),
                       "U-Zeros": ("u_zeros", (0.811, 0.840, 0.932, 0.929, 0.931)),
                       "U-Ones": ("u_ones", (0.858, 0.832, 0.899, 0.941, 0.934)),
                       "U-SelfTrained": ("u_selftrained", (0.833, 0.831, 0.939, 0.935, 0.932)),
                       "U-MultiClass": ("u_multiclass", (0.821, 0.854, 0.937, 0.928, 0.936))}
_NIH_LOC_AUC = {"Cardiomegaly": 0.87, "Effusion": 0.81, "Mass": 0.78, "Nodule": 0.74, "Atelectasis": 0.74,
                "Infiltration": 0.68, "Pneumonia": 0.68, "Pneumothorax": 0.83, "No Finding": 0.81}
_NIH_LOC_FINDINGS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
                     "Pneumothorax")
_NIH_LOC_MASKRCNN = {  # T -> fraction of boxes with IoU > T (its Table 1 "T(IoBB)", an IoU), Mask R-CNN
    0.1: (0.806, 1.0, 0.806, 0.96, 0.833, 0.938, 0.958, 0.55),
    0.25: (0.611, 0.967, 0.677, 0.92, 0.765, 0.625, 0.875, 0.4),
    0.5: (0.472, 0.9, 0.419, 0.64, 0.353, 0.375, 0.583, 0.2),
    0.75: (0.333, 0.867, 0.129, 0.28, 0.294, 0.188, 0.333, 0.0),
    0.9: (0.083, 0.3, 0.032, 0.12, 0.118, 0.125, 0.0, 0.0),
}

STUDIES = {
    "pediatric_pneumonia": Study(
        title="the pediatric pneumonia study", reader="kermany",
        image_size={v: 224 for v in ("study_vgg_lr1e4_b16", "study_vgg_lr1e4_b64")},
        protocol="validation: patients carved from train (the study: 16 images); threshold 0.5 as the study's argmax",
        figures=tuple(
            f for variant, batch in (("study_vgg_lr1e4_b16", 16), ("study_vgg_lr1e4_b64", 64)) for f in (
                Figure(f"VGG16-partial, ImageNet, lr 1e-4, batch {batch}", variant, "accuracy", "Pneumonia", 0.84,
                       "its results table (official test split, 624 images)", threshold=0.5),
                Figure(f"VGG16-partial, ImageNet, lr 1e-4, batch {batch}", variant, "f1", "Pneumonia", 0.86,
                       "its results table (official test split, 624 images)", threshold=0.5)))),
    "mura": Study(
        title="the MURA study", reader="mura",
        image_size={"conv2": 512, "conv3": 224, "conv4": 224, "dense_baseline": 512},
        protocol="test: the official valid set, as the study; the best epoch on a patient-wise validation split "
                 "carved from train (the study selected on its test data); study level = MURA studies (the study: "
                 "patient cases)",
        figures=_rows("Conv4", "conv4", "accuracy", _MURA_IMAGE, "its Figure 2 (images)", threshold=0.5)
        + _rows("Conv4", "conv4", "accuracy", _MURA_STUDY, "its Figure 3 (grouped by patient)", level="study",
                threshold=0.5)
        + (Figure("Conv4", "conv4", "accuracy", "all", 0.61, "its section 5.2.3 (whole data set)", threshold=0.5),
           Figure("Conv3", "conv3", "accuracy", "Humerus", 0.625, "its Figure 1 / section 5.2.2", threshold=0.5),
           Figure("Conv3", "conv3", "accuracy", "Humerus", 0.606, "its section 5.2.2 (grouped by patient)",
                  level="study", threshold=0.5),
           Figure("Conv2", "conv2", "accuracy", "Forearm", 0.63, "its section 5.2.1", threshold=0.5))),
    "chexpert": Study(
        title="the CheXpert study", reader="chexpert",
        image_size={v: 224 for v in ("finetune_all", "linear_probe", "probe_then_finetune")},
        protocol="test: the official validation set (as the study); validation carved patient-wise from train; the "
                 "probes' best epoch by validation AUROC (the study: accuracy)",
        figures=tuple(Figure(arm, variant, "auroc", label, value, "its Table 1 (U-Ones)")
                      for arm, (variant, values) in _CHEXPERT_TABLE_1.items()
                      for label, value in zip(_CHEXPERT_LABELS, values))),
    "chexpert_encodings": Study(
        title="the CheXpert paper's uncertainty encodings", reader="chexpert",
        image_size={v: 320 for v, _ in _CHEXPERT_ENCODINGS.values()},
        protocol="test: the official validation set (the paper's figures are on it); our validation split carved "
                 "patient-wise from train picks the checkpoints (the paper: the same validation set)",
        figures=tuple(Figure(f"DenseNet-121, {arm}", variant, "auroc", label, value,
                             "Irvin et al. 2019, Table 2 (validation set, 200 studies, max over views)",
                             level="study")
                      for arm, (variant, values) in _CHEXPERT_ENCODINGS.items()
                      for label, value in zip(_CHEXPERT_LABELS, values))),
    "chestxray8": Study(
        title="the ChestX-ray8 study", reader="nih",
        image_size={v: 224 for v in ("vgg_like_1ch", "resnet18_probe_wcel", "resnet18_probe_bce")},
        protocol="the study reports no test metric (only training losses and confusion counts at 0.5); ours: the "
                 "last epoch's training loss (W-CEL and BCE losses are on different scales)",
        figures=(Figure("VGG-like 1-channel net (~120 epochs)", "vgg_like_1ch", "final_train_loss", "all", 0.02,
                        "its section 4.3.1"),
                 Figure("ResNet-18 probe, W-CEL (~100 epochs)", "resnet18_probe_wcel", "final_train_loss", "all", 0.80,
                        "its section 4.3.1"),
                 Figure("ResNet-18 probe, BCE (~100 epochs)", "resnet18_probe_bce", "final_train_loss", "all", 0.20,
                        "its section 4.3.1"))),
    "nih_localization": Study(
        title="the NIH localization study", reader="nih",
        image_size={"resnet18_study": 1024},
        protocol="a patient-wise split with the official test list (the study: a random 80/10/10 of images); Mask "
                 "R-CNN hit fractions on our scoring boxes (the study's box split is not given)",
        figures=_rows("ResNet-18, 9 outputs", "resnet18_study", "auroc", _NIH_LOC_AUC, "its AUC of ROC table")
        + tuple(Figure("Mask R-CNN (unconditioned)", "resnet18_study", "hit_iou", finding, value,
                       "its Table 1 (labelled T(IoBB), scored as IoU)", t=t)
                for t, values in _NIH_LOC_MASKRCNN.items() for finding, value in zip(_NIH_LOC_FINDINGS, values))),
}

COLUMNS = ["study", "arm", "metric", "scope", "level", "threshold", "T", "published", "published_source", "ours",
           "ours_ci_low", "ours_ci_high", "dataset", "variant", "differs"]


# ------------------------------------------------------------------------------------------- our figures
def bootstrap_at_threshold(y, score, threshold: float, metric: str, *, groups=None, n_boot: int = 1000,
                           level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """(value, CI low, CI high) of ``metric`` (accuracy, f1, kappa) of ``score >= threshold`` against ``y``,
    with a bootstrap that resamples ``groups`` (patients) like the AUROC's. Unknown (NaN) labels are left out."""
    y, score = np.asarray(y, dtype=float), np.asarray(score, dtype=float)
    known = ~np.isnan(y)
    y, pred = y[known] > 0.5, score[known] >= threshold
    weights = np.vstack([np.ones(len(y)), bootstrap_weights(len(y), n_boot, seed, None if groups is None else
                                                            np.asarray(groups)[known])])
    tp, fp = weights @ (y & pred), weights @ (~y & pred)
    fn, tn = weights @ (y & ~pred), weights @ (~y & ~pred)
    n = tp + fp + fn + tn
    with np.errstate(invalid="ignore", divide="ignore"):
        if metric == "accuracy":
            values = (tp + tn) / n
        elif metric == "f1":
            values = 2 * tp / (2 * tp + fp + fn)
        elif metric == "kappa":
            observed = (tp + tn) / n
            chance = ((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)) / n ** 2
            values = (observed - chance) / (1 - chance)
        else:
            raise ValueError(f"unknown metric {metric!r}; choose accuracy, f1 or kappa")
    draws = values[1:][np.isfinite(values[1:])]
    low, high = percentile_interval(draws, 1 - level) if len(draws) else (np.nan, np.nan)
    return float(values[0]), float(low), float(high)


def _dataset_for(study: Study, config: dict) -> str | None:
    """The experiment's first dataset read by the study's reader (a twin counts), or None."""
    return next((d for d in config["experiment"]["datasets"] if config["datasets"][d]["reader"] == study.reader), None)


def _differs(figure: Figure, study: Study, config: dict, dataset: str) -> str:
    ds = config["datasets"][dataset]
    data = "synthetic twin (the format, not the study's images)" if ds["source"] == "synthetic" else \
        f"real data ({dataset})"
    size = int(ds["preprocess"]["image_size"])
    args = (config["variants"].get(figure.variant) or {}).get("model_args") or {}
    size = int(args.get("input_size", size))
    wanted = study.image_size.get(figure.variant)
    resolution = f"{size} px" + ("" if wanted in (None, size) else f" (study {wanted} px)")
    return f"{data}; {resolution}"


def _ours(figure: Figure, sources: dict, bootstrap: dict, evaluation: dict):
    """(ours, low, high) for one figure from the run's outputs (``sources``: loaders by kind); NaNs when absent."""
    missing = (np.nan, np.nan, np.nan)
    if figure.metric == "auroc" and figure.level == "study":
        # a study-level AUROC (the CheXpert paper's): from the study-level predictions (mean or maximum over a
        # study's images, evaluation.study_aggregate), with the same patient-clustered bootstrap as the evaluate
        # stage's image-level AUROC
        frame = sources["predictions"]("study")
        if frame is None or f"prob_{figure.scope}" not in frame.columns:
            return missing
        groups = frame["patient_id"].astype(str).to_numpy() if bootstrap["unit"] == "patient" else None
        result = bootstrap_auroc(frame[[f"label_{figure.scope}"]].to_numpy(dtype=float),
                                 frame[[f"prob_{figure.scope}"]].to_numpy(dtype=float), labels=[figure.scope],
                                 n_boot=bootstrap["n_boot"], level=bootstrap["level"], seed=bootstrap["seed"],
                                 groups=groups)["labels"][figure.scope]
        return tuple(np.nan if result[k] is None else result[k] for k in ("auroc", "ci_low", "ci_high"))
    if figure.metric == "auroc":
        metrics = sources["metrics"]()
        entry = (metrics or {}).get("labels", {}).get(figure.scope) if metrics else None
        return (entry["auroc"], entry.get("ci_low"), entry.get("ci_high")) if entry else missing
    if figure.metric == "final_train_loss":
        history = sources["history"]()
        return (float(history["train_loss"].iloc[-1]), np.nan, np.nan) if history is not None and len(history) \
            else missing
    if figure.metric == "hit_iou":
        table = sources["iobb"]()
        if table is None or figure.scope not in table.columns:
            return missing
        rows = table[(table["localizer"] == "maskrcnn/unconditioned") & np.isclose(table["T"], figure.t)]
        get = lambda m: rows.loc[rows["metric"] == m, figure.scope]  # noqa: E731
        value, low, high = get("acc_iou"), get("acc_iou_ci_low"), get("acc_iou_ci_high")
        return (float(value.iloc[0]), float(low.iloc[0]) if len(low) else np.nan,
                float(high.iloc[0]) if len(high) else np.nan) if len(value) else missing
    frame = sources["predictions"](figure.level)
    if frame is None:
        return missing
    column = figure.scope if f"prob_{figure.scope}" in frame.columns else None
    if column is None:  # a body part: the study's single label, on that part's rows
        group = evaluation["group_column"]
        if figure.scope != "all":
            if group not in frame.columns:
                return missing
            # MURA's folders spell a part XR_ELBOW, the study "Elbow"
            parts = frame[group].astype(str).str.upper().str.replace(r"^XR_", "", regex=True)
            frame = frame[parts == figure.scope.upper()]
        labels = [c[len("prob_"):] for c in frame.columns if c.startswith("prob_")]
        if len(labels) != 1 or not len(frame):
            return missing
        column = labels[0]
    groups = frame["patient_id"].astype(str) if bootstrap["unit"] == "patient" else None
    return bootstrap_at_threshold(frame[f"label_{column}"], frame[f"prob_{column}"], figure.threshold,
                                  figure.metric, groups=groups, n_boot=bootstrap["n_boot"], level=bootstrap["level"],
                                  seed=bootstrap["seed"])


def _table_rows(path, dataset, variant) -> pd.DataFrame | None:
    """The rows of a results table (e.g. iobb.csv) of one dataset x variant, or None without the file."""
    if path is None:
        return None
    table = pd.read_csv(path)
    return table[(table["dataset"] == dataset) & (table["variant"] == variant)]


def reproduction_rows(study_key: str, config: dict, paths: dict) -> pd.DataFrame:
    """The reproduction table of one study. ``paths``: (dataset, variant) -> {"metrics", "predictions" (test),
    "history"} paths, dataset -> {"index"}, and "iobb": the IoBB table; files that do not exist count as not run."""
    from xraypipe.boxes import bootstrap_settings
    from xraypipe.evaluation import read_predictions

    if study_key not in STUDIES:
        raise ValueError(f"reproduction.studies: unknown study {study_key!r}; choose from {', '.join(STUDIES)}")
    study = STUDIES[study_key]
    evaluation = config["evaluation"]
    bootstrap = bootstrap_settings(evaluation)
    arms = config["reproduction"]["variants"]
    dataset = _dataset_for(study, config)
    rows = []
    for figure in study.figures:
        variant = arms.get(figure.variant, figure.variant)
        ran = dataset is not None and variant in config["experiment"]["variants"]
        files = paths.get((dataset, variant), {}) if ran else {}

        def existing(key):
            path = files.get(key) if key in files else paths.get(key)
            return Path(path) if path and Path(path).exists() else None

        def predictions(level):
            path = existing("predictions")
            if path is None:
                return None
            frame = read_predictions(path)
            index_path = (paths.get(dataset) or {}).get("index")
            study_col, group_col = evaluation["study_column"], evaluation["group_column"]
            if index_path and Path(index_path).exists():
                index = pd.read_csv(index_path, dtype=str, keep_default_na=False)
                extra = [c for c in (study_col, group_col) if c in index.columns and c not in frame.columns]
                if extra:
                    frame = frame.merge(index[["image_id", *extra]].drop_duplicates("image_id"), on="image_id",
                                        how="left")
            if level == "study":
                if study_col not in frame.columns:
                    return None
                labels = [c[len("prob_"):] for c in frame.columns if c.startswith("prob_")]
                keep = tuple(c for c in ("patient_id", group_col) if c in frame.columns)
                frame = aggregate_studies(frame, labels, study_col, keep=keep, how=evaluation["study_aggregate"])
            return frame

        sources = {
            "metrics": lambda: json.loads(existing("metrics").read_text()) if existing("metrics") else None,
            "history": lambda: pd.read_csv(existing("history")) if existing("history") else None,
            "iobb": lambda: _table_rows(existing("iobb"), dataset, variant),
            "predictions": predictions,
        }
        ours = _ours(figure, sources, bootstrap, evaluation) if ran else (np.nan, np.nan, np.nan)
        rows.append({"study": study.title, "arm": figure.arm, "metric": figure.metric, "scope": figure.scope,
                     "level": figure.level, "threshold": figure.threshold, "T": figure.t, "published": figure.value,
                     "published_source": figure.source, "ours": ours[0], "ours_ci_low": ours[1],
                     "ours_ci_high": ours[2], "dataset": dataset if ran else None,
                     "variant": variant if ran else None,
                     "differs": _differs(figure, study, config, dataset) if ran else
                     ("reference only" if figure.variant is None else "this arm did not run in the experiment")})
    return pd.DataFrame(rows, columns=COLUMNS)
