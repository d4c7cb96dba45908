"""Box geometry, the ground-truth boxes in the cache frame, the box split and IoU/IoBB scoring: what both localizers
(Grad-CAM boxes, xraypipe.localization; the trained detector, xraypipe.detection) share.

Boxes are ``(x, y, w, h)`` in continuous pixel coordinates: pixel (row i, column j) covers [j, j+1) x [i, i+1).
Scores (Wang et al., CVPR 2017, "ChestX-ray8"): IoBB = area(detected ∩ ground truth) / area(detected); a
ground-truth box is hit at T when some detected box of the same finding has IoBB > T; AFP = the average number of
detected boxes per image that hit no ground-truth box of their finding.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

IOBB_THRESHOLDS = (0.1, 0.25, 0.5, 0.75, 0.9)
BOX_FRAME = 1024.0  # NIH BBox_List_2017.csv coordinates are in the 1024 x 1024 frame of the released PNGs
ROLES = ("detector_train", "scoring", "not_scored")
SPLIT_DEFAULTS = {"min_train_images": 50, "train_fraction": 0.5, "seed": 0}


# ------------------------------------------------------------------------------------------------ geometry
def box_area(box) -> float:
    return max(0.0, float(box[2])) * max(0.0, float(box[3]))


def intersection(a, b) -> float:
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return max(0.0, w) * max(0.0, h)


def iou(a, b) -> float:
    inter = intersection(a, b)
    union = box_area(a) + box_area(b) - inter
    return inter / union if union > 0 else 0.0


def iobb(detected, truth) -> float:
    """Intersection over the *detected* box's area (Wang et al. 2017)."""
    area = box_area(detected)
    return intersection(detected, truth) / area if area > 0 else 0.0


