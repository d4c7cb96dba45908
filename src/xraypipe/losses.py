"""Loss registry. Each factory returns ``loss(logits, targets, mask) -> scalar``.

``mask`` is 1 where the label is known; unknown labels (NaN in the manifest) never contribute.
"""

from __future__ import annotations

from xraypipe.registry import Registry

LOSSES: Registry = Registry("loss")


@LOSSES.register("bce")
def masked_bce(**_):
    """Multi-label binary cross-entropy on logits, averaged over the known labels only."""
    import torch.nn.functional as F

    def loss(logits, targets, mask):
        per_label = F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="none")
        return (per_label * mask).sum() / mask.sum().clamp_min(1.0)

    return loss


def build_loss(name: str, **kwargs):
    return LOSSES.get(name)(**kwargs)
