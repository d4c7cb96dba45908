"""Weakly supervised localization: class heatmaps (Grad-CAM, CAM), heatmap -> boxes, and IoU/IoBB scoring.

- Heatmaps come from the maintained ``pytorch-grad-cam`` package (``grad-cam`` on PyPI): ``GradCAM`` for any
  convolutional model, and CAM (Zhou et al. 2016) for global-average-pool + linear heads as a small ``BaseCAM``
  subclass whose channel weights are the linear layer's row for the class (no gradients needed).
- Boxes: threshold the heatmap (a fraction of its maximum) and take the bounding boxes of the connected
  components (``scipy.ndimage``); or the NIH localization study's heuristic: of those boxes, the 5 closest in
  size to the finding's mean detector-training box, then the one with the highest mean heat; or Wang et al.'s
  rule: the map scaled to [0, 255], a box around every region above 60 (``wang60``) or 180 (``wang180``).
- Scores (Wang et al., CVPR 2017, "ChestX-ray8"): IoBB = area(detected ∩ ground truth) / area(detected);
  a ground-truth box is hit at T when some detected box of the same finding has IoBB > T; AFP = the average
  number of detected boxes per image that hit no ground-truth box of their finding.

Boxes are ``(x, y, w, h)`` in continuous pixel coordinates: pixel (row i, column j) covers [j, j+1) x [i, i+1).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from xraypipe.boxes import (IOBB_THRESHOLDS, boxed_findings, false_positives, heuristic_box_sizes, score_boxes,
                            scoring_split, summarise)

HEATMAP_METHODS = ("gradcam", "cam")
BOX_METHODS = ("threshold", "heuristic", "wang60", "wang180")  # wang<T>: Wang et al.'s rule at level T of 255
WANG_LEVELS = {"wang60": 60, "wang180": 180}


# ------------------------------------------------------------------------------------------------ geometry

# ------------------------------------------------------------------------------------------------ heatmaps
def cam_layers(model):
    """(feature layer, linear head or None) for CAM/Grad-CAM.

    torchvision ResNets: ``layer4`` and ``fc``. An ``nn.Sequential`` containing ``AdaptiveAvgPool2d``: the
    module just before the pooling, and the last ``Linear``. Otherwise: the last ``Conv2d`` and no head
    (Grad-CAM only).
    """
    import torch.nn as nn

    from xraypipe.model_layers import ResampledInput

    if isinstance(model, ResampledInput):  # input_size: the layers of the wrapped network
        return cam_layers(model.net)
    if hasattr(model, "layer4") and isinstance(getattr(model, "fc", None), nn.Linear):
        return model.layer4, model.fc
    if isinstance(model, nn.Sequential):
        modules = list(model)
        pools = [i for i, m in enumerate(modules) if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AvgPool2d))]
        linears = [m for m in modules if isinstance(m, nn.Linear)]
        if pools and linears and pools[-1] > 0:
            after = modules[pools[-1] + 1:]
            if all(isinstance(m, (nn.Flatten, nn.Dropout, nn.Linear, nn.Identity)) for m in after) and \
                    sum(isinstance(m, nn.Linear) for m in after) == 1:
                return modules[pools[-1] - 1], linears[-1]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__}: no convolutional layer to compute a class heatmap from")
    return convs[-1], None


def _cam_class():
    from pytorch_grad_cam.base_cam import BaseCAM

    class CAM(BaseCAM):
        """Class activation mapping (Zhou et al. 2016): sum_k w[c, k] A_k for a GAP + linear head."""

        def __init__(self, model, target_layers, linear):
            super().__init__(model, target_layers, uses_gradients=False)
            self.linear = linear

        def get_cam_weights(self, input_tensor, target_layer, targets, activations, grads):
            weight = self.linear.weight.detach().float().cpu().numpy()
            return np.stack([weight[t.category] for t in targets])

    return CAM


def heatmap_layer(model, layer: str = "auto", method: str = "gradcam"):
    """(layer module, linear head or None) that ``heatmaps`` explains: ``cam_layers`` for ``auto``, else the named
    module (Grad-CAM only: CAM's weights belong to the layer feeding the global pool)."""
    if layer in (None, "", "auto"):
        return cam_layers(model)
    if method == "cam":
        raise ValueError(f"localization layer {layer!r}: CAM uses the layer before the global pool; set layer: auto "
                         "or method: gradcam")
    from xraypipe.model_layers import ResampledInput

    inner = model.net if isinstance(model, ResampledInput) else model
    try:
        return inner.get_submodule(layer), None  # named as in the network itself (layer3, not net.layer3)
    except AttributeError:
        names = [n for n, m in inner.named_children()]
        raise ValueError(f"localization layer {layer!r}: {type(inner).__name__} has no such module (its top-level "
                         f"modules: {', '.join(names)})") from None


def heatmap_resolution(model, layer, image: np.ndarray, normalization=None) -> list[int]:
    """[height, width] of ``layer``'s activations for one cached ``image`` (S x S uint8): the heatmap's true grid
    before it is upsampled to the image."""
    import torch

    from xraypipe.standardize import Normalization

    norm = Normalization.from_meta(normalization) if normalization is not None else Normalization("fixed", 0.5, 0.25)
    shape = []
    handle = layer.register_forward_hook(lambda module, inputs, output: shape.extend(output.shape[-2:]))
    try:
        with torch.no_grad():
            model.eval()(norm.apply(np.asarray(image)[None]).to(next(model.parameters()).device))
    finally:
        handle.remove()
    return [int(v) for v in shape[:2]]


def heatmaps(model, images: np.ndarray, classes, *, method: str = "gradcam", batch_size: int = 32,
             mean: float = 0.5, std: float = 0.25, device=None, normalization=None, layer: str = "auto") -> np.ndarray:
    """Class heatmaps in [0, 1] at the input resolution: one per (image, class) pair.

    ``images``: N x S x S uint8 (the cache's format); ``classes``: N class indices (which output to explain).
    Returns N x S x S float32; each map is min-max scaled by the library (0 = no evidence).
    ``normalization``: the model file's ``metadata['normalization']`` (any method of ``xraypipe.standardize``);
    without it, ``(u / 255 - mean) / std`` with the scalar ``mean``/``std``. ``layer``: ``heatmap_layer``'s.
    """
    from xraypipe.standardize import Normalization

    import torch
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if method not in HEATMAP_METHODS:
        raise ValueError(f"unknown heatmap method {method!r}; choose one of {', '.join(HEATMAP_METHODS)}")
    images = np.asarray(images)
    classes = [int(c) for c in classes]
    if images.ndim != 3 or len(images) != len(classes):
        raise ValueError(f"expected N x S x S images and N classes, got {images.shape} and {len(classes)}")
    model = model.eval()
    if device is not None:
        model = model.to(device)
    target, linear = heatmap_layer(model, layer, method)
    if method == "cam":
        if linear is None:
            raise ValueError(f"CAM needs a global-average-pool + linear head; {type(model).__name__} has none "
                             "(use method gradcam)")
        explainer = _cam_class()(model, [target], linear)
    else:
        explainer = GradCAM(model=model, target_layers=[target])
    out = np.zeros(images.shape, dtype=np.float32)
    if len(images) == 0:
        return out
    norm = Normalization.from_meta(normalization) if normalization is not None else Normalization("fixed", mean, std)
    dev = next(model.parameters()).device
    try:
        for start in range(0, len(images), batch_size):
            x = norm.apply(images[start:start + batch_size]).to(dev)
            targets = [ClassifierOutputTarget(c) for c in classes[start:start + batch_size]]
            out[start:start + len(x)] = explainer(input_tensor=x, targets=targets)
    finally:
        explainer.activations_and_grads.release()
    return np.nan_to_num(out, nan=0.0)


# ------------------------------------------------------------------------------------------------ boxes
def threshold_boxes(heat: np.ndarray, threshold: float = 0.5, max_boxes: int | None = 3,
                    min_pixels: int = 1) -> list[dict]:
    """Boxes of the connected components of ``heat >= threshold * max(heat)`` (8-connectivity), by peak heat.

    Each box is a dict with x, y, w, h, ``peak`` and ``mean_heat`` (inside the box).
    """
    heat = np.asarray(heat, dtype=np.float32)
    top = float(heat.max()) if heat.size else 0.0
    if top <= 0:
        return []
    return _region_boxes(heat, heat >= threshold * top, max_boxes, min_pixels)


def wang_boxes(heat: np.ndarray, level: int) -> list[dict]:
    """Wang et al.'s (CVPR 2017) box rule: the heatmap scaled to [0, 255] (its minimum to 0, its maximum to 255)
    and a box around every connected region above ``level`` (the paper: 60 and 180). Every box is kept, so each
    one that hits no ground truth counts for AFP. The boxes' ``peak``/``mean_heat`` are in the heatmap's units."""
    heat = np.asarray(heat, dtype=np.float32)
    if not heat.size:
        return []
    low, high = float(heat.min()), float(heat.max())
    if high <= low:
        return []
    scaled = (heat - low) / (high - low) * 255.0
    return _region_boxes(heat, scaled > level, None, 1)


def _region_boxes(heat: np.ndarray, mask: np.ndarray, max_boxes: int | None, min_pixels: int) -> list[dict]:
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    boxes = []
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        component = labels[sl] == k
        if component.sum() < min_pixels:
            continue
        rows, cols = sl
        boxes.append(_box_dict(heat, cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start,
                               peak=float(heat[sl][component].max())))
    boxes.sort(key=lambda b: -b["peak"])
    return boxes[:max_boxes] if max_boxes else boxes


def _box_dict(heat, x, y, w, h, peak=None) -> dict:
    x0, y0 = int(max(0, math.floor(x))), int(max(0, math.floor(y)))
    x1 = int(min(heat.shape[1], math.ceil(x + w)))
    y1 = int(min(heat.shape[0], math.ceil(y + h)))
    inside = heat[y0:y1, x0:x1]
    mean = float(inside.mean()) if inside.size else 0.0
    return {"x": float(x), "y": float(y), "w": float(w), "h": float(h),
            "peak": float(inside.max()) if peak is None and inside.size else float(peak or 0.0), "mean_heat": mean}


def heuristic_box(heat: np.ndarray, mean_size: tuple[float, float], threshold: float = 0.5,
                  max_area: float = 1.0, keep: int = 5) -> list[dict]:
    """The NIH localization study's heuristic, as it describes it: one box per heatmap.

    The candidates are the boxes around the connected regions of the heatmap above ``threshold`` (a fraction of
    its maximum: the study's threshold on the map scaled to 0-255), without those covering more than
    ``max_area`` of the map. Of the ``keep`` candidates closest in size to the finding's mean box (``mean_size``
    = (w, h); distance |log w/w̄| + |log h/h̄|), the one with the highest mean heat inside is returned.
    """
    heat = np.asarray(heat, dtype=np.float32)
    mw, mh = (max(1e-6, float(v)) for v in mean_size)
    limit = max_area * heat.size
    candidates = [b for b in threshold_boxes(heat, threshold, max_boxes=None) if b["w"] * b["h"] <= limit]
    if not candidates:
        return []
    distance = [abs(math.log(max(c["w"], 1e-6) / mw)) + abs(math.log(max(c["h"], 1e-6) / mh)) for c in candidates]
    closest = [candidates[i] for i in np.argsort(distance, kind="stable")[:keep]]
    return [max(closest, key=lambda c: c["mean_heat"])]


# ------------------------------------------------------------------------------------------------ scoring

# ------------------------------------------------------------------------------------------------ the stage

ORACLE_SUFFIX = " (oracle class)"  # localizer-name suffix of the rows explaining the ground-truth finding


def localizer_names(method: str) -> list[str]:
    """The localize stage's localizers: per box method, classifier-conditioned (the main rows) and oracle class."""
    return [f"{method}/{name}{suffix}" for name in BOX_METHODS for suffix in ("", ORACLE_SUFFIX)]


def boxes_for_pair(heat: np.ndarray, box_method: str, cfg: dict, mean_size) -> list[dict]:
    """One heatmap's boxes by one box method (``cfg``: evaluation.localization)."""
    if box_method in WANG_LEVELS:
        return wang_boxes(heat, WANG_LEVELS[box_method])
    if box_method == "heuristic":
        h = cfg["heuristic"]
        return heuristic_box(heat, mean_size, threshold=float(h["threshold"]), max_area=float(h["max_box_area"]),
                             keep=int(h["candidates"]))
    return threshold_boxes(heat, float(cfg["heat_threshold"]), int(cfg["max_boxes"]))


def heatmap_pairs(gt_pairs: pd.DataFrame, images: pd.DataFrame, positives: pd.DataFrame) -> pd.DataFrame:
    """The (image, finding) pairs to explain: the ground-truth pairs (``gt_pairs``: image_id, cache_row, finding)
    and, on the scoring ``images`` (image_id, cache_row), every finding the classifier calls positive
    (``positives``: ``xraypipe.boxes.classifier_positive``'s table). Flags ``ground_truth_pair`` and
    ``classifier_positive``; sorted by cache row and finding."""
    keys = ["image_id", "cache_row", "finding"]
    called = images[["image_id", "cache_row"]].merge(
        positives.loc[positives["positive"].astype(bool), ["image_id", "finding"]], on="image_id")[keys]
    pairs = pd.concat([gt_pairs[keys], called]).drop_duplicates().reset_index(drop=True)
    pairs["ground_truth_pair"] = pairs.set_index(keys).index.isin(gt_pairs.set_index(keys).index)
    pairs["classifier_positive"] = pairs.set_index(keys).index.isin(called.set_index(keys).index)
    return pairs.sort_values(["cache_row", "finding"], kind="stable").reset_index(drop=True)


def heatmap_description(model, layer: str, method: str, cached, meta: dict) -> dict:
    """info.json's ``heatmap``: the explained layer's name, its map size on the first cached image and the image
    size (what the report says of the heat maps' resolution)."""
    target, _ = heatmap_layer(model, layer, method)
    layer_name = next(name for name, module in model.named_modules() if module is target)
    size = heatmap_resolution(model, target, cached[0], meta.get("normalization")) if len(cached) else None
    return {"layer": layer_name or type(model).__name__, "map_size": "x".join(map(str, size)) if size else None,
            "image_size": int(meta["image_size"])}


def explanation_pairs(predictions: pd.DataFrame, index: pd.DataFrame, pathologies, thresholds: dict,
                      per_label: int) -> pd.DataFrame:
    """For a dataset without ground-truth boxes: per label, the ``per_label`` test images the classifier scores
    highest, and as many of the highest-scoring images that are truly negative (so the figure shows what the
    network looks at when it is right and when it raises a false alarm). Columns image_id, cache_row, finding,
    score, label (1 / 0; NaN when unlabelled), called (score >= the validation-chosen threshold, when known)."""
    test = index[index["split"] == "test"][["image_id", "cache_row"]].astype({"image_id": str})
    frame = predictions.astype({"image_id": str}).merge(test, on="image_id", how="inner", validate="one_to_one")
    parts = []
    for finding in pathologies:
        scored = frame.assign(finding=finding, score=frame[f"prob_{finding}"], label=frame[f"label_{finding}"])
        scored = scored.sort_values(["score", "image_id"], ascending=[False, True], kind="stable")
        top = scored.head(per_label)
        negatives = scored[(scored["label"] == 0) & ~scored["image_id"].isin(top["image_id"])].head(per_label)
        parts.append(pd.concat([top, negatives]))
    columns = ["image_id", "cache_row", "finding", "score", "label"]
    pairs = pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)
    threshold = pairs["finding"].map(lambda f: thresholds.get(f, np.nan)).astype(float)
    pairs["called"] = np.where(threshold.isna(), np.nan, (pairs["score"] >= threshold).astype(float))
    return pairs.reset_index(drop=True)


