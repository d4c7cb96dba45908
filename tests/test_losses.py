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


def _bce_terms(logits, targets):
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    return [[-math.log(sig(z)) if t else -math.log(1 - sig(z)) for z, t in zip(zr, tr)]
            for zr, tr in zip(logits.tolist(), targets.tolist())]


def test_wcel_counts_the_whole_batch_label_matrix_as_in_eq_1():
    # 4 images x 2 labels, 3 ones and 5 zeros in the matrix: beta_P = 8/3, beta_N = 8/5 for every entry (batch);
    # per label: column 0 has 1 one / 3 zeros (4, 4/3), column 1 has 2 / 2 (2, 2)
    logits = torch.tensor([[2.0, 1.0], [0.0, 0.5], [-1.0, -2.0], [1.0, 0.0]])
    targets = torch.tensor([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    mask = torch.ones(4, 2)
    terms = _bce_terms(logits, targets)

    def expected(beta):  # beta(column, target) -> weight
        return sum(beta(c, targets[i, c].item()) * terms[i][c] for i in range(4) for c in range(2)) / 8

    batch = expected(lambda c, t: 8 / 3 if t else 8 / 5)
    per_label = expected(lambda c, t: ((4, 2)[c] if t else (4 / 3, 2)[c]))
    assert float(build_loss("wcel")(logits, targets, mask)) == pytest.approx(batch, rel=1e-6)
    assert float(build_loss("wcel", counting="per_label")(logits, targets, mask)) == pytest.approx(per_label, rel=1e-6)
    assert batch != pytest.approx(per_label, rel=1e-3)
    # a masked entry is neither counted nor scored: masking image 1's label 1 (a one) leaves 2 ones and 5 zeros
    mask[1, 1] = 0
    masked = sum((7 / 2 if targets[i, c] else 7 / 5) * terms[i][c]
                 for i in range(4) for c in range(2) if mask[i, c]) / 7
    assert float(build_loss("wcel")(logits, targets, mask)) == pytest.approx(masked, rel=1e-6)


def test_wcel_weight_ratio_with_one_positive_in_a_batch_of_32():
    # the ratio beta_P / beta_N is the ratio of the gradients at logit 0: exact counts give 31/1 = 31; counts
    # smoothed by 1 (eps=1) give (32/2) / (32/32) = 16
    targets = torch.zeros(32, 1)
    targets[0] = 1.0

    def ratio(**kwargs):
        logits = torch.zeros(32, 1, requires_grad=True)
        build_loss("wcel", **kwargs)(logits, targets, torch.ones(32, 1)).backward()
        return float(-logits.grad[0, 0] / logits.grad[1, 0])

    assert ratio() == pytest.approx(31.0, rel=1e-5)
    assert ratio(counting="per_label") == pytest.approx(31.0, rel=1e-5)
    assert ratio(counting="per_label", eps=1.0) == pytest.approx(16.0, rel=1e-5)


def test_wcel_batch_without_positives_is_finite_and_bad_options_are_refused():
    logits, targets, mask = _batch(seed=1, n=8)
    value = build_loss("wcel", counting="per_label")(logits, torch.zeros_like(targets), mask)
    assert math.isfinite(float(value))
    # no positives at all: beta_N = 1, plain BCE
    assert float(value) == pytest.approx(float(build_loss("bce")(logits, torch.zeros_like(targets), mask)), rel=1e-6)
    with pytest.raises(ValueError, match="counting must be one of"):
        build_loss("wcel", counting="label")
    with pytest.raises(ValueError, match="eps must be >= 0"):
        build_loss("wcel", eps=-1.0)


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


def test_class_weights_of_the_mura_study():
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


def test_fixed_class_weights_of_the_pediatric_pneumonia_study():
    """NORMAL 1.0, PNEUMONIA 0.4: a positive entry's BCE weighs 0.4, a negative's 1.0 (hand-worked)."""
    loss = build_loss("fixed_weighted_bce", pos_weight=0.4, neg_weight=1.0)
    logits = torch.tensor([[2.0], [-1.0]])
    targets = torch.tensor([[1.0], [0.0]])
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    expected = (0.4 * -math.log(sig(2.0)) + 1.0 * -math.log(1 - sig(-1.0))) / 2
    assert float(loss(logits, targets, torch.ones(2, 1))) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="weights must be positive"):
        build_loss("fixed_weighted_bce", pos_weight=0.0)


def test_registry_names():
    assert {"bce", "masked_bce", "wcel", "class_weighted_bce"} <= set(LOSSES.names())
    with pytest.raises(KeyError, match="did you mean 'wcel'"):
        build_loss("wcell")