def map_box(box, image_size: tuple[int, int], cache_size: int, resize: str = "pad",
            frame: tuple[float, float] | None = (BOX_FRAME, BOX_FRAME)) -> tuple[float, float, float, float]:
    """Map a box from the annotation frame to the cache frame, mirroring ``preprocess.resize_square``.

    ``image_size`` is the stored image's (width, height). ``frame`` is the (width, height) the box coordinates
    refer to (NIH: 1024 x 1024, the released PNGs' size); None means the image's own pixel frame. ``resize``:
    pad (letterbox: centred on a black square of the longer side), crop (centre square of the shorter side) or
    stretch. The result is clipped to the cache square.
    """
    width, height = image_size
    x, y, w, h = (float(v) for v in box)
    if frame is not None:
        sx, sy = width / frame[0], height / frame[1]
        x, y, w, h = x * sx, y * sy, w * sx, h * sy
    if resize == "stretch" or width == height:
        kx, ky = cache_size / width, cache_size / height
        ox = oy = 0.0
    elif resize == "pad":
        side = max(width, height)
        kx = ky = cache_size / side
        ox, oy = (side - width) // 2, (side - height) // 2  # PIL paste offsets (integers)
    elif resize == "crop":
        side = min(width, height)
        kx = ky = cache_size / side
        ox, oy = -((width - side) // 2), -((height - side) // 2)
    else:
        raise ValueError(f"unknown resize mode {resize!r}")
    x0, y0 = (x + ox) * kx, (y + oy) * ky
    x1, y1 = (x + w + ox) * kx, (y + h + oy) * ky
    x0, x1 = np.clip([x0, x1], 0, cache_size)
    y0, y1 = np.clip([y0, y1], 0, cache_size)
    return float(x0), float(y0), float(x1 - x0), float(y1 - y0)


# ------------------------------------------------------------------------------------------------ ground truth
def image_sizes(paths) -> list[tuple[int, int]]:
    """(width, height) of each image file, from its header only."""
    from PIL import Image

    from xraypipe.preprocess import ImageDecodeError

    sizes = []
    for path in paths:
        try:
            with Image.open(path) as im:
                sizes.append(im.size)
        except (OSError, ValueError) as exc:
            raise ImageDecodeError(f"{path}: cannot read the image header ({exc})") from None
    return sizes


def boxes_in_cache_frame(boxes: pd.DataFrame, index: pd.DataFrame, cache_size: int, resize: str) -> pd.DataFrame:
    """Join NIH boxes (image_id, finding, x, y, w, h in the 1024 frame) with the cache index and map them into
    the cache frame. Boxes of images not in the cache are dropped. Adds split, cache_row."""
    merged = boxes.merge(index[["image_id", "split", "cache_row", "path"]], on="image_id", how="inner")
    if merged.empty:
        return merged.assign(x=[], y=[], w=[], h=[])
    unique_paths = merged["path"].drop_duplicates().tolist()
    size_of = dict(zip(unique_paths, image_sizes(unique_paths)))
    mapped = [map_box((r.x, r.y, r.w, r.h), size_of[r.path], cache_size, resize)
              for r in merged.itertuples(index=False)]
    merged[["x", "y", "w", "h"]] = np.array(mapped, dtype=float).reshape(-1, 4)
    return merged.drop(columns=["path"])


def mean_box_sizes(boxes: pd.DataFrame, findings) -> dict:
    """finding -> (mean w, mean h) of the given (training) boxes; NaN-free only for findings with boxes."""
    return {f: (float(g["w"].mean()), float(g["h"].mean())) for f, g in boxes.groupby("finding") if f in findings}


def heuristic_box_sizes(train_boxes: pd.DataFrame, findings, image_size: int) -> tuple[dict, dict]:
    """The mean box size per finding for the NIH localization study's heuristic, from the detector-training boxes
    only (a scored box never sets it). A finding without training boxes takes the mean of all training boxes;
    with no training boxes at all, a square of a quarter of the image side. Returns (finding -> (w, h),
    finding -> where the size came from)."""
    sizes = mean_box_sizes(train_boxes, findings)
    sources = {f: "training boxes of the finding" for f in sizes}
    if len(train_boxes):
        fallback, source = (float(train_boxes["w"].mean()), float(train_boxes["h"].mean())), "all training boxes"
    else:
        fallback, source = (image_size / 4,) * 2, "quarter of the image side (no training boxes)"
    for f in findings:
        if f not in sizes:
            sizes[f], sources[f] = fallback, source
    return sizes, sources


def load_boxes(boxes_csv, index: pd.DataFrame, image_size: int, resize: str, findings) -> pd.DataFrame:
    """The dataset's ground-truth boxes in the cache frame (empty when the dataset has no box file)."""
    from xraypipe.datasets.nih import read_nih_boxes

    empty = pd.DataFrame(columns=["image_id", "finding", "x", "y", "w", "h", "split", "cache_row"])
    boxes_csv = Path(boxes_csv) if boxes_csv else None
    if boxes_csv is None or not boxes_csv.exists():
        return empty
    raw = read_nih_boxes(boxes_csv)
    truth = boxes_in_cache_frame(raw[raw["finding"].isin(findings)], index, image_size, resize)
    return truth if len(truth) else empty


def boxed_findings(index: pd.DataFrame) -> list[str]:
    from xraypipe.datasets.nih import BOXED_FINDINGS

    return [f for f in BOXED_FINDINGS if f in index.columns]


# ------------------------------------------------------------------------------------------------ box split
def box_split(truth: pd.DataFrame, index: pd.DataFrame, *, min_train_images: int = 50, train_fraction: float = 0.5,
              seed: int = 0, max_images: int | None = None) -> tuple[pd.DataFrame, dict]:
    """Assign every ground-truth box (``boxes_in_cache_frame`` rows) a ``role``: detector_train, scoring or
    not_scored (scoring images beyond ``max_images``, in cache order). Patient-wise throughout.

    The train/val splits' boxed images train the detector and the test split's are scored, unless the train/val
    splits hold fewer than ``min_train_images`` boxed images: then the boxed test patients are shuffled (``seed``)
    and the first ``train_fraction`` of them (at least one, and at least one left for scoring when there are two)
    join the detector's training boxes. Returns (boxes with ``patient_id`` and ``role``, counts).
    """
    cols = ["image_id", "finding", "x", "y", "w", "h", "split", "cache_row"]
    missing = [c for c in cols if c not in truth.columns]
    if missing:
        raise ValueError(f"box_split: the boxes lack column(s) {missing}")
    boxes = truth[cols].merge(index[["image_id", "patient_id"]].astype({"patient_id": str}), on="image_id",
                              how="left")
    if boxes["patient_id"].isna().any():
        raise ValueError(f"box_split: image {boxes.loc[boxes['patient_id'].isna(), 'image_id'].iloc[0]!r} has a box "
                         "but no row in the cache index")
    boxes = boxes.sort_values(["split", "cache_row", "finding", "x", "y"], kind="stable").reset_index(drop=True)
    in_training_splits = boxes["split"] != "test"
    n_train_images = boxes.loc[in_training_splits, "image_id"].nunique()
    role = np.where(in_training_splits, "detector_train", "scoring").astype(object)
    fallback = n_train_images < int(min_train_images)
    moved: list[str] = []
    if fallback:
        patients = sorted(boxes.loc[~in_training_splits, "patient_id"].unique())
        if patients:
            order = np.random.default_rng(int(seed)).permutation(len(patients))
            k = int(round(float(train_fraction) * len(patients)))
            k = min(max(k, 1), len(patients) - 1) if len(patients) > 1 else 0
            moved = [patients[i] for i in order[:k]]
            role[(~in_training_splits & boxes["patient_id"].isin(moved)).to_numpy()] = "detector_train"
    boxes["role"] = role
    if max_images is not None:
        scoring = boxes[boxes["role"] == "scoring"]
        kept = scoring.sort_values("cache_row", kind="stable")["cache_row"].drop_duplicates().tolist()[: int(max_images)]
        boxes.loc[(boxes["role"] == "scoring") & ~boxes["cache_row"].isin(kept), "role"] = "not_scored"
    counts = {"source": (f"test-split patients (train/val splits had only {n_train_images} boxed images < "
                         f"min_train_images {int(min_train_images)})") if fallback else "train/val splits",
              "fallback": bool(fallback), "moved_test_patients": len(moved)}
    for name in ROLES:
        part = boxes[boxes["role"] == name]
        counts[name] = {"boxes": int(len(part)), "images": int(part["image_id"].nunique()),
                        "patients": int(part["patient_id"].nunique()),
                        "per_finding": {f: {"boxes": int(len(g)), "images": int(g["image_id"].nunique()),
                                            "patients": int(g["patient_id"].nunique())}
                                        for f, g in part.groupby("finding")}}
    counts["detector_train"]["signature"] = split_signature(boxes[boxes["role"] == "detector_train"])
    return boxes, counts


def split_signature(boxes: pd.DataFrame) -> str:
    """A short hash of the sorted (image, finding) pairs of a box set (detect checks the model was trained on the
    split it recomputes)."""
    keys = sorted(f"{a}|{b}" for a, b in zip(boxes["image_id"], boxes["finding"]))
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]


