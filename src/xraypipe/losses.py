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


WCEL_COUNTING = ("batch", "per_label")


@LOSSES.register("wcel")
def weighted_cross_entropy(counting: str = "batch", eps: float = 0.0, **_):
    """W-CEL of Wang et al. 2017 (the ChestX-ray8 study, Eq. 1), weights recomputed for every batch:
    beta_P = (|P| + |N|) / |P| on positives, beta_N = (|P| + |N|) / |N| on negatives.

    ``counting``: ``batch`` (the study: |P| and |N| are the numbers of 1s and 0s in the batch's whole label
    matrix) or ``per_label`` (one pair of weights per label column). Only known entries (``mask``) count.
    ``eps`` (default 0, the study's exact counts) is added to |P| and |N| to smooth the weights; without it a
    class absent from the batch gets a finite weight anyway, on terms that do not exist. The loss is averaged
    over the known entries: Eq. 1's per-image sum over labels divided by the number of labels, a constant
    factor (Adam's steps do not depend on it)."""
    import torch.nn.functional as F

    if counting not in WCEL_COUNTING:
        raise ValueError(f"wcel: loss_args.counting must be one of {list(WCEL_COUNTING)}, not {counting!r}")
    if eps < 0:
        raise ValueError(f"wcel: loss_args.eps must be >= 0, not {eps!r}")
    dims = None if counting == "batch" else 0

    def loss(logits, targets, mask):
        logits = logits.float()
        known_pos, known_neg = targets * mask, (1 - targets) * mask
        pos, neg = known_pos.sum(dim=dims), known_neg.sum(dim=dims)
        total = pos + neg
        # an empty class: any finite weight (clamp), since none of its terms is in the sum
        beta_p = total / (pos + eps).clamp_min(1e-12)
        beta_n = total / (neg + eps).clamp_min(1e-12)
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


# filled in by the trainer from the training split, never by the config's loss_args
@LOSSES.register("fixed_weighted_bce")
def fixed_weighted_bce(pos_weight: float = 1.0, neg_weight: float = 1.0, **_):
    """BCE with fixed class weights: positives weigh ``pos_weight``, negatives ``neg_weight`` (the pediatric
    pneumonia study: NORMAL 1.0, PNEUMONIA 0.4, i.e. pos_weight 0.4 for the Pneumonia label)."""
    import torch.nn.functional as F

    if pos_weight <= 0 or neg_weight <= 0:
        raise ValueError(f"fixed_weighted_bce: weights must be positive, got pos {pos_weight}, neg {neg_weight}")

    def loss(logits, targets, mask):
        weights = targets * float(pos_weight) + (1 - targets) * float(neg_weight)
        per_entry = F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="none") * weights
        return _masked_mean(per_entry, mask)

    return loss


TRAINER_ARGUMENTS = ("pos_counts", "neg_counts")


def loss_options(name: str) -> list[str]:
    """The ``loss_args`` keys a loss accepts: its factory's named keyword parameters, less the trainer's."""
    import inspect

    parameters = inspect.signature(LOSSES.get(name)).parameters.values()
    return [p.name for p in parameters
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in TRAINER_ARGUMENTS]


def build_loss(name: str, **kwargs):
    return LOSSES.get(name)(**kwargs)
