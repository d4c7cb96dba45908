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


def test_multiclass_needs_its_own_loss(project_root):
    import yaml

    from xraypipe.config import ConfigError, validate_config

    raw = yaml.safe_load((project_root / "config.yaml").read_text())
    raw["variants"]["resnet18"]["encoding"] = "u_multiclass"
    validate_config(raw)
    raw["variants"]["resnet18"]["loss"] = "wcel"
    with pytest.raises(ConfigError, match=r"variants\.resnet18\.loss: u_multiclass trains with a 3-class"):
        validate_config(raw)


def _uncertain_cache(tmp_path):
    import pandas as pd

    from test_train_resume import make_cache

    cache = make_cache(tmp_path / "cache", n=(96, 32, 16))
    index = pd.read_csv(cache / "index.csv")
    train = index["split"] == "train"
    rows = index.index[train][::3]
    index.loc[rows, "Mass"] = -1.0  # a third of the training Mass labels uncertain
    index.to_csv(cache / "index.csv", index=False)
    return cache


def _train(tmp_path, cache, encoding):
    from test_train_resume import PATHOLOGIES, TRAINING, VARIANT
    from xraypipe.train import train_variant

    out = tmp_path / encoding
    train_variant(cache_dir=cache, pathologies=PATHOLOGIES, variant={**VARIANT, "epochs": 2, "encoding": encoding},
                  training=TRAINING, model_out=out / "model.pt", history_out=out / "history.csv",
                  checkpoint_path=out / "ckpt" / "last.pt", threads=1, progress=False)
    return out


def test_u_multiclass_trains_three_logits_per_label_and_scores_pos_over_pos_plus_neg(tmp_path):
    from xraypipe.inference import load_trained_model, predict_split

    cache = _uncertain_cache(tmp_path)
    out = _train(tmp_path, cache, "u_multiclass")
    saved = torch.load(out / "model.pt", weights_only=False)
    assert saved["metadata"]["classes_per_label"] == 3
    assert saved["state_dict"][[k for k in saved["state_dict"] if k.endswith("weight")][-1]].shape[0] == 6
    model, _ = load_trained_model(out / "model.pt")
    x = torch.rand(4, 1, 16, 16)
    with torch.no_grad():
        probs = torch.softmax(model.inner(x).view(4, 2, 3), dim=-1)
        torch.testing.assert_close(torch.sigmoid(model(x)), probs[..., 1] / (probs[..., 1] + probs[..., 0]))
    frame = predict_split(model_path=out / "model.pt", cache_dir=cache, split="test", out_csv=out / "test.csv")
    values = frame[["prob_Mass", "prob_Effusion"]].to_numpy()
    assert ((values > 0) & (values < 1)).all()


def test_u_selftrained_relabels_uncertain_training_labels_with_round_one_predictions(tmp_path, monkeypatch):
    import xraypipe.encodings as enc

    calls = []
    original = enc.relabel_with_predictions

    def spy(labels, targets, mask, probabilities):
        calls.append((np.asarray(labels).copy(), np.asarray(probabilities).copy()))
        return original(labels, targets, mask, probabilities)

    monkeypatch.setattr(enc, "relabel_with_predictions", spy)
    cache = _uncertain_cache(tmp_path)
    out = _train(tmp_path, cache, "u_selftrained")
    assert len(calls) == 1
    labels, probs = calls[0]
    assert (labels == -1).sum() == 32 and probs.shape == labels.shape
    assert ((probs > 0) & (probs < 1)).all()  # soft targets from the round-1 model
    assert (out / "model.pt").exists() and not (out / "ckpt" / "selftrain_round1").exists()