def _split_kwargs(cfg: dict) -> dict:
    split = {**SPLIT_DEFAULTS, **(cfg.get("box_split") or {})}
    return {"min_train_images": int(split["min_train_images"]), "train_fraction": float(split["train_fraction"]),
            "seed": int(split["seed"])}


def scoring_split(boxes_csv, index: pd.DataFrame, image_size: int, resize: str, findings, cfg: dict,
                  cap: bool = True):
    """(all boxes with roles, counts) for the localization config ``cfg`` (evaluation.localization): the split the
    localize, train_detector and detect stages share. ``cap``: apply ``cfg['max_images']`` to the scoring images
    (train_detector does not: the cap changes only what is scored)."""
    truth = load_boxes(boxes_csv, index, image_size, resize, findings)
    return box_split(truth, index, max_images=int(cfg["max_images"]) if cap else None, **_split_kwargs(cfg))


# ------------------------------------------------------------------------------------------------ scoring
CRITERIA = {"iobb": "", "iou": "_iou"}  # overlap criterion -> suffix of its hit/fp columns and summary metrics


def score_boxes(truth: pd.DataFrame, detected: pd.DataFrame, thresholds=IOBB_THRESHOLDS) -> pd.DataFrame:
    """Per ground-truth box: the best IoBB and IoU over the detected boxes of the same image and finding.

    ``truth``: image_id, finding, x, y, w, h (and any other columns, kept: patient_id for the bootstrap);
    ``detected``: the same columns (several boxes per pair allowed). Adds ``best_iobb``, ``best_iou``, ``hit_<T>``
    (best IoBB > T) and ``hit_iou_<T>`` (best IoU > T) columns.
    """
    det = {k: g[["x", "y", "w", "h"]].to_numpy(float) for k, g in detected.groupby(["image_id", "finding"])}
    best_iobb, best_iou = [], []
    for row in truth.itertuples(index=False):
        gt = (row.x, row.y, row.w, row.h)
        boxes = det.get((row.image_id, row.finding), np.zeros((0, 4)))
        best_iobb.append(max((iobb(b, gt) for b in boxes), default=0.0))
        best_iou.append(max((iou(b, gt) for b in boxes), default=0.0))
    out = truth.copy()
    out["best_iobb"] = best_iobb
    out["best_iou"] = best_iou
    for criterion, suffix in CRITERIA.items():
        for t in thresholds:
            out[f"hit{suffix}_{t:g}"] = out[f"best_{criterion}"] > t
    return out


