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


TOO_FEW_POSITIVES = "too few positives"


def bootstrap_auroc(y_true, y_score, *, labels, n_boot: int = 1000, level: float = 0.95, seed: int = 0,
                    groups=None, min_positives: int = 0) -> dict:
    """Per-label and mean AUROC with percentile bootstrap CIs.

    ``y_true``/``y_score``: N x L arrays (NaN label = unknown, excluded for that label). ``groups``:
    optional patient ids; the bootstrap then resamples patients, because images of one patient are
    correlated and an image-level bootstrap would give too narrow intervals. The same resamples are
    used for every label, so the CI of the mean AUROC accounts for the correlation between labels.
    A label with fewer than ``min_positives`` positives gets no AUROC (``status``: "too few positives") and is left
    out of the mean: an AUROC from a handful of positives is noise with a CI too wide to read.
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
        n_positive = int((y[known, j] == 1).sum())
        too_few = n_positive < min_positives
        point[j] = np.nan if too_few else auroc(y[known, j], s[known, j])
        if n_boot and not np.isnan(point[j]):
            reps[:, j] = _auroc_weighted(y[known, j], s[known, j], weights[:, known])
        lo, hi = percentile_interval(reps[:, j], alpha) if n_boot else (np.nan, np.nan)
        result["labels"][label] = {
            "auroc": _clean(point[j]), "ci_low": _clean(lo), "ci_high": _clean(hi),
            "n": int(known.sum()), "n_positive": n_positive,
            "n_boot_valid": int(np.isfinite(reps[:, j]).sum()) if n_boot else 0,
        }
        if too_few:
            result["labels"][label]["status"] = TOO_FEW_POSITIVES
    defined = ~np.isnan(point)
    mean_point = float(point[defined].mean()) if defined.any() else float("nan")
    if n_boot and defined.any():
        mean_reps = np.nanmean(reps[:, defined], axis=1) if np.isfinite(reps[:, defined]).any() else np.full(len(reps), np.nan)
        lo, hi = percentile_interval(mean_reps, alpha)
    else:
        lo = hi = float("nan")
    result["mean"] = {"auroc": _clean(mean_point), "ci_low": _clean(lo), "ci_high": _clean(hi),
                      "n_labels": int(defined.sum())}
    result["min_positives"] = int(min_positives)
    return result


def percentile_interval(values: np.ndarray, alpha: float) -> tuple[float, float]:
    """The (alpha, 1 - alpha) quantiles of the finite bootstrap replicates (NaN, NaN when there are none)."""
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))


def _clean(value) -> float | None:
    """JSON-friendly: NaN becomes None."""
    value = float(value)
    return None if np.isnan(value) else value


def evaluate_predictions(predictions: pd.DataFrame, pathologies, *, n_boot: int, level: float, seed: int,
                         unit: str = "patient", min_positives: int = 0) -> dict:
    """Metrics JSON for one predictions table (columns ``label_<P>``, ``prob_<P>``, ``patient_id``)."""
    y = predictions[[f"label_{p}" for p in pathologies]].to_numpy(dtype=float)
    s = predictions[[f"prob_{p}" for p in pathologies]].to_numpy(dtype=float)
    groups = predictions["patient_id"].astype(str).to_numpy() if unit == "patient" else None
    result = bootstrap_auroc(y, s, labels=list(pathologies), n_boot=n_boot, level=level, seed=seed, groups=groups,
                             min_positives=min_positives)
    result["n_images"] = int(len(predictions))
    result["n_patients"] = int(predictions["patient_id"].nunique())
    return result


# --------------------------------------------------------------------------------------------------------------
# Threshold-dependent metrics. Operating thresholds are chosen on the *validation* predictions only and then
# applied unchanged to the test predictions (choosing them on test would be optimistic).
# --------------------------------------------------------------------------------------------------------------
THRESHOLD_METHODS = ("youden", "max_f1")


def _known(y_true, y_score) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=float)
    s = np.asarray(y_score, dtype=float)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"expected two 1-D arrays of the same length, got {y.shape} and {s.shape}")
    keep = ~np.isnan(y)
    y, s = y[keep], s[keep]
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0, 1 or NaN")
    return y, s


def _sweep(y: np.ndarray, s: np.ndarray):
    """Cumulative (threshold, tp, fp) for the rule ``score >= threshold`` at every distinct score, descending."""
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last_of_group = np.r_[np.flatnonzero(np.diff(s_sorted) != 0), len(s_sorted) - 1] if len(s_sorted) else np.array([], int)
    tp = np.cumsum(y_sorted)[last_of_group]
    fp = np.cumsum(1 - y_sorted)[last_of_group]
    return s_sorted[last_of_group], tp, fp


def auprc(y_true, y_score) -> float:
    """Area under the precision-recall curve as average precision (sum over thresholds of
    (R_n - R_{n-1}) * P_n, scikit-learn's ``average_precision_score``); NaN labels ignored; NaN without positives."""
    y, s = _known(y_true, y_score)
    n_pos = y.sum()
    if n_pos == 0:
        return float("nan")
    _, tp, fp = _sweep(y, s)
    precision = tp / (tp + fp)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def choose_threshold(y_true, y_score, method: str = "youden") -> float:
    """The operating threshold (predict positive when ``score >= threshold``) maximising Youden's J
    (sensitivity + specificity - 1) or F1 on the given (validation) predictions. Ties go to the highest
    threshold. NaN when a class is missing (no meaningful choice)."""
    if method not in THRESHOLD_METHODS:
        raise ValueError(f"unknown threshold method {method!r}; choose one of {', '.join(THRESHOLD_METHODS)}")
    y, s = _known(y_true, y_score)
    n_pos, n_neg = y.sum(), (1 - y).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    thresholds, tp, fp = _sweep(y, s)
    if method == "youden":
        objective = tp / n_pos - fp / n_neg
    else:
        objective = 2 * tp / (tp + fp + n_pos)
    return float(thresholds[int(np.argmax(objective))])


def confusion(y_true, y_pred) -> dict:
    """Counts tp, fp, tn, fn of binary predictions (NaN labels ignored)."""
    y, p = _known(y_true, np.asarray(y_pred, dtype=float))
    p = p.astype(bool)
    t = y.astype(bool)
    return {"tp": int((p & t).sum()), "fp": int((p & ~t).sum()), "tn": int((~p & ~t).sum()), "fn": int((~p & t).sum())}


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b else float("nan")


def rates_from_confusion(c: dict) -> dict:
    """Sensitivity, specificity, precision, F1, accuracy, balanced error and Cohen's kappa from counts."""
    tp, fp, tn, fn = c["tp"], c["fp"], c["tn"], c["fn"]
    n = tp + fp + tn + fn
    sens, spec = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    observed = _ratio(tp + tn, n)
    # chance agreement of two raters with these marginals
    expected = _ratio((tp + fp) * (tp + fn) + (tn + fn) * (tn + fp), n * n) if n else float("nan")
    if n and expected == 1.0:
        kappa = 1.0 if observed == 1.0 else 0.0  # scikit-learn's convention for a single shared class
    else:
        kappa = _ratio(observed - expected, 1 - expected) if n else float("nan")
    return {"sensitivity": sens, "specificity": spec, "precision": _ratio(tp, tp + fp),
            "f1": _ratio(2 * tp, 2 * tp + fp + fn), "accuracy": observed,
            "balanced_error": 1 - (sens + spec) / 2 if not (np.isnan(sens) or np.isnan(spec)) else float("nan"),
            "kappa": kappa}


def binary_metrics(y_true, y_score, threshold: float) -> dict:
    """All threshold-dependent metrics at ``threshold`` plus AUROC and AUPRC, for one label."""
    y, s = _known(y_true, y_score)
    pred = s >= threshold if np.isfinite(threshold) else np.zeros(len(s), bool)
    c = confusion(y, pred)
    out = {"threshold": float(threshold), "n": int(len(y)), "n_positive": int(y.sum()),
           "auroc": auroc(y, s), "auprc": auprc(y, s), **rates_from_confusion(c), **c}
    return out


def macro_mean(labels: dict, pathologies) -> dict:
    """The mean over labels (NaN-skipping) of each threshold metric and of AUROC/AUPRC."""
    keys = ["auroc", "auprc", "sensitivity", "specificity", "precision", "f1", "accuracy", "balanced_error", "kappa"]
    macro = {}
    for k in keys:
        values = np.array([labels[p][k] for p in pathologies], dtype=float)
        macro[k] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
    return macro


def classification_report(test: pd.DataFrame, val: pd.DataFrame, pathologies, method: str = "youden") -> dict:
    """Per-label metrics on ``test`` at thresholds chosen on ``val`` (columns ``label_<P>``, ``prob_<P>``),
    plus their macro mean. Returns {"thresholds": {P: t}, "labels": {P: metrics}, "macro": metrics}."""
    thresholds, labels = {}, {}
    for p in pathologies:
        for frame, name in ((test, "test"), (val, "validation")):
            for col in (f"label_{p}", f"prob_{p}"):
                if col not in frame.columns:
                    raise KeyError(f"{name} predictions have no column {col!r}")
        t = choose_threshold(val[f"label_{p}"], val[f"prob_{p}"], method)
        thresholds[p] = t
        labels[p] = binary_metrics(test[f"label_{p}"], test[f"prob_{p}"], t)
    macro = macro_mean(labels, pathologies)
    return {"method": method, "thresholds": thresholds, "labels": labels, "macro": macro}


def fixed_threshold_report(test: pd.DataFrame, pathologies, threshold: float) -> dict:
    """Per-label metrics on ``test`` at one fixed ``threshold`` for every label (e.g. 0.5, a softmax's argmax), and
    their macro mean: nothing is chosen on any split. Same layout as ``classification_report``."""
    labels = {p: binary_metrics(test[f"label_{p}"], test[f"prob_{p}"], float(threshold)) for p in pathologies}
    macro = macro_mean(labels, pathologies)
    return {"method": f"fixed {float(threshold):g}", "thresholds": {p: float(threshold) for p in pathologies},
            "labels": labels, "macro": macro}


def mean_sd(values) -> tuple[float, float, int]:
    """Mean and sample standard deviation (ddof=1; NaN for a single value) of the finite values, and their count."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan"), int(len(v))


def summarise_over_seeds(table: pd.DataFrame, group_of: dict, by: list[str], value_columns: list[str]) -> pd.DataFrame:
    """Mean ± sd of ``value_columns`` over the variants that differ only by their seed.

    ``group_of`` maps variant -> group name (see ``seed_groups``); only groups with two or more variants are
    summarised. ``by`` are further keys kept apart (e.g. dataset, label). Output columns: ``by``, ``group``,
    ``n_seeds``, ``<col>_mean``, ``<col>_sd``.
    """
    frame = table[table["variant"].isin(group_of)].copy()
    frame["group"] = frame["variant"].map(group_of)
    rows = []
    for keys, part in frame.groupby([*by, "group"], sort=False, dropna=False):
        if part["variant"].nunique() < 2:
            continue
        row = dict(zip([*by, "group"], keys if isinstance(keys, tuple) else (keys,)))
        row["n_seeds"] = int(part["variant"].nunique())
        for col in value_columns:
            row[f"{col}_mean"], row[f"{col}_sd"], _ = mean_sd(part[col].to_numpy(dtype=float))
        rows.append(row)
    return pd.DataFrame(rows, columns=[*by, "group", "n_seeds"] + [f"{c}_{s}" for c in value_columns for s in ("mean", "sd")])


def seed_groups(variants: dict) -> dict:
    """variant -> group name, grouping variants whose configuration is identical apart from ``seed``.
    The group is named after its first variant (in the given order)."""
    import json

    first_of: dict[str, str] = {}
    out = {}
    for name, cfg in variants.items():
        key = json.dumps({k: v for k, v in (cfg or {}).items() if k != "seed"}, sort_keys=True, default=str)
        first_of.setdefault(key, name)
        out[name] = first_of[key]
    return out


# --------------------------------------------------------------------------------------------------------------
# Study-level scores (MURA: one label per study of several images) and per-group tables.
# --------------------------------------------------------------------------------------------------------------
def aggregate_studies(predictions: pd.DataFrame, pathologies, study_column: str = "study_id",
                      keep=("patient_id",), how: str = "mean") -> pd.DataFrame:
    """One row per study: the mean (``how="max"``: the maximum, the CheXpert paper's rule over a study's views) of
    its images' probabilities (``prob_<P>``), and its label.

    A study's label must be the same on all of its images (MURA labels studies, not images); a study whose
    images disagree raises ValueError naming it. Unknown (NaN) image labels are ignored. Columns in ``keep``
    (e.g. patient_id, body_part) take the study's first value.
    """
    if study_column not in predictions.columns:
        raise KeyError(f"predictions have no study column {study_column!r}")
    if how not in ("mean", "max"):
        raise ValueError(f"unknown study aggregate {how!r}; choose mean or max")
    frame = predictions.copy()
    frame[study_column] = frame[study_column].astype(str)
    grouped = frame.groupby(study_column, sort=True)
    out = pd.DataFrame({study_column: list(grouped.groups)})
    out["n_images"] = grouped.size().to_numpy()
    for col in keep:
        if col in frame.columns:
            out[col] = grouped[col].first().to_numpy()
    for p in pathologies:
        labels = grouped[f"label_{p}"]
        lo, hi = labels.min().to_numpy(), labels.max().to_numpy()
        bad = np.flatnonzero(~np.isnan(lo) & (lo != hi))
        if len(bad):
            raise ValueError(f"study {out[study_column].iloc[bad[0]]!r}: images disagree on label {p!r}")
        out[f"label_{p}"] = hi
        out[f"prob_{p}"] = grouped[f"prob_{p}"].agg(how).to_numpy()
    return out


def grouped_classification(test: pd.DataFrame, val: pd.DataFrame, pathologies, group_column: str,
                           method: str = "youden", fixed: float | None = None) -> pd.DataFrame:
    """Metrics per group (e.g. MURA body part) on ``test`` at thresholds chosen on the whole of ``val``, or at the
    ``fixed`` threshold for every label (e.g. the MURA study's 0.5; ``val`` is then not read).

    One row per (group, label) with the columns of ``binary_metrics``; plus an ``all`` group.
    """
    if group_column not in test.columns:
        raise KeyError(f"test predictions have no column {group_column!r}")
    thresholds = {p: float(fixed) if fixed is not None else
                  choose_threshold(val[f"label_{p}"], val[f"prob_{p}"], method) for p in pathologies}
    rows = []
    parts = [(str(g), part) for g, part in test.groupby(group_column, sort=True)] + [("all", test)]
    for group, part in parts:
        for p in pathologies:
            rows.append({"group": group, "label": p, **binary_metrics(part[f"label_{p}"], part[f"prob_{p}"],
                                                                      thresholds[p])})
    return pd.DataFrame(rows)
