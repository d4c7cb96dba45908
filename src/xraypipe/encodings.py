"""Uncertainty-label encodings (CheXpert, Irvin et al. 2019) and the blank-label policy.

Manifest labels are 1.0 (positive), 0.0 (negative), -1.0 (uncertain, only for readers with ``has_uncertain``)
and NaN (blank: not mentioned / unknown). An encoding turns them into training targets and a loss mask:

- ``u_ignore``: uncertain entries are masked out of the loss;
- ``u_zeros`` / ``u_ones``: uncertain -> 0 / 1;
- ``u_selftrained``: first trained as U-Ignore; that model's probabilities then replace the uncertain labels
  (soft targets) and the model is trained again (``relabel_with_predictions``);
- ``u_multiclass``: three classes per observation (0 negative, 1 positive, 2 uncertain); the model has three
  logits per label and its positive score is p(pos) / (p(pos) + p(neg)) (``multiclass_positive_score``).

Blank labels: ``blank: negative`` (as the CheXpert study does) or ``blank: masked``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xraypipe.registry import Registry

UNCERTAIN = -1.0
BLANK_POLICIES = ("negative", "masked")
ENCODINGS: Registry = Registry("label encoding")


@dataclass(frozen=True)
class Encoding:
    name: str
    classes_per_label: int  # 1: one sigmoid logit per label; 3: softmax over (neg, pos, uncertain)
    uncertain_target: float | None  # value given to uncertain entries, None = masked (or per-encoding logic)
    description: str


for _enc in (
    Encoding("u_ignore", 1, None, "uncertain labels masked out of the loss"),
    Encoding("u_zeros", 1, 0.0, "uncertain labels as negative"),
    Encoding("u_ones", 1, 1.0, "uncertain labels as positive"),
    Encoding("u_selftrained", 1, None, "U-Ignore model relabels the uncertain labels, then retrain"),
    Encoding("u_multiclass", 3, 2.0, "three classes per label: negative, positive, uncertain"),
):
    ENCODINGS.register(_enc.name)(_enc)


def check_labels(labels: np.ndarray, source: str = "labels") -> None:
    values = np.asarray(labels, dtype=float)
    bad = ~(np.isnan(values) | np.isin(values, (0.0, 1.0, UNCERTAIN)))
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{source}: row {row}, label {col}: value {float(values[row, col])} is not 1, 0, -1 or blank")


def encode_uncertain_labels(labels, encoding: str, blank: str = "masked") -> tuple[np.ndarray, np.ndarray]:
    """Return ``(targets, mask)`` float32 arrays of the labels' shape.

    For ``u_multiclass`` targets are class indices 0/1/2 (as floats); for the others they are in [0, 1].
    ``u_selftrained`` encodes like ``u_ignore`` here; ``relabel_with_predictions`` then fills the uncertain
    entries.
    """
    enc = ENCODINGS.get(encoding)
    if blank not in BLANK_POLICIES:
        raise ValueError(f"unknown blank policy {blank!r}; use one of {BLANK_POLICIES}")
    y = np.asarray(labels, dtype=np.float32)
    check_labels(y)
    uncertain = y == UNCERTAIN
    missing = np.isnan(y)
    targets = np.where(missing | uncertain, 0.0, y).astype(np.float32)
    mask = np.ones_like(y, dtype=np.float32)
    if enc.uncertain_target is None:
        mask[uncertain] = 0.0
    else:
        targets[uncertain] = enc.uncertain_target
    if blank == "masked":
        mask[missing] = 0.0
    else:
        targets[missing] = 0.0
    return targets, mask


def relabel_with_predictions(labels, targets: np.ndarray, mask: np.ndarray, probabilities: np.ndarray):
    """U-SelfTrained's second round: uncertain entries take the first model's probabilities (soft targets)
    and re-enter the loss."""
    y = np.asarray(labels, dtype=np.float32)
    uncertain = y == UNCERTAIN
    targets = targets.copy()
    mask = mask.copy()
    targets[uncertain] = np.asarray(probabilities, dtype=np.float32)[uncertain]
    mask[uncertain] = 1.0
    return targets, mask


def multiclass_positive_score(logits):
    """(B, 3L) logits grouped per label as (neg, pos, uncertain) -> (B, L) score p(pos) / (p(pos) + p(neg)).

    Works on torch tensors; the uncertain class is dropped before normalising, so the score is
    sigmoid(l_pos - l_neg).
    """
    import torch

    grouped = logits.view(logits.shape[0], -1, 3)
    return torch.sigmoid(grouped[..., 1] - grouped[..., 0])


def eval_labels(labels) -> np.ndarray:
    """Labels for metrics: only certain 0/1 labels count; uncertain and blank become NaN (unknown)."""
    y = np.asarray(labels, dtype=float).copy()
    y[(y != 0.0) & (y != 1.0)] = np.nan
    return y