def false_positives(truth: pd.DataFrame, detected: pd.DataFrame, thresholds=IOBB_THRESHOLDS) -> pd.DataFrame:
    """Per (image, finding) with a ground-truth box or a detected box: the number of detected boxes whose best
    IoBB (``fp_<T>``) or IoU (``fp_iou_<T>``) against the ground-truth boxes of that finding in that image is
    <= T. A box of a finding the image has no ground-truth box of is a false positive at every T (a localizer
    conditioned on the classifier draws such boxes when the classifier is wrong). Columns image_id, finding,
    has_truth, n_detected, fp_<T>, fp_iou_<T>."""
    gts = {k: g[["x", "y", "w", "h"]].to_numpy(float) for k, g in truth.groupby(["image_id", "finding"])}
    dets = {k: g[["x", "y", "w", "h"]].to_numpy(float) for k, g in detected.groupby(["image_id", "finding"])}
    columns = ["image_id", "finding", "has_truth", "n_detected"] + [
        f"fp{suffix}_{t:g}" for suffix in CRITERIA.values() for t in thresholds]
    rows = []
    for key in sorted(set(gts) | set(dets)):
        gt, boxes = gts.get(key, np.zeros((0, 4))), dets.get(key, np.zeros((0, 4)))
        row = {"image_id": key[0], "finding": key[1], "has_truth": bool(len(gt)), "n_detected": int(len(boxes))}
        for criterion, suffix in CRITERIA.items():
            overlap = iobb if criterion == "iobb" else iou
            best = np.array([max((overlap(b, g) for g in gt), default=0.0) for b in boxes])
            for t in thresholds:
                row[f"fp{suffix}_{t:g}"] = int((best <= t).sum()) if len(boxes) else 0
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def hit_fraction_ci(hits, groups, *, n_boot: int, level: float, seed: int, weights=None) -> tuple[float, float]:
    """Percentile bootstrap CI of a hit fraction, resampling ``groups`` (patients) with the AUROC's bootstrap
    (``xraypipe.metrics.bootstrap_weights``): boxes of one patient are correlated, like images. ``weights``: those
    multiplicities already drawn for these boxes (one draw serves every T and criterion of a finding)."""
    from xraypipe.metrics import bootstrap_weights, percentile_interval

    hits = np.asarray(hits, dtype=float)
    if not n_boot or not len(hits):
        return float("nan"), float("nan")
    if weights is None:
        weights = bootstrap_weights(len(hits), n_boot, seed, groups)
    return percentile_interval(weights @ hits / weights.sum(axis=1), (1 - level) / 2)


def bootstrap_settings(evaluation: dict) -> dict:
    """``summarise``'s bootstrap keywords from the config's ``evaluation`` section (the AUROC's settings)."""
    return {"n_boot": int(evaluation["bootstrap_samples"]), "level": float(evaluation["ci_level"]),
            "seed": int(evaluation["seed"]), "unit": str(evaluation["bootstrap_unit"])}


