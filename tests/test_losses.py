import math

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss

from xraypipe.losses import LOSSES, build_loss


def _batch(seed=0, n=16, labels=3):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, labels, generator=g)
    targets = (torch.rand(n, labels, generator=g) < 0.3).float()
    mask = torch.ones(n, labels)
    return logits, targets, mask


def test_bce_equals_sklearn_log_loss_and_masking_drops_entries():
    logits, targets, mask = _batch()
    loss = build_loss("bce")
    probs = torch.sigmoid(logits).numpy().ravel()
    expected = log_loss(targets.numpy().ravel(), probs, labels=[0, 1])
    assert float(loss(logits, targets, mask)) == pytest.approx(expected, rel=1e-5)
    mask[:4, 0] = 0
    keep = mask.numpy().ravel() > 0
    expected = log_loss(targets.numpy().ravel()[keep], probs[keep], labels=[0, 1])
    assert float(loss(logits, targets, mask)) == pytest.approx(expected, rel=1e-5)
    # a masked entry's target must not matter
    flipped = targets.clone()
    flipped[:4, 0] = 1 - flipped[:4, 0]
    assert float(loss(logits, flipped, mask)) == pytest.approx(float(loss(logits, targets, mask)))


def test_wcel_hand_worked_example():
    # one label, batch of 4: 1 positive, 3 negatives -> beta_P = 4/1, beta_N = 4/3 (eps=0)
    logits = torch.tensor([[2.0], [0.0], [-1.0], [1.0]])
    targets = torch.tensor([[1.0], [0.0], [0.0], [0.0]])
    mask = torch.ones(4, 1)
    loss = build_loss("wcel", eps=0.0)
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    expected = (4 * -math.log(sig(2.0)) + 4 / 3 * (-math.log(1 - sig(0.0)) - math.log(1 - sig(-1.0))
                                                    - math.log(1 - sig(1.0)))) / 4
    assert float(loss(logits, targets, mask)) == pytest.approx(expected, rel=1e-6)


def test_wcel_balances_positives_and_negatives():
    logits, targets, mask = _batch(seed=3, n=200)
    loss = build_loss("wcel", eps=0.0)
    # with all logits 0 every entry costs log 2; W-CEL then weighs both classes to half of the total each
    zero = torch.zeros_like(logits)
    assert float(loss(zero, targets, mask)) == pytest.approx(2 * math.log(2), rel=1e-5)
    # a confident mistake on the rare class costs more than the same mistake on the common class
    rare_miss = torch.where(targets > 0, torch.full_like(logits, -3.0), torch.zeros_like(logits))
    common_miss = torch.where(targets == 0, torch.full_like(logits, 3.0), torch.zeros_like(logits))
    plain = build_loss("bce")
    assert float(plain(rare_miss, targets, mask)) < float(plain(common_miss, targets, mask))
    assert float(loss(rare_miss, targets, mask)) > 0.5 * float(loss(common_miss, targets, mask))


def test_class_weights_of_seed_001():
    pos, neg = np.array([10.0, 50.0]), np.array([90.0, 50.0])
    loss = build_loss("class_weighted_bce", pos_counts=pos, neg_counts=neg, fp_bias=5.0)
    w_pos, w_neg = loss.weights
    np.testing.assert_allclose(w_pos.numpy(), [1 + 95 / 10, 1 + 55 / 50])
    np.testing.assert_allclose(w_neg.numpy(), [1 + 10 / 90, 1 + 50 / 50])
    logits = torch.tensor([[0.5, -0.5]])
    targets = torch.tensor([[1.0, 0.0]])
    expected = (w_pos[0] * -math.log(1 / (1 + math.exp(-0.5))) + w_neg[1] * -math.log(1 - 1 / (1 + math.exp(0.5)))) / 2
    assert float(loss(logits, targets, torch.ones(1, 2))) == pytest.approx(float(expected), rel=1e-6)
    with pytest.raises(ValueError, match="pos_counts"):
        build_loss("class_weighted_bce")


def test_registry_names():
    assert {"bce", "masked_bce", "wcel", "class_weighted_bce"} <= set(LOSSES.names())
    with pytest.raises(KeyError, match="did you mean 'wcel'"):
        build_loss("wcell")
