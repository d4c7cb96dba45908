"""Figures (PNG, matplotlib Agg backend + seaborn), each written atomically. One function per figure rule:

- ``roc_figure``: ROC curves on the test split, one panel per label, every variant overlaid;
- ``label_distribution_figure``: positives per label and split (and unknown labels);
- ``training_curves_figure``: train/validation loss and validation mean AUROC per epoch, every variant;
- ``confusion_figure``: one 2 x 2 confusion matrix per label at the validation-chosen threshold;
- ``gradcam_figure``: test images with their class heatmap, predicted (red) and ground-truth (green) boxes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from xraypipe.atomic import atomic_path


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out_png) -> None:
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)


def _grid(n: int, max_cols: int = 4):
    cols = min(max_cols, max(1, n))
    return math.ceil(n / cols), cols


def roc_figure(prediction_files: dict, out_png, title: str = "") -> None:
    """``prediction_files``: variant -> test predictions CSV (label_<P>, prob_<P>)."""
    import seaborn as sns
    from sklearn.metrics import roc_curve

    from xraypipe.metrics import auroc

    plt = _plt()
    frames = {v: pd.read_csv(p) for v, p in prediction_files.items()}
    labels = [c[5:] for c in next(iter(frames.values())).columns if c.startswith("prob_")] if frames else []
    rows, cols = _grid(len(labels))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.1 * rows), squeeze=False)
    colors = sns.color_palette("tab10", len(frames))
    for ax, label in zip(axes.flat, labels):
        for color, (variant, frame) in zip(colors, frames.items()):
            known = frame[f"label_{label}"].notna()
            y, s = frame.loc[known, f"label_{label}"], frame.loc[known, f"prob_{label}"]
            if y.nunique() < 2:
                continue
            fpr, tpr, _ = roc_curve(y, s)
            ax.plot(fpr, tpr, color=color, lw=1.4, label=f"{variant} ({auroc(y, s):.3f})")
        ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")
        ax.set(title=label, xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01))
        ax.legend(fontsize=7, loc="lower right")
    for ax in list(axes.flat)[len(labels):]:
        ax.axis("off")
    fig.suptitle(title or "ROC curves (test split; AUROC in the legend)")
    fig.tight_layout()
    _save(fig, out_png)


def label_distribution_figure(manifest_csv, out_png, title: str = "") -> None:
    """Positive images per label and split from the splits manifest (NaN labels counted as unknown)."""
    import seaborn as sns

    from xraypipe.datasets.contract import manifest_pathologies, read_manifest

    plt = _plt()
    manifest = read_manifest(manifest_csv)
    labels = manifest_pathologies(manifest)
    rows = []
    for split, part in manifest.groupby("split", sort=False):
        for label in labels:
            values = part[label]
            rows.append({"split": f"{split} (n={len(part)})", "label": label, "state": "positive",
                         "fraction": float((values == 1).mean())})
            if values.isna().any():
                rows.append({"split": f"{split} (n={len(part)})", "label": label, "state": "unknown",
                             "fraction": float(values.isna().mean())})
    frame = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(labels)), 4))
    sns.barplot(data=frame[frame["state"] == "positive"], x="label", y="fraction", hue="split", ax=ax)
    ax.set(ylabel="fraction of images positive", xlabel="", title=title or "Label prevalence per split")
    ax.tick_params(axis="x", rotation=40)
    fig.tight_layout()
    _save(fig, out_png)


def training_curves_figure(history_files: dict, out_png, title: str = "") -> None:
    """``history_files``: variant -> history.csv (epoch, train_loss, val_loss, val_mean_auroc)."""
    import seaborn as sns

    plt = _plt()
    fig, (ax_loss, ax_auc) = plt.subplots(1, 2, figsize=(10, 3.8))
    colors = sns.color_palette("tab10", len(history_files))
    for color, (variant, path) in zip(colors, history_files.items()):
        h = pd.read_csv(path)
        ax_loss.plot(h["epoch"], h["train_loss"], color=color, ls="-", marker=".", label=f"{variant} train")
        ax_loss.plot(h["epoch"], h["val_loss"], color=color, ls="--", marker=".", label=f"{variant} validation")
        ax_auc.plot(h["epoch"], h["val_mean_auroc"], color=color, marker=".", label=variant)
        best = h["val_mean_auroc"].idxmax()
        ax_auc.scatter([h.loc[best, "epoch"]], [h.loc[best, "val_mean_auroc"]], color=color, s=60, marker="*",
                       zorder=3)
    ax_loss.set(xlabel="epoch", ylabel="masked BCE loss", title="loss")
    ax_auc.set(xlabel="epoch", ylabel="mean AUROC", title="validation mean AUROC (★ = selected epoch)")
    ax_loss.legend(fontsize=7)
    ax_auc.legend(fontsize=7)
    fig.suptitle(title or "Training curves")
    fig.tight_layout()
    _save(fig, out_png)


def confusion_figure(metrics_json, out_png, title: str = "") -> None:
    """One 2 x 2 confusion matrix per label (test split, validation-chosen threshold) from the metrics JSON."""
    import seaborn as sns

    plt = _plt()
    report = json.loads(Path(metrics_json).read_text())["classification"]
    labels = list(report["labels"])
    rows, cols = _grid(len(labels))
    fig, axes = plt.subplots(rows, cols, figsize=(2.9 * cols, 2.7 * rows), squeeze=False)
    for ax, label in zip(axes.flat, labels):
        m = report["labels"][label]
        matrix = np.array([[m["tn"], m["fp"]], [m["fn"], m["tp"]]])
        sns.heatmap(matrix, annot=True, fmt="d", cbar=False, cmap="Blues", ax=ax,
                    xticklabels=["pred -", "pred +"], yticklabels=["true -", "true +"])
        t = m["threshold"]
        ax.set_title(f"{label}\nt={t:.3f} κ={m['kappa']:.2f}" if t is not None and m["kappa"] is not None
                     else label, fontsize=9)
    for ax in list(axes.flat)[len(labels):]:
        ax.axis("off")
    fig.suptitle(title or f"Confusion matrices (test; thresholds chosen on validation by {report['method']})")
    fig.tight_layout()
    _save(fig, out_png)


BOX_COLOURS = {"threshold": "red", "heuristic": "orange", "wang60": "cyan", "wang180": "magenta"}


def draw_overlay(ax, image: np.ndarray, heat: np.ndarray | None, truth=(), detected=(), title: str = "") -> None:
    """Gray image, heatmap (jet, alpha by heat), ground-truth boxes green, detected boxes dashed.

    ``detected``: boxes (x, y, w, h), drawn red, or a dict colour -> boxes (one colour per localizer)."""
    from matplotlib.patches import Rectangle

    ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    if heat is not None:
        ax.imshow(heat, cmap="jet", alpha=0.35 * (heat > 0.05) + 0.1, vmin=0, vmax=1, interpolation="bilinear")
    for (x, y, w, h) in truth:
        ax.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, edgecolor="lime", lw=1.6))
    for colour, boxes in (detected.items() if isinstance(detected, dict) else [("red", detected)]):
        for (x, y, w, h) in boxes:
            ax.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, edgecolor=colour, lw=1.2, ls="--"))
    ax.set_title(title, fontsize=7)
    ax.set_axis_off()


def gradcam_figure(heatmaps_npz, scored_csv, detected_csv, info_json, test_array, out_png, title: str = "") -> None:
    """One row per finding: the test images saved by the localize stage (``overlays_per_finding``), each with its
    ground-truth box (green), the heatmap of that finding and every box method's boxes (a colour each, the IoBB of
    its best box in the title). ``test_array``: the cached test split the heatmaps' cache rows index."""
    from matplotlib.lines import Line2D

    plt = _plt()
    with np.load(heatmaps_npz) as z:
        maps, image_ids, rows, findings = z["heatmaps"].astype(np.float32), z["image_id"], z["cache_row"], z["finding"]
    scored = pd.read_csv(scored_csv, dtype={"image_id": str})
    detected = pd.read_csv(detected_csv, dtype={"image_id": str})
    info = json.loads(Path(info_json).read_text())
    if info.get("boxes") is False and len(maps):
        with np.load(heatmaps_npz) as z:
            _explanations_figure(plt, maps, z, info, np.load(test_array, mmap_mode="r"), out_png, title)
        return
    if len(maps) == 0:
        fig, ax = plt.subplots(figsize=(5, 1.5))
        ax.text(0.5, 0.5, info.get("skipped") or "no test image with a ground-truth box", ha="center", va="center")
        ax.set_axis_off()
        _save(fig, out_png)
        return
    # the heatmaps explain the ground-truth finding: draw the oracle-class boxes of each box method
    if "ground_truth_pair" in detected.columns:
        detected = detected[detected["ground_truth_pair"].astype(bool)]
    if "localizer" in scored.columns:
        scored = scored[scored["localizer"].str.endswith("(oracle class)")]
    methods = [m for m in info["box_methods"] if m in BOX_COLOURS]
    images = np.load(test_array, mmap_mode="r")
    fig, panels = _panel_grid(plt, findings)
    for ax, finding, k in panels:
        image_id = image_ids[k]
        pair = (detected["image_id"] == image_id) & (detected["finding"] == finding)
        gt = scored[(scored["image_id"] == image_id) & (scored["finding"] == finding)]
        boxes = {BOX_COLOURS[m]: detected[pair & (detected.get("box_method", m) == m)][["x", "y", "w", "h"]]
                 .to_numpy() for m in methods}
        scores = []
        for m in methods:
            part = gt[gt["box_method"] == m] if "box_method" in gt.columns else gt
            scores.append(f"{m} {part['best_iobb'].max():.2f}" if len(part) else f"{m} -")
        draw_overlay(ax, np.asarray(images[int(rows[k])]), maps[k],
                     gt.drop_duplicates(["x", "y", "w", "h"])[["x", "y", "w", "h"]].to_numpy(), boxes,
                     f"{finding} {image_id}\nIoBB " + ", ".join(scores))
    handles = [Line2D([], [], color="lime", lw=1.6, label="ground truth")] + [
        Line2D([], [], color=BOX_COLOURS[m], lw=1.2, ls="--", label=m) for m in methods]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    layer = info.get("heatmap") or {}
    where = f" ({layer['layer']}, {layer['map_size']} map)" if layer.get("map_size") else ""
    fig.suptitle(title or f"{info['method']} heatmaps of the ground-truth finding{where}; boxes by box method")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    _save(fig, out_png)


