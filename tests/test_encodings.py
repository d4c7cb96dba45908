import numpy as np
import pytest
import torch

from xraypipe.encodings import (ENCODINGS, encode_uncertain_labels, eval_labels, multiclass_positive_score,
                                relabel_with_predictions)

N = np.nan
LABELS = np.array([[1.0, 0.0, -1.0, N]], dtype=np.float32)


@pytest.mark.parametrize("encoding,blank,targets,mask", [
    ("u_ignore", "masked", [1, 0, 0, 0], [1, 1, 0, 0]),
    ("u_ignore", "negative", [1, 0, 0, 0], [1, 1, 0, 1]),
    ("u_zeros", "masked", [1, 0, 0, 0], [1, 1, 1, 0]),
    ("u_ones", "masked", [1, 0, 1, 0], [1, 1, 1, 0]),
    ("u_ones", "negative", [1, 0, 1, 0], [1, 1, 1, 1]),
    ("u_selftrained", "masked", [1, 0, 0, 0], [1, 1, 0, 0]),
    ("u_multiclass", "masked", [1, 0, 2, 0], [1, 1, 1, 0]),
])
def test_each_encoding_by_hand(encoding, blank, targets, mask):
    t, m = encode_uncertain_labels(LABELS, encoding, blank)
    np.testing.assert_array_equal(t[0], targets)
    np.testing.assert_array_equal(m[0], mask)


def test_selftrained_relabels_only_the_uncertain_entries():
    t, m = encode_uncertain_labels(LABELS, "u_selftrained", "masked")
    probs = np.array([[0.9, 0.2, 0.7, 0.4]], dtype=np.float32)
    t2, m2 = relabel_with_predictions(LABELS, t, m, probs)
    np.testing.assert_allclose(t2[0], [1, 0, 0.7, 0])
    np.testing.assert_array_equal(m2[0], [1, 1, 1, 0])


def test_multiclass_score_is_pos_over_pos_plus_neg():
    logits = torch.tensor([[0.3, 1.2, 2.5, -1.0, 0.0, 4.0]])
    probs = torch.softmax(logits.view(1, 2, 3), dim=-1)
    expected = probs[..., 1] / (probs[..., 1] + probs[..., 0])
    torch.testing.assert_close(multiclass_positive_score(logits), expected)


def test_invalid_values_and_policies_are_named():
    with pytest.raises(ValueError, match=r"row 0, label 1: value 2.0"):
        encode_uncertain_labels(np.array([[1.0, 2.0]]), "u_ones")
    with pytest.raises(ValueError, match="blank policy"):
        encode_uncertain_labels(LABELS, "u_ones", blank="zero")
    with pytest.raises(KeyError, match="did you mean 'u_ones'"):
        encode_uncertain_labels(LABELS, "u_one")


def test_eval_labels_keep_only_certain_ones():
    np.testing.assert_array_equal(np.isnan(eval_labels(LABELS))[0], [False, False, True, True])
    assert set(ENCODINGS.names()) == {"u_ignore", "u_zeros", "u_ones", "u_selftrained", "u_multiclass"}


def test_training_batches_apply_the_variant_encoding(tmp_path):
    from test_train_resume import make_cache
    from xraypipe.data import CacheBatches

    cache = make_cache(tmp_path / "cache")
    import pandas as pd

    index = pd.read_csv(cache / "index.csv")
    index.loc[0, "Mass"] = -1.0  # an uncertain label, as CheXpert writes it
    index.to_csv(cache / "index.csv", index=False)
    ignore = CacheBatches(cache, "train", ["Mass", "Effusion"], batch_size=8)
    ones = CacheBatches(cache, "train", ["Mass", "Effusion"], batch_size=8, encoding="u_ones", blank="negative")
    assert float(ignore.mask[0, 0]) == 0.0 and float(ones.mask[0, 0]) == 1.0 and float(ones.targets[0, 0]) == 1.0
    assert float(ignore.mask[1, 1]) == 0.0 and float(ones.mask[1, 1]) == 1.0  # the blank (NaN) label


def test_unimplemented_training_encodings_are_refused_by_the_config(project_root):
    import yaml

    from xraypipe.config import ConfigError, validate_config

    raw = yaml.safe_load((project_root / "config.yaml").read_text())
    raw["variants"]["resnet18"]["encoding"] = "u_multiclass"
    with pytest.raises(ConfigError, match=r"variants\.resnet18\.encoding: 'u_multiclass' .* not implemented yet"):
        validate_config(raw)