def _write_empty_tables(out_dir) -> None:
    from xraypipe.atomic import write_csv

    # the columns the boxed path writes (the IoBB table reads summary.csv of every dataset x variant)
    for name, columns in (("detected.csv", ["box_method", "image_id", "cache_row", "finding", "ground_truth_pair",
                                            "classifier_positive", "rank", "x", "y", "w", "h", "peak", "mean_heat"]),
                          ("scored.csv", ["image_id", "finding", "x", "y", "w", "h", "best_iobb", "best_iou",
                                          "localizer", "box_method"]),
                          ("summary.csv", ["localizer", "T", "metric"])):
        write_csv(Path(out_dir) / name, pd.DataFrame(columns=columns))


def _without_heatmaps(out_dir, reason: str, boxes: bool) -> dict:
    """localize() for a model that cannot give heat maps: empty outputs and ``info.json`` saying why."""
    from xraypipe.atomic import atomic_path, write_json

    _write_empty_tables(out_dir)
    with atomic_path(Path(out_dir) / "heatmaps.npz") as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, heatmaps=np.zeros((0, 1, 1), np.float16), image_id=np.zeros(0, str),
                                cache_row=np.zeros(0, int), finding=np.zeros(0, str))
    info = {"boxes": bool(boxes), "skipped": reason, "heatmap": None, "box_methods": [], "n_pairs": 0}
    write_json(Path(out_dir) / "info.json", info)
    print(reason, flush=True)
    return info


