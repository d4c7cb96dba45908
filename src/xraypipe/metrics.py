"""AUROC with a seeded (optionally patient-clustered) percentile bootstrap CI.

AUROC is computed from ranks (the Mann-Whitney U statistic with midranks for ties), identical to
scikit-learn's ``roc_auc_score`` but vectorised so that 1000 bootstrap replicates of many labels are cheap.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import rankdata


def auroc(y_true, y_score) -> float:
    """Area under the ROC curve; NaN labels are ignored; NaN if only one class is present."""
    y = np.asarray(y_true, dtype=float)
    s = np.asarray(y_score, dtype=float)
    keep = ~np.isnan(y)
    y, s = y[keep], s[keep]
    n_pos = int((y == 1).sum())
    n_neg = int((y == 0).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _auroc_weighted(y: np.ndarray, s: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC for each row of ``weights`` (B x N resample counts) without materialising resamples.

    A bootstrap resample is a multiset of the N items; with item multiplicities w, the Mann-Whitney
    statistic is sum_{i pos, j neg} w_i w_j [s_i > s_j] + 0.5 [s_i == s_j]. Sorting by score once and
    using cumulative sums over tie groups gives all B replicates in O(B N).
    """
    order = np.argsort(s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    w = weights[:, order]
    w_pos = w * (y_sorted == 1)
    w_neg = w * (y_sorted == 0)
    # tie groups: each item counts negatives strictly below it plus half of the negatives tied with it
    _, group_start, group_count = np.unique(s_sorted, return_index=True, return_counts=True)
    neg_group = np.add.reduceat(w_neg, group_start, axis=1)
    pos_group = np.add.reduceat(w_pos, group_start, axis=1)
    neg_below = np.cumsum(neg_group, axis=1) - neg_group
    u = (pos_group * (neg_below + 0.5 * neg_group)).sum(axis=1)
    n_pos = w_pos.sum(axis=1)
    n_neg = w_neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        result = u / (n_pos * n_neg)
    result[(n_pos == 0) | (n_neg == 0)] = np.nan
    return result


def bootstrap_weights(n_items: int, n_boot: int, seed: int, groups=None) -> np.ndarray:
    """B x N multiplicities of a (cluster) bootstrap: resample groups (patients) with replacement."""
    rng = np.random.default_rng(seed)
    if groups is None:
        codes = np.arange(n_items)
        n_groups = n_items
    else:
        _, codes = np.unique(np.asarray(groups).astype(str), return_inverse=True)
        n_groups = int(codes.max()) + 1 if n_items else 0
    draws = rng.integers(0, n_groups, size=(n_boot, n_groups))
    group_counts = np.zeros((n_boot, n_groups), dtype=np.float64)
    np.add.at(group_counts, (np.repeat(np.arange(n_boot), n_groups), draws.ravel()), 1.0)
    return group_counts[:, codes]


def bootstrap_auroc(y_true, y_score, *, labels, n_boot: int = 1000, level: float = 0.95, seed: int = 0,
                    groups=None) -> dict:
    """Per-label and mean AUROC with percentile bootstrap CIs.

    ``y_true``/``y_score``: N x L arrays (NaN label = unknown, excluded for that label). ``groups``:
    optional patient ids; the bootstrap then resamples patients, because images of one patient are
    correlated and an image-level bootstrap would give too narrow intervals. The same resamples are
    used for every label, so the CI of the mean AUROC accounts for the correlation between labels.
    """
    y = np.asarray(y_true, dtype=float)
    s = np.asarray(y_score, dtype=float)
    if y.shape != s.shape or y.ndim != 2 or y.shape[1] != len(labels):
        raise ValueError(f"expected two N x {len(labels)} arrays, got {y.shape} and {s.shape}")
    weights = bootstrap_weights(len(y), n_boot, seed, groups) if n_boot else np.zeros((0, len(y)))
    alpha = (1 - level) / 2
    result = {"labels": {}, "n_boot": n_boot, "ci_level": level, "bootstrap_unit": "patient" if groups is not None else "image"}
    point = np.full(len(labels), np.nan)
    reps = np.full((len(weights), len(labels)), np.nan)
    for j, label in enumerate(labels):
        known = ~np.isnan(y[:, j])
        point[j] = auroc(y[known, j], s[known, j])
        if n_boot and not np.isnan(point[j]):
            reps[:, j] = _auroc_weighted(y[known, j], s[known, j], weights[:, known])
        lo, hi = _percentiles(reps[:, j], alpha) if n_boot else (np.nan, np.nan)
        result["labels"][label] = {
            "auroc": _clean(point[j]), "ci_low": _clean(lo), "ci_high": _clean(hi),
            "n": int(known.sum()), "n_positive": int((y[known, j] == 1).sum()),
            "n_boot_valid": int(np.isfinite(reps[:, j]).sum()) if n_boot else 0,
        }
    defined = ~np.isnan(point)
    mean_point = float(point[defined].mean()) if defined.any() else float("nan")
    if n_boot and defined.any():
        mean_reps = np.nanmean(reps[:, defined], axis=1) if np.isfinite(reps[:, defined]).any() else np.full(len(reps), np.nan)
        lo, hi = _percentiles(mean_reps, alpha)
    else:
        lo = hi = float("nan")
    result["mean"] = {"auroc": _clean(mean_point), "ci_low": _clean(lo), "ci_high": _clean(hi),
                      "n_labels": int(defined.sum())}
    return result


def _percentiles(values: np.ndarray, alpha: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))


def _clean(value) -> float | None:
    """JSON-friendly: NaN becomes None."""
    value = float(value)
    return None if np.isnan(value) else value


def evaluate_predictions(predictions: pd.DataFrame, pathologies, *, n_boot: int, level: float, seed: int,
                         unit: str = "patient") -> dict:
    """Metrics JSON for one predictions table (columns ``label_<P>``, ``prob_<P>``, ``patient_id``)."""
    y = predictions[[f"label_{p}" for p in pathologies]].to_numpy(dtype=float)
    s = predictions[[f"prob_{p}" for p in pathologies]].to_numpy(dtype=float)
    groups = predictions["patient_id"].astype(str).to_numpy() if unit == "patient" else None
    result = bootstrap_auroc(y, s, labels=list(pathologies), n_boot=n_boot, level=level, seed=seed, groups=groups)
    result["n_images"] = int(len(predictions))
    result["n_patients"] = int(predictions["patient_id"].nunique())
    return result
