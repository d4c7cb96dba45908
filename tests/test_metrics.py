import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from xraypipe.metrics import _auroc_weighted, auroc, bootstrap_auroc, bootstrap_weights


@pytest.mark.parametrize("seed", range(5))
def test_auroc_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.normal(y * 0.7, 1.0), 1)  # rounding creates many ties
    assert auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_auroc_edge_cases():
    assert np.isnan(auroc([1, 1, 1], [0.1, 0.2, 0.3]))
    assert auroc([0, 1, np.nan], [0.1, 0.9, 0.0]) == 1.0
    assert auroc([0, 1], [0.5, 0.5]) == 0.5
    assert auroc([1, 0], [0.9, 0.1]) == 1.0 and auroc([0, 1], [0.9, 0.1]) == 0.0


def test_weighted_auroc_equals_sklearn_on_explicit_resamples():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 60).astype(float)
    s = np.round(rng.normal(y, 1.0), 1)
    weights = bootstrap_weights(60, 50, seed=3)
    fast = _auroc_weighted(y, s, weights)
    for b in range(50):
        idx = np.repeat(np.arange(60), weights[b].astype(int))
        expected = roc_auc_score(y[idx], s[idx]) if len(set(y[idx])) == 2 else np.nan
        assert fast[b] == pytest.approx(expected, abs=1e-12, nan_ok=True)


def test_bootstrap_ci_matches_a_naive_sklearn_loop():
    rng = np.random.default_rng(7)
    n, labels = 150, ["A", "B"]
    y = rng.integers(0, 2, (n, 2)).astype(float)
    y[:5, 1] = np.nan  # unknown labels are excluded
    s = rng.normal(np.nan_to_num(y) * 0.8, 1.0)
    res = bootstrap_auroc(y, s, labels=labels, n_boot=300, level=0.9, seed=11)
    weights = bootstrap_weights(n, 300, seed=11)
    per_label = []
    for j in range(2):
        known = ~np.isnan(y[:, j])
        reps = []
        for b in range(300):
            idx = np.repeat(np.flatnonzero(known), weights[b, known].astype(int))
            reps.append(roc_auc_score(y[idx, j], s[idx, j]))
        per_label.append(reps)
        lo, hi = np.quantile(reps, [0.05, 0.95])
        entry = res["labels"][labels[j]]
        assert entry["auroc"] == pytest.approx(roc_auc_score(y[known, j], s[known, j]))
        assert entry["ci_low"] == pytest.approx(lo) and entry["ci_high"] == pytest.approx(hi)
        assert entry["ci_low"] <= entry["auroc"] <= entry["ci_high"]
    mean_lo, mean_hi = np.quantile(np.mean(per_label, axis=0), [0.05, 0.95])
    assert res["mean"]["ci_low"] == pytest.approx(mean_lo) and res["mean"]["ci_high"] == pytest.approx(mean_hi)
    assert res["labels"]["B"]["n"] == n - 5


def test_bootstrap_is_seeded():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (80, 1)).astype(float)
    s = rng.random((80, 1))
    a = bootstrap_auroc(y, s, labels=["A"], n_boot=200, seed=5)
    b = bootstrap_auroc(y, s, labels=["A"], n_boot=200, seed=5)
    c = bootstrap_auroc(y, s, labels=["A"], n_boot=200, seed=6)
    assert a == b and a["labels"]["A"]["ci_low"] != c["labels"]["A"]["ci_low"]


def test_patient_bootstrap_resamples_whole_patients_and_widens_the_ci():
    groups = np.repeat(np.arange(20), 5)
    w = bootstrap_weights(100, 30, seed=0, groups=groups.astype(str))
    for row in w:  # all images of a patient share one multiplicity
        assert (row.reshape(20, 5) == row.reshape(20, 5)[:, :1]).all()
        assert row.sum() == 100
    # images of one patient are near-duplicates: the clustered CI must be wider than the naive one
    rng = np.random.default_rng(2)
    patient_y = rng.integers(0, 2, 20).astype(float)
    patient_s = rng.normal(patient_y * 0.8, 1.0)
    y = np.repeat(patient_y, 5)[:, None]
    s = (np.repeat(patient_s, 5) + rng.normal(0, 0.01, 100))[:, None]
    naive = bootstrap_auroc(y, s, labels=["A"], n_boot=500, seed=1)["labels"]["A"]
    clustered = bootstrap_auroc(y, s, labels=["A"], n_boot=500, seed=1, groups=groups)["labels"]["A"]
    assert clustered["ci_high"] - clustered["ci_low"] > 1.5 * (naive["ci_high"] - naive["ci_low"])