def _explain_without_boxes(model, meta, index, cached, predictions_csv, thresholds_json, cfg, out_dir, resize):
    """localize() for a dataset without boxes: ``heatmaps.npz`` of ``explanation_pairs`` (with their scores and
    labels), empty score tables, ``info.json`` saying so (``boxes: false``)."""
    from xraypipe.atomic import atomic_path, write_json

    pathologies = list(meta["pathologies"])
    thresholds = json.loads(Path(thresholds_json).read_text()).get("thresholds", {})
    predictions = pd.read_csv(predictions_csv, dtype={"image_id": str, "patient_id": str})
    pairs = explanation_pairs(predictions, index, pathologies, thresholds, int(cfg["overlays_per_finding"]))
    method, layer = cfg["method"], cfg["layer"]
    started = time.perf_counter()
    maps = heatmaps(model, cached[pairs["cache_row"].to_numpy(int)] if len(pairs) else np.zeros((0, 1, 1), np.uint8),
                    [pathologies.index(f) for f in pairs["finding"]], method=method,
                    normalization=meta.get("normalization"), layer=layer)
    seconds = time.perf_counter() - started
    heatmap = heatmap_description(model, layer, method, cached, meta)
    _write_empty_tables(out_dir)
    with atomic_path(Path(out_dir) / "heatmaps.npz") as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, heatmaps=maps.astype(np.float16), image_id=pairs["image_id"].to_numpy(str),
                                cache_row=pairs["cache_row"].to_numpy(int), finding=pairs["finding"].to_numpy(str),
                                score=pairs["score"].to_numpy(float), label=pairs["label"].to_numpy(float),
                                called=pairs["called"].to_numpy(float))
    info = {"boxes": False, "n_images": int(pairs["image_id"].nunique()), "n_pairs": int(len(pairs)),
            "explained": "per label: the highest-scoring test images and the highest-scoring true negatives",
            "method": method, "findings": pathologies, "image_size": meta["image_size"], "resize": resize,
            "heatmap": heatmap, "box_methods": []}
    write_json(Path(out_dir) / "info.json", info)
    print(f"no ground-truth boxes: {len(pairs)} heat maps to look at, nothing scored; wall time {seconds:.2f} s",
          flush=True)
    return info


