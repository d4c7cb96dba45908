"""Loss registry. Each factory returns ``loss(logits, targets, mask) -> scalar``.

``mask`` is 1 where a label takes part in the loss (the label encoding decides: unknown/uncertain labels can be
masked); masked entries never contribute. Factories receive the training split's per-label counts of
positives and negatives (``pos_counts``, ``neg_counts``) for losses that weight by class frequency, plus the
variant's ``loss_args``.
"""

from __future__ import annotations

from xraypipe.registry import Registry

LOSSES: Registry = Registry("loss")


def _masked_mean(per_entry, mask):
    return (per_entry * mask).sum() / mask.sum().clamp_min(1.0)


@LOSSES.register("bce")
def masked_bce(**_):
    """Multi-label binary cross-entropy on logits, averaged over the entries the mask keeps (plain BCE when the
    mask is all ones)."""
    import torch.nn.functional as F

    def loss(logits, targets, mask):
        per_entry = F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="none")
        return _masked_mean(per_entry, mask)

    return loss


LOSSES.register("masked_bce")(masked_bce)


@LOSSES.register("wcel")
def weighted_cross_entropy(eps: float = 1.0, **_):
    """W-CEL of Wang et al. 2017 (the ChestX-ray8 study), weights recomputed for every batch and label:
    beta_P = (|P| + |N|) / |P| on positives, beta_N = (|P| + |N|) / |N| on negatives, counted over the
    batch's known entries. ``eps`` is added to the counts so a batch without positives (or negatives) of a
    label gives a finite weight (its terms are absent anyway)."""
    import torch.nn.functional as F

    def loss(logits, targets, mask):
        logits = logits.float()
        pos = (targets * mask).sum(dim=0)
        neg = ((1 - targets) * mask).sum(dim=0)
        total = pos + neg
        beta_p = total / (pos + eps) if eps else total / pos.clamp_min(1e-12)
        beta_n = total / (neg + eps) if eps else total / neg.clamp_min(1e-12)
        per_entry = (beta_p * targets * -F.logsigmoid(logits)) + (beta_n * (1 - targets) * -F.logsigmoid(-logits))
        return _masked_mean(per_entry, mask)

    return loss


@LOSSES.register("class_weighted_bce")
def class_weighted_bce(pos_counts=None, neg_counts=None, fp_bias: float = 0.0, **_):
    """The MURA study's class weights from the training split's counts per label: positives weigh 1 + (N + b) / P,
    negatives 1 + P / N, where b (``fp_bias``) shifts weight toward positives to trade false positives."""
    import torch
    import torch.nn.functional as F

    if pos_counts is None or neg_counts is None:
        raise ValueError("class_weighted_bce needs the training split's pos_counts and neg_counts")
    p = torch.as_tensor(pos_counts, dtype=torch.float32).clamp_min(1.0)
    n = torch.as_tensor(neg_counts, dtype=torch.float32).clamp_min(1.0)
    w_pos = 1 + (n + fp_bias) / p
    w_neg = 1 + p / n

    def loss(logits, targets, mask):
        weights = targets * w_pos.to(logits.device) + (1 - targets) * w_neg.to(logits.device)
        per_entry = F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="none") * weights
        return _masked_mean(per_entry, mask)

    loss.weights = (w_pos, w_neg)
    return loss


def build_loss(name: str, **kwargs):
    return LOSSES.get(name)(**kwargs)
