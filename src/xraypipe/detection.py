"""A supervised localizer next to the weakly supervised Grad-CAM boxes: torchvision Mask R-CNN / Faster R-CNN
trained on the NIH ground-truth boxes (the NIH localization study's detection variant).

- Model: ``torchvision.models.detection.MaskRCNN`` (default) or ``FasterRCNN`` on a ResNet + FPN backbone
  (``BackboneWithFPN``), one class per boxed finding + background. Sized for CPU training on the cache's small
  images: ``min_size = max_size = `` the cache size (no resizing), anchors scaled to the image size, a narrow
  FPN (``fpn_channels``), short proposal lists and small ROI samples. NIH has boxes but no outlines, so the
  masks are box-shaped (as the NIH localization study did). Gray cache images are replicated to 3 channels.
- Weights: ``null`` (default, random init, BatchNorm trained); ``backbone_weights`` = a torchvision ResNet
  weights name (``IMAGENET1K_V1``) or a local ``.pt``; ``weights`` = a whole-detector state dict (local ``.pt``
  or a torchvision detection weights name such as ``COCO_V1`` for the resnet50 detectors); layers whose shapes
  differ (the class heads) keep their fresh initialisation. Offline, names fail with
  ``xraypipe.models.load_weights``'s instructions.
- The box split (``box_split``): the detector trains on the boxed images of the train/val splits and every
  localizer is scored on the boxed test images. When the training splits hold fewer than
  ``box_split.min_train_images`` boxed images (the real NIH release: all 880 boxed images are in the official
  test list), the boxed *test patients* are split patient-wise (seeded) into detector-training and scoring
  parts, and the Grad-CAM boxes are scored on the same scoring part.
- Inference (``detect``): up to ``max_per_finding`` boxes per finding with score >= ``score_threshold``, kept only
  for the findings the classifier predicts positive at its validation-chosen thresholds (thresholds.json);
  scored with ``xraypipe.boxes``' ``score_boxes`` / ``false_positives`` / ``summarise`` (as the Grad-CAM boxes are),
  both
  conditioned and unconditioned.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from xraypipe.boxes import boxed_findings, scoring_split

DETECTORS = ("maskrcnn", "fasterrcnn")
BACKBONES = {"resnet18": [64, 128, 256, 512], "resnet34": [64, 128, 256, 512],
             "resnet50": [256, 512, 1024, 2048], "resnet101": [256, 512, 1024, 2048]}
IMAGE_MEAN = [0.485, 0.456, 0.406]  # ImageNet statistics (gray replicated to 3 channels)
IMAGE_STD = [0.229, 0.224, 0.225]
DETECTOR_DEFAULTS = {"architecture": "maskrcnn", "backbone": "resnet18", "weights": None, "backbone_weights": None,
                     "fpn_channels": 64, "epochs": 6, "batch_size": 8, "lr": 0.01, "weight_decay": 0.0001,
                     "seed": 0, "score_threshold": 0.05, "max_per_finding": 3}

# ------------------------------------------------------------------------------------------------ the model
def build_detector(findings, image_size: int, *, architecture: str = "maskrcnn", backbone: str = "resnet18",
                   fpn_channels: int = 64, weights: str | None = None, backbone_weights: str | None = None,
                   frozen_bn: bool | None = None):
    """A torchvision Mask R-CNN / Faster R-CNN with ``len(findings) + 1`` classes (0 = background).

    ``frozen_bn``: FrozenBatchNorm2d in the backbone (default: when pretrained weights are given, torchvision's
    convention), else trained BatchNorm2d (from scratch)."""
    import torch.nn as nn
    import torchvision
    from torchvision.models.detection import FasterRCNN, MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops import FrozenBatchNorm2d

    from xraypipe.models import load_weights

    if architecture not in DETECTORS:
        raise ValueError(f"unknown detector {architecture!r}; choose one of {', '.join(DETECTORS)}")
    if backbone not in BACKBONES:
        raise ValueError(f"unknown detector backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    num_classes = len(findings) + 1
    if frozen_bn is None:
        frozen_bn = bool(weights or backbone_weights)
    resnet = getattr(torchvision.models, backbone)(weights=None, norm_layer=FrozenBatchNorm2d if frozen_bn
                                                   else nn.BatchNorm2d)
    if backbone_weights:
        state = load_weights(backbone_weights, backbone)
        missing, unexpected = resnet.load_state_dict(state, strict=False)
        if [k for k in missing if not k.startswith("fc.")] or [k for k in unexpected if not k.startswith("fc.")]:
            raise ValueError(f"backbone_weights {backbone_weights!r} do not fit a {backbone}: missing "
                             f"{missing[:3]}, unexpected {unexpected[:3]}")
    body = BackboneWithFPN(resnet, {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"}, BACKBONES[backbone],
                           fpn_channels)
    base = image_size / 8.0  # anchors from 1/16 to the whole image, one size per FPN level
    anchors = AnchorGenerator(sizes=tuple((base * k,) for k in (0.5, 1, 2, 4, 8)),
                              aspect_ratios=((0.5, 1.0, 2.0),) * 5)
    representation = max(256, 4 * fpn_channels)
    common = dict(min_size=image_size, max_size=image_size, image_mean=IMAGE_MEAN, image_std=IMAGE_STD,
                  rpn_anchor_generator=anchors, num_classes=None,
                  box_head=TwoMLPHead(fpn_channels * 7 * 7, representation),
                  box_predictor=FastRCNNPredictor(representation, num_classes),
                  rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=150, rpn_pre_nms_top_n_test=150,
                  rpn_post_nms_top_n_test=75, rpn_batch_size_per_image=64, box_batch_size_per_image=64,
                  box_score_thresh=0.0, box_detections_per_img=100)
    if architecture == "maskrcnn":
        model = MaskRCNN(body, mask_head=MaskRCNNHeads(fpn_channels, (fpn_channels,) * 2, 1),
                         mask_predictor=MaskRCNNPredictor(fpn_channels, fpn_channels, num_classes), **common)
    else:
        model = FasterRCNN(body, **common)
    if weights:
        state = load_weights(weights, f"{architecture}_{backbone}_fpn")
        own = model.state_dict()
        fitting = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
        if len(fitting) < len(own) // 2:
            raise ValueError(f"detector weights {weights!r}: only {len(fitting)} of {len(own)} tensors fit a "
                             f"{architecture} on {backbone} with fpn_channels {fpn_channels}")
        model.load_state_dict(fitting, strict=False)
    return model


def boxes_to_masks(boxes_xywh, size: int) -> np.ndarray:
    """Box-shaped binary masks (N x size x size uint8): the pixels whose centre lies inside the box, and at
    least the pixel holding the box centre (so a sub-pixel box still has a mask)."""
    boxes = np.asarray(boxes_xywh, dtype=float).reshape(-1, 4)
    masks = np.zeros((len(boxes), size, size), dtype=np.uint8)
    centres = np.arange(size) + 0.5
    for k, (x, y, w, h) in enumerate(boxes):
        cols = (centres >= x) & (centres <= x + w)
        rows = (centres >= y) & (centres <= y + h)
        masks[k] = rows[:, None] & cols[None, :]
        if not masks[k].any():
            masks[k, min(size - 1, int(y + h / 2)), min(size - 1, int(x + w / 2))] = 1
    return masks


def _xyxy(boxes_xywh, size: int) -> np.ndarray:
    """xywh -> xyxy clipped to the image, at least one pixel wide/high (torchvision rejects empty boxes)."""
    b = np.asarray(boxes_xywh, dtype=np.float32).reshape(-1, 4)
    x0, y0 = np.clip(b[:, 0], 0, size - 1), np.clip(b[:, 1], 0, size - 1)
    x1 = np.clip(np.maximum(b[:, 0] + b[:, 2], x0 + 1), 0, size)
    y1 = np.clip(np.maximum(b[:, 1] + b[:, 3], y0 + 1), 0, size)
    return np.stack([x0, y0, x1, y1], axis=1)


def targets_for(boxes: pd.DataFrame, findings, size: int, with_masks: bool) -> dict:
    """torchvision's target dict for one image's boxes (x, y, w, h in the cache frame; finding)."""
    import torch

    target = {"boxes": torch.from_numpy(_xyxy(boxes[["x", "y", "w", "h"]].to_numpy(float), size)),
              "labels": torch.tensor([list(findings).index(f) + 1 for f in boxes["finding"]], dtype=torch.int64)}
    if with_masks:
        target["masks"] = torch.from_numpy(boxes_to_masks(boxes[["x", "y", "w", "h"]].to_numpy(float), size))
    return target


def to_input(image):
    """One S x S uint8 cache image -> a 3 x S x S float tensor in [0, 1] (gray replicated)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(image)).float().div_(255.0).unsqueeze(0).expand(3, -1, -1)