def localize(*, model_path, cache_dir, boxes_csv, predictions_csv, thresholds_json, resize: str, cfg: dict,
             out_dir, threads: int = 1, bootstrap: dict | None = None) -> dict:
    """The localize stage for one dataset x variant: heatmaps on the scoring images, boxes by every box method from
    the same heatmaps, per-box scores and Wang et al.'s summary (IoBB and IoU, AFP, bootstrap CIs) per localizer.

    Two heatmap sets share one pass: the findings the classifier calls positive at its validation-chosen
    thresholds (``thresholds_json``, the evaluate stage's; ``predictions_csv``: the test split's predictions), which
    give the main rows ``<method>/<box method>`` (a ground-truth box of a finding the classifier misses is a miss,
    a box of a finding the image does not have is a false positive); and the ground-truth findings of each image,
    which give the ``... (oracle class)`` rows, the setting of Wang et al.'s table.

    The scoring images are ``xraypipe.detection.box_split``'s ``scoring`` role (the boxed test images, capped at
    ``cfg['max_images']``; on datasets whose training splits hold too few boxes, a patient-wise part of them), so
    the Grad-CAM boxes and the detector are scored on the same boxes.

    Writes into ``out_dir``: ``detected.csv`` (``box_method``, ``ground_truth_pair``, ``classifier_positive``
    columns), ``scored.csv`` (a ``localizer`` column), ``summary.csv`` (``localizer``, rows T x metric, columns
    findings; ``xraypipe.boxes.summarise``) and ``heatmaps.npz`` (the first ``cfg['overlays_per_finding']``
    ground-truth pairs per finding, for the figure). A dataset without a box file gets empty outputs.
    """
    import torch

    from xraypipe.atomic import atomic_path, write_csv, write_json
    from xraypipe.boxes import read_classifier_positives
    from xraypipe.datasets.nih import BOXED_FINDINGS
    from xraypipe.preprocess import load_cache_index, load_cache_split
    from xraypipe.inference import load_trained_model

    torch.set_num_threads(max(1, threads))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, meta = load_trained_model(model_path, ensemble=False)  # heatmaps of the best single checkpoint
    pathologies = list(meta["pathologies"])
    findings = [f for f in BOXED_FINDINGS if f in pathologies]
    thresholds = tuple(cfg.get("iobb_thresholds", IOBB_THRESHOLDS))
    box_method = cfg["box_method"]
    if box_method not in BOX_METHODS:
        raise ValueError(f"unknown box method {box_method!r}; choose one of {', '.join(BOX_METHODS)}")
    method = cfg["method"]
    layer = cfg["layer"]

    if not any(isinstance(m, torch.nn.Conv2d) for m in model.modules()):  # e.g. the MURA study's dense baseline
        return _without_heatmaps(out_dir, f"{meta['model']} has no convolutional layer: no {method} heat map",
                                 boxes=boxes_csv is not None)
    index = load_cache_index(cache_dir)
    if boxes_csv is None:  # no ground-truth boxes (MURA, CheXpert, Kermany): heat maps to look at, nothing scored
        return _explain_without_boxes(model, meta, index, load_cache_split(cache_dir, "test"), predictions_csv,
                                      thresholds_json, cfg, out_dir, resize)
    # the split over all the dataset's boxed findings, exactly as train_detector/detect compute it
    boxes, counts = scoring_split(boxes_csv, index, meta["image_size"], resize, boxed_findings(index), cfg)
    truth = boxes[boxes["finding"].isin(findings)]
    # the heuristic's mean box size: the detector-training boxes, never the scored ones (heuristic_box_sizes)
    train_boxes = truth[truth["role"] == "detector_train"]
    test_boxes = truth[truth["role"] == "scoring"].sort_values(["cache_row", "finding"]).reset_index(drop=True)
    images = test_boxes[["image_id", "cache_row"]].drop_duplicates().reset_index(drop=True)
    gt_pairs = test_boxes[["image_id", "cache_row", "finding"]].drop_duplicates()
    positives = read_classifier_positives(predictions_csv, thresholds_json, images["image_id"], findings) \
        if len(images) else pd.DataFrame(columns=["image_id", "finding", "positive"])
    pairs = heatmap_pairs(gt_pairs, images, positives)
    sizes, size_sources = heuristic_box_sizes(train_boxes, findings, meta["image_size"])

    cached = load_cache_split(cache_dir, "test")
    started = time.perf_counter()
    maps = heatmaps(model, cached[pairs["cache_row"].to_numpy(int)] if len(pairs) else np.zeros((0, 1, 1), np.uint8),
                    [pathologies.index(f) for f in pairs["finding"]], method=method,
                    normalization=meta.get("normalization"), layer=layer)
    heatmap = heatmap_description(model, layer, method, cached, meta)
    seconds = {"heatmaps": time.perf_counter() - started}  # the wall time of each localizer's own part
    detected_rows = []
    for name in BOX_METHODS:
        started = time.perf_counter()
        for k, pair in enumerate(pairs.itertuples(index=False)):
            for rank, b in enumerate(boxes_for_pair(maps[k], name, cfg, sizes[pair.finding])):
                detected_rows.append({"box_method": name, "image_id": pair.image_id, "cache_row": pair.cache_row,
                                      "finding": pair.finding, "ground_truth_pair": pair.ground_truth_pair,
                                      "classifier_positive": pair.classifier_positive, "rank": rank, **b})
        seconds[name] = time.perf_counter() - started
    detected = pd.DataFrame(detected_rows, columns=["box_method", "image_id", "cache_row", "finding",
                                                    "ground_truth_pair", "classifier_positive", "rank", "x", "y",
                                                    "w", "h", "peak", "mean_heat"])
    scored_parts, summaries = [], []
    gt = test_boxes[["image_id", "finding", "x", "y", "w", "h", "split", "cache_row", "patient_id"]]
    for name in BOX_METHODS:
        for suffix, column in (("", "classifier_positive"), (ORACLE_SUFFIX, "ground_truth_pair")):
            subset = detected[(detected["box_method"] == name) & detected[column].astype(bool)]
            localizer = f"{method}/{name}{suffix}"
            scored = score_boxes(gt, subset, thresholds)
            scored_parts.append(scored.assign(localizer=localizer, box_method=name))
            summaries.append(summarise(scored, false_positives(gt, subset, thresholds), findings, thresholds,
                                       **(bootstrap or {})).assign(localizer=localizer))
    scored = pd.concat(scored_parts, ignore_index=True)
    summary = pd.concat(summaries, ignore_index=True)
    summary = summary[["localizer"] + [c for c in summary.columns if c != "localizer"]]

    per_finding = int(cfg["overlays_per_finding"])
    chosen = pairs[pairs["ground_truth_pair"]].groupby("finding", sort=False).head(per_finding).index.to_numpy()
    write_csv(out_dir / "detected.csv", detected)
    write_csv(out_dir / "scored.csv", scored)
    write_csv(out_dir / "summary.csv", summary)
    with atomic_path(out_dir / "heatmaps.npz") as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, heatmaps=maps[chosen].astype(np.float16),
                                image_id=pairs["image_id"].to_numpy(str)[chosen],
                                cache_row=pairs["cache_row"].to_numpy(int)[chosen],
                                finding=pairs["finding"].to_numpy(str)[chosen])
    gt_called = pairs.loc[pairs["ground_truth_pair"], "classifier_positive"]
    info = {"n_images": int(len(images)), "n_boxes": int(len(test_boxes)), "n_pairs": int(len(pairs)),
            "n_ground_truth_pairs": int(len(gt_called)),
            "n_ground_truth_pairs_predicted_positive": int(gt_called.sum()),
            "n_predicted_positive_pairs": int(pairs["classifier_positive"].sum()),
            "method": method, "box_method": box_method, "box_methods": list(BOX_METHODS),
            "localizers": localizer_names(method),
            "findings": findings, "image_size": meta["image_size"], "resize": resize, "box_split": counts,
            "bootstrap": bootstrap or {}, "heatmap": heatmap,
            "heuristic_mean_box_size": {f: {"w": sizes[f][0], "h": sizes[f][1], "from": size_sources[f]}
                                        for f in findings}}
    write_json(out_dir / "info.json", info)  # no wall times in it: the results stay byte-identical between runs
    print("wall time: " + ", ".join(f"{k} {v:.2f} s" for k, v in seconds.items()), flush=True)
    return {k: v for k, v in info.items() if k != "box_split"}