def summarise(scored: pd.DataFrame, fps: pd.DataFrame, findings, thresholds=IOBB_THRESHOLDS, *, n_boot: int = 0,
              level: float = 0.95, seed: int = 0, unit: str = "patient") -> pd.DataFrame:
    """Wang et al.'s layout, for IoBB and for IoU: rows (T, metric), one column per finding (NaN where the finding
    has no box).

    Per T: ``acc`` (fraction of ground-truth boxes with IoBB > T), ``acc_ci_low``/``acc_ci_high`` (its
    ``level`` bootstrap CI, ``n_boot`` resamples; ``unit`` patient: clustered by the ``patient_id`` column of
    ``scored``, else, or without that column, each box is resampled alone), ``afp`` (false-positive boxes of the finding, from every scored image, per
    scored image with a ground-truth box of it: Wang et al.'s denominator, the same for oracle-class and
    classifier-conditioned localizers), and the same four with IoU (``acc_iou``, ``acc_iou_ci_low``,
    ``acc_iou_ci_high``, ``afp_iou``). Then ``mean_iobb``/``mean_iou`` of the best match per box, ``n_boxes`` and
    ``n_images`` (the AFP denominator)."""
    rows = []
    by_finding = {f: scored[scored["finding"] == f] for f in findings}
    fp_by_finding = {f: fps[fps["finding"] == f] for f in findings}
    n_images = {f: int(part["image_id"].nunique()) for f, part in by_finding.items()}
    weights = {}  # one bootstrap draw per finding, shared by every T and criterion
    if n_boot:
        from xraypipe.metrics import bootstrap_weights

        for f, part in by_finding.items():
            if len(part):
                groups = part["patient_id"].astype(str).to_numpy() if unit == "patient" and \
                    "patient_id" in part.columns else None
                weights[f] = bootstrap_weights(len(part), n_boot, seed, groups)
    for suffix in CRITERIA.values():
        for t in thresholds:
            acc = {"T": t, "metric": f"acc{suffix}"}
            low = {"T": t, "metric": f"acc{suffix}_ci_low"}
            high = {"T": t, "metric": f"acc{suffix}_ci_high"}
            afp = {"T": t, "metric": f"afp{suffix}"}
            for f in findings:
                part = by_finding[f]
                if not len(part):
                    acc[f] = low[f] = high[f] = afp[f] = np.nan
                    continue
                hits = part[f"hit{suffix}_{t:g}"].to_numpy(bool)
                acc[f] = float(hits.mean())
                low[f], high[f] = hit_fraction_ci(hits, None, n_boot=n_boot, level=level, seed=seed,
                                                  weights=weights.get(f))
                afp[f] = float(fp_by_finding[f][f"fp{suffix}_{t:g}"].sum()) / n_images[f]
            rows += [acc, low, high, afp]
    for metric, col in (("mean_iobb", "best_iobb"), ("mean_iou", "best_iou")):
        row = {"T": np.nan, "metric": metric}
        for f in findings:
            part = by_finding[f]
            row[f] = float(part[col].mean()) if len(part) else np.nan
        rows.append(row)
    rows.append({"T": np.nan, "metric": "n_boxes", **{f: int(len(by_finding[f])) for f in findings}})
    rows.append({"T": np.nan, "metric": "n_images", **n_images})
    return pd.DataFrame(rows, columns=["T", "metric", *findings])


# ------------------------------------------------------------------------------------------------ conditioning
def classifier_positive(predictions: pd.DataFrame, thresholds: dict, findings) -> pd.DataFrame:
    """Long table image_id, finding, probability, threshold, positive (probability >= threshold) for ``findings``.

    A null threshold (the validation split had no positives or no negatives of that finding, so no operating point
    could be chosen) makes no positive call: that finding is never localized by a conditioned localizer."""
    parts = []
    for f in findings:
        if f"prob_{f}" not in predictions.columns:
            raise ValueError(f"predictions lack column prob_{f} (the classifier was not trained on {f})")
        if f not in thresholds:
            raise ValueError(f"thresholds.json has no threshold for {f}")
        prob = predictions[f"prob_{f}"].astype(float)
        threshold = float("nan") if thresholds[f] is None else float(thresholds[f])
        parts.append(pd.DataFrame({"image_id": predictions["image_id"].astype(str), "finding": f,
                                   "probability": prob, "threshold": threshold,
                                   "positive": prob >= threshold}))  # NaN threshold: False
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["image_id", "finding", "probability", "threshold", "positive"])


def condition_on_classifier(detected: pd.DataFrame, positives: pd.DataFrame) -> pd.DataFrame:
    """Add ``classifier_positive`` to the detected boxes (False where the classifier has no prediction)."""
    merged = detected.merge(positives[["image_id", "finding", "positive"]], on=["image_id", "finding"], how="left")
    return merged.assign(classifier_positive=merged.pop("positive").fillna(False).astype(bool))


def read_classifier_positives(predictions_csv, thresholds_json, image_ids, findings) -> pd.DataFrame:
    """``classifier_positive`` for the given images from the predict stage's CSV and the evaluate stage's
    thresholds.json (thresholds chosen on validation); an image without a prediction is an error naming it."""
    import json

    predictions = pd.read_csv(predictions_csv, dtype={"image_id": str, "patient_id": str})
    wanted = pd.Index(pd.unique(pd.Series(list(image_ids), dtype=str)))
    missing = wanted.difference(predictions["image_id"])
    if len(missing):
        raise ValueError(f"{predictions_csv}: no prediction for scoring image {missing[0]!r}")
    threshold_file = json.loads(Path(thresholds_json).read_text())
    return classifier_positive(predictions[predictions["image_id"].isin(wanted)],
                               threshold_file.get("thresholds", {}), findings)