def _panel_grid(plt, findings):
    """(figure, [(axes, finding, position)]): one row per finding (in first-seen order), one panel per saved
    position of it; unused panels are switched off."""
    order = list(dict.fromkeys(findings.tolist()))
    n_cols = max(int((findings == f).sum()) for f in order)
    fig, axes = plt.subplots(len(order), n_cols, figsize=(2.8 * n_cols, 3.1 * len(order)), squeeze=False)
    panels = []
    for r, finding in enumerate(order):
        picks = np.flatnonzero(findings == finding)
        for c in range(n_cols):
            if c < len(picks):
                panels.append((axes[r, c], finding, int(picks[c])))
            else:
                axes[r, c].axis("off")
    return fig, panels


def _short_id(image_id: str, width: int = 30) -> str:
    """An image id that fits a panel title (MURA's are paths): its last ``width`` characters."""
    image_id = str(image_id)
    return image_id if len(image_id) <= width else "..." + image_id[-(width - 3):]


def _explanations_figure(plt, maps, saved, info, images, out_png, title: str) -> None:
    """A dataset without boxes: one row per label, its highest-scoring test images (then its highest-scoring true
    negatives), each with the heatmap of that label, its score, its label and whether the classifier calls it."""
    findings, image_ids, rows = saved["finding"], saved["image_id"], saved["cache_row"]
    scores, labels, called = saved["score"], saved["label"], saved["called"]
    fig, panels = _panel_grid(plt, findings)
    for ax, finding, k in panels:
        truth = {1.0: "positive", 0.0: "negative"}.get(float(labels[k]), "unlabelled")
        call = "" if np.isnan(called[k]) else (", called positive" if called[k] else ", called negative")
        draw_overlay(ax, np.asarray(images[int(rows[k])]), maps[k], (), (),
                     f"{finding} {_short_id(image_ids[k])}\nscore {scores[k]:.2f}, {truth}{call}")
    layer = info.get("heatmap") or {}
    where = f" ({layer['layer']}, {layer['map_size']} map)" if layer.get("map_size") else ""
    fig.suptitle(title or f"{info['method']} heatmaps{where}; no ground-truth boxes: per label, the highest-scoring "
                          "test images, then the highest-scoring negatives")
    fig.tight_layout()
    _save(fig, out_png)