# ------------------------------------------------------------------------------------------------ box split

# ------------------------------------------------------------------------------------------------ training
def _images(cache_dir, rows: pd.DataFrame) -> np.ndarray:
    """The cache images of (split, cache_row) pairs, in the given order."""
    from xraypipe.preprocess import load_cache_split

    out = None
    for split, group in rows.groupby("split", sort=False):
        array = load_cache_split(cache_dir, split)
        if out is None:
            out = np.zeros((len(rows),) + array.shape[1:], dtype=np.uint8)
        positions = np.flatnonzero((rows["split"] == split).to_numpy())
        out[positions] = array[group["cache_row"].to_numpy(int)]
    return out if out is not None else np.zeros((0, 1, 1), np.uint8)


def train_detector(*, cache_dir, boxes_csv, resize: str, cfg: dict, out_model, out_history, threads: int = 1,
                   device_preference: str = "auto") -> dict:
    """The train_detector stage: train on the ``detector_train`` boxes of ``box_split`` and save the model."""
    import torch

    from xraypipe.atomic import write_csv
    from xraypipe.model_files import save_torch_file
    from xraypipe.preprocess import load_cache_index, load_cache_split
    from xraypipe.inference import select_device

    torch.set_num_threads(max(1, threads))
    dcfg = {**DETECTOR_DEFAULTS, **(cfg.get("detector") or {})}
    index = load_cache_index(cache_dir)
    findings = boxed_findings(index)
    image_size = int(load_cache_split(cache_dir, "test").shape[-1])
    boxes, counts = scoring_split(boxes_csv, index, image_size, resize, findings, cfg, cap=False)
    train = boxes[boxes["role"] == "detector_train"]
    images_table = train[["split", "cache_row", "image_id"]].drop_duplicates().reset_index(drop=True)
    device = select_device(device_preference)
    torch.manual_seed(int(dcfg["seed"]))
    rng = np.random.default_rng(int(dcfg["seed"]))
    arch = dcfg["architecture"]
    model = build_detector(findings, image_size, architecture=arch, backbone=dcfg["backbone"],
                           fpn_channels=int(dcfg["fpn_channels"]), weights=dcfg["weights"],
                           backbone_weights=dcfg["backbone_weights"]).to(device)
    images = _images(cache_dir, images_table)
    per_image = {k: g for k, g in train.groupby("image_id")}
    targets = [targets_for(per_image[i], findings, image_size, arch == "maskrcnn") for i in images_table["image_id"]]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=float(dcfg["lr"]), momentum=0.9, weight_decay=float(dcfg["weight_decay"]))
    batch = max(1, int(dcfg["batch_size"]))
    steps_per_epoch = math.ceil(len(images_table) / batch)
    total = max(1, steps_per_epoch * int(dcfg["epochs"]))
    warmup = min(50, max(1, total // 10))
    # linear warm-up, then cosine decay to 0
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: (s + 1) / warmup if s < warmup else
                                                 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup))))
    history = []
    started = time.perf_counter()
    model.train()
    for epoch in range(1, int(dcfg["epochs"]) + 1 if len(images_table) else 1):
        order = rng.permutation(len(images_table))
        sums: dict[str, float] = {}
        epoch_start = time.perf_counter()
        for start in range(0, len(order), batch):
            chosen = order[start:start + batch]
            inputs = [to_input(images[i]).to(device) for i in chosen]
            batch_targets = [{k: v.to(device) for k, v in targets[i].items()} for i in chosen]
            losses = model(inputs, batch_targets)
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise FloatingPointError(f"detector training diverged at epoch {epoch} (loss {loss.item()}); "
                                         "lower evaluation.localization.detector.lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            optimizer.step()
            schedule.step()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * len(chosen)
        if len(images_table):
            history.append({"epoch": epoch, "loss": sum(sums.values()) / len(images_table),
                            **{k: v / len(images_table) for k, v in sums.items()},
                            "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - epoch_start})
            print(f"epoch {epoch}: loss {history[-1]['loss']:.4f} ({history[-1]['seconds']:.1f} s)", flush=True)
    seconds = time.perf_counter() - started
    metadata = {"findings": findings, "image_size": image_size, "resize": resize, "trained": bool(len(images_table)),
                "architecture": arch, "backbone": dcfg["backbone"], "fpn_channels": int(dcfg["fpn_channels"]),
                "weights": dcfg["weights"], "backbone_weights": dcfg["backbone_weights"],
                "frozen_bn": bool(dcfg["weights"] or dcfg["backbone_weights"]),
                "epochs": int(dcfg["epochs"]) if len(images_table) else 0, "seed": int(dcfg["seed"]),
                "threads": int(threads), "device": str(device), "box_split": counts}
    # no wall time in the file: equal weights give equal bytes (DVC and Snakemake see no change); the time is in
    # history.csv (per epoch) and the rule's benchmark file
    model.to("cpu")
    save_torch_file({"state_dict": model.state_dict(), "metadata": metadata}, out_model)
    write_csv(out_history, pd.DataFrame(history, columns=None if history else ["epoch", "loss", "lr", "seconds"]))
    return {k: metadata[k] for k in ("findings", "trained", "architecture", "backbone", "epochs")} | {
        "train_seconds": round(seconds, 2),
        "detector_train": {k: counts["detector_train"][k] for k in ("boxes", "images", "patients")},
        "source": counts["source"]}


def load_detector(path):
    import torch

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: trained detector not found (run the train_detector rule first)")
    from xraypipe.model_files import load_torch_file

    saved = load_torch_file(path, "detector file")
    meta = saved["metadata"]
    # the state dict holds any pretrained values: rebuild without fetching weights, with the same BatchNorm kind
    model = build_detector(meta["findings"], meta["image_size"], architecture=meta["architecture"],
                           backbone=meta["backbone"], fpn_channels=meta["fpn_channels"],
                           frozen_bn=bool(meta["frozen_bn"]))
    model.load_state_dict(saved["state_dict"])
    return model.eval(), meta


# ------------------------------------------------------------------------------------------------ inference
def predict_boxes(model, images: np.ndarray, findings, *, score_threshold: float = 0.05, max_per_finding: int = 3,
                  batch_size: int = 16, device=None) -> pd.DataFrame:
    """Detected boxes per image and finding: position (row in ``images``), finding, rank, x, y, w, h, score."""
    import torch

    dev = device or next(model.parameters()).device
    rows = []
    model.eval()
    # drop low scores inside torchvision (before the per-detection mask pasting, the slow part on CPU)
    model.roi_heads.score_thresh = float(score_threshold)
    model.roi_heads.detections_per_img = max(100, int(max_per_finding) * len(findings))
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            outputs = model([to_input(im).to(dev) for im in images[start:start + batch_size]])
            for offset, out in enumerate(outputs):
                boxes = out["boxes"].cpu().numpy()
                labels, scores = out["labels"].cpu().numpy(), out["scores"].cpu().numpy()
                for label in np.unique(labels):
                    keep = np.flatnonzero((labels == label) & (scores >= score_threshold))
                    keep = keep[np.argsort(-scores[keep], kind="stable")][:max_per_finding]
                    for rank, k in enumerate(keep):
                        x0, y0, x1, y1 = (float(v) for v in boxes[k])
                        rows.append({"position": start + offset, "finding": findings[int(label) - 1], "rank": rank,
                                     "x": x0, "y": y0, "w": x1 - x0, "h": y1 - y0, "score": float(scores[k])})
    return pd.DataFrame(rows, columns=["position", "finding", "rank", "x", "y", "w", "h", "score"])


def detect(*, detector_path, cache_dir, boxes_csv, predictions_csv, thresholds_json, resize: str, cfg: dict,
           out_dir, threads: int = 1, device_preference: str = "auto", bootstrap: dict | None = None) -> dict:
    """The detect stage for one dataset x classifier variant: detector boxes on the scoring images, conditioned on
    the classifier's positive findings, scored exactly like the Grad-CAM boxes.

    Writes into ``out_dir``: detected.csv (every detector box with ``classifier_positive``), scored.csv (per
    ground-truth box and localizer), summary.csv (Wang et al.'s layout, a ``localizer`` column: ``<detector>``
    conditioned, ``<detector>/unconditioned``), box_split.csv (every box's role) and info.json (counts).
    ``bootstrap``: ``summarise``'s n_boot/level/seed for the hit fractions' CIs.
    """
    import torch

    from xraypipe.atomic import write_csv, write_json
    from xraypipe.boxes import (IOBB_THRESHOLDS, condition_on_classifier, false_positives,
                                read_classifier_positives, score_boxes, summarise)
    from xraypipe.preprocess import load_cache_index, load_cache_split
    from xraypipe.inference import select_device

    torch.set_num_threads(max(1, threads))
    dcfg = {**DETECTOR_DEFAULTS, **(cfg.get("detector") or {})}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, meta = load_detector(detector_path)
    findings = list(meta["findings"])
    thresholds = tuple(cfg.get("iobb_thresholds", IOBB_THRESHOLDS))
    index = load_cache_index(cache_dir)
    boxes, counts = scoring_split(boxes_csv, index, meta["image_size"], resize, findings, cfg)
    trained_on = meta["box_split"]["detector_train"]["signature"]
    if trained_on != counts["detector_train"]["signature"]:
        raise ValueError(f"{detector_path}: trained on a different box split than the current configuration gives "
                         "(re-run train_detector)")
    truth = boxes[boxes["role"] == "scoring"].sort_values(["cache_row", "finding"]).reset_index(drop=True)
    images = truth[["image_id", "cache_row"]].drop_duplicates().reset_index(drop=True)
    device = select_device(device_preference)
    model.to(device)
    cached = load_cache_split(cache_dir, "test")
    raw = predict_boxes(model, cached[images["cache_row"].to_numpy(int)] if len(images) else np.zeros((0, 1, 1), np.uint8),
                        findings, score_threshold=float(dcfg["score_threshold"]),
                        max_per_finding=int(dcfg["max_per_finding"]), device=device) if meta["trained"] else \
        pd.DataFrame(columns=["position", "finding", "rank", "x", "y", "w", "h", "score"])
    detected = raw.assign(image_id=images["image_id"].to_numpy()[raw["position"].to_numpy(int)],
                          cache_row=images["cache_row"].to_numpy()[raw["position"].to_numpy(int)]).drop(columns="position")
    positives = read_classifier_positives(predictions_csv, thresholds_json, images["image_id"], findings)
    detected = condition_on_classifier(detected, positives)[["image_id", "cache_row", "finding", "rank", "x", "y", "w",
                                                             "h", "score", "classifier_positive"]]
    name = meta["architecture"]
    scored_parts, summaries = [], []
    for localizer, subset in ((name, detected[detected["classifier_positive"]]), (f"{name}/unconditioned", detected)):
        scored = score_boxes(truth[["image_id", "finding", "x", "y", "w", "h", "cache_row", "patient_id"]], subset,
                             thresholds)
        summary = summarise(scored, false_positives(truth, subset, thresholds), findings, thresholds,
                            **(bootstrap or {}))
        scored_parts.append(scored.assign(localizer=localizer))
        summaries.append(summary.assign(localizer=localizer))
    write_csv(out_dir / "detected.csv", detected)
    write_csv(out_dir / "scored.csv", pd.concat(scored_parts, ignore_index=True))
    summary = pd.concat(summaries, ignore_index=True)
    write_csv(out_dir / "summary.csv", summary[["localizer"] + [c for c in summary.columns if c != "localizer"]])
    write_csv(out_dir / "box_split.csv", boxes)
    gt_pairs = truth[["image_id", "finding"]].drop_duplicates()
    positive_pairs = gt_pairs.merge(positives, on=["image_id", "finding"])["positive"]
    info = {"detector": name, "backbone": meta["backbone"], "trained": meta["trained"],
            "findings": findings, "image_size": meta["image_size"],
            "score_threshold": float(dcfg["score_threshold"]), "max_per_finding": int(dcfg["max_per_finding"]),
            "n_images": int(len(images)), "n_boxes": int(len(truth)),
            "n_detected_unconditioned": int(len(detected)),
            "n_detected_conditioned": int(detected["classifier_positive"].sum()),
            "n_ground_truth_pairs": int(len(gt_pairs)),
            "n_ground_truth_pairs_predicted_positive": int(positive_pairs.sum()),
            "box_split": counts}
    write_json(out_dir / "info.json", info)
    return {k: v for k, v in info.items() if k != "box_split"}
