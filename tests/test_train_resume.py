"""A training job killed mid-run (SIGKILL) resumes from its last checkpoint and ends exactly where an
uninterrupted run ends; a checkpoint from a different configuration is ignored."""

import signal
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch

from config_sections import validated_section
from workflow_copy import env, load_tiny_config
from xraypipe.config import validate_config
from xraypipe.inference import load_trained_model
from xraypipe.train import train_variant


def validated_variant(variant: dict) -> dict:
    """``variant`` as the pipeline hands it to ``train_variant``: validated, every schema default filled in."""
    cfg = load_tiny_config()
    cfg["variants"] = {"toy": variant}
    cfg["experiment"]["variants"] = ["toy"]
    return validate_config(cfg, source="test")["variants"]["toy"]


PATHOLOGIES = ["Mass", "Effusion"]
VARIANT = validated_variant({"model": "small_cnn", "epochs": 4, "batch_size": 16, "optimizer": "adam", "lr": 0.003,
                             "weight_decay": 0.0, "loss": "bce", "augment": True, "seed": 3,
                             "model_args": {"widths": [8, 16]}, "weights": None})
TRAINING = validated_section("training", device="cpu", amp=True, channels_last=True)


def make_cache(path, n=(64, 24, 16), size=16, seed=0):
    """A learnable toy cache: label 'Mass' brightens the centre, 'Effusion' the bottom rows."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True)
    rows = []
    for split, count in zip(("train", "val", "test"), n):
        labels = rng.integers(0, 2, (count, 2)).astype(float)
        images = rng.normal(100, 20, (count, size, size))
        images[:, 6:10, 6:10] += labels[:, :1, None] * 60
        images[:, -4:, :] += labels[:, 1:, None] * 60
        np.save(path / f"{split}.npy", np.clip(images, 0, 255).astype(np.uint8))
        for i in range(count):
            rows.append({"cache_row": i, "image_id": f"{split}{i}.png", "path": "", "patient_id": f"{split}{i}",
                         "follow_up": 0, "view": "PA", "sex": "F", "age": 40, "official_split": "", "split": split,
                         "Mass": labels[i, 0], "Effusion": labels[i, 1]})
    rows[1]["Effusion"] = np.nan  # an unknown label must be masked, not break training
    pd.DataFrame(rows).to_csv(path / "index.csv", index=False)
    return path


def _train(tmp_path, tag, cache, **kwargs):
    out = tmp_path / tag
    return train_variant(cache_dir=cache, pathologies=PATHOLOGIES, variant=VARIANT, training=TRAINING,
                         model_out=out / "model.pt", history_out=out / "history.csv",
                         checkpoint_path=out / "last.pt", threads=1, progress=False, **kwargs), out


KILLER = textwrap.dedent("""
    import os, signal, sys, json
    sys.path.insert(0, {src!r})
    from xraypipe.train import train_variant
    def kill_after_two(epoch, row):
        if epoch == 2:
            os.kill(os.getpid(), signal.SIGKILL)   # no cleanup, no atexit: like the OOM killer or Slurm
    train_variant(cache_dir={cache!r}, pathologies={paths!r}, variant=json.loads({variant!r}),
                  training=json.loads({training!r}), model_out={out!r} + "/model.pt",
                  history_out={out!r} + "/history.csv", checkpoint_path={out!r} + "/last.pt", threads=1,
                  progress=False, on_epoch_end=kill_after_two)
""")


def test_killed_training_resumes_and_matches_uninterrupted(tmp_path, project_root):
    import json

    cache = make_cache(tmp_path / "cache")
    _, reference = _train(tmp_path, "reference", cache)

    out = tmp_path / "killed"
    script = KILLER.format(src=str(project_root / "src"), cache=str(cache), paths=PATHOLOGIES,
                           variant=json.dumps(VARIANT), training=json.dumps(TRAINING), out=str(out))
    proc = subprocess.run([sys.executable, "-c", script], env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (out / "last.pt").exists() and not (out / "model.pt").exists() and not (out / "history.csv").exists()
    assert torch.load(out / "last.pt", weights_only=False)["epoch"] == 2

    seen = []
    _train(tmp_path, "killed", cache, on_epoch_end=lambda epoch, row: seen.append(epoch))
    assert seen == [3, 4]  # resumed, not restarted
    assert not (out / "last.pt").exists()  # removed once the run completed

    resumed_hist = pd.read_csv(out / "history.csv")
    ref_hist = pd.read_csv(reference / "history.csv")
    assert resumed_hist["epoch"].tolist() == [1, 2, 3, 4]
    np.testing.assert_allclose(resumed_hist[["train_loss", "val_loss", "val_mean_auroc"]],
                               ref_hist[["train_loss", "val_loss", "val_mean_auroc"]], rtol=1e-5)
    a = torch.load(out / "model.pt", weights_only=False)["state_dict"]
    b = torch.load(reference / "model.pt", weights_only=False)["state_dict"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_checkpoint_of_another_configuration_is_ignored(tmp_path, capsys):
    cache = make_cache(tmp_path / "cache")
    out = tmp_path / "run"
    out.mkdir()
    torch.save({"fingerprint": "something else", "epoch": 3}, out / "last.pt")
    seen = []
    _train(tmp_path, "run", cache, on_epoch_end=lambda e, r: seen.append(e))
    assert seen == [1, 2, 3, 4]
    assert "belongs to a different configuration" in capsys.readouterr().out


def test_training_learns_and_model_roundtrips(tmp_path):
    cache = make_cache(tmp_path / "cache", n=(160, 60, 20))
    last, out = _train(tmp_path, "learn", cache)
    history = pd.read_csv(out / "history.csv")
    assert history["val_mean_auroc"].max() > 0.85  # the toy signal is easy
    model, meta = load_trained_model(out / "model.pt")
    assert meta["pathologies"] == PATHOLOGIES and meta["image_size"] == 16
    assert meta["best_val_mean_auroc"] == pytest.approx(history["val_mean_auroc"].max())
    assert model(torch.zeros(2, 1, 16, 16)).shape == (2, 2)


def test_gpu_switches_are_harmless_on_cpu(tmp_path):
    """amp/channels_last/pin-memory paths are requested; on CPU they must reduce to plain fp32."""
    from xraypipe.inference import select_device
    from xraypipe.train import amp_dtype

    device = select_device("auto")
    if device.type == "cpu":
        assert amp_dtype(device) is None
        with pytest.raises(RuntimeError, match="no CUDA device"):
            select_device("cuda")


def test_selection_by_validation_loss_picks_the_lowest_loss_epoch(tmp_path):
    """selection_metric val_loss (the NIH localization study): the saved epoch is the one with the lowest
    validation loss, and early stopping counts epochs since that one."""
    from xraypipe.train import selection_score

    assert selection_score({"val_loss": 0.3, "val_mean_auroc": 0.7}, "val_loss") == -0.3
    with pytest.raises(ValueError, match="selection_metric"):
        selection_score({"val_loss": 0.3}, "accuracy")
    cache = make_cache(tmp_path / "cache", n=(96, 32, 8))
    out = tmp_path / "by_loss"
    variant = {**VARIANT, "selection_metric": "val_loss", "epochs": 5}
    train_variant(cache_dir=cache, pathologies=PATHOLOGIES, variant=variant, training=TRAINING,
                  model_out=out / "model.pt", history_out=out / "history.csv", checkpoint_path=out / "last.pt",
                  threads=1, progress=False)
    history = pd.read_csv(out / "history.csv")
    _, meta = load_trained_model(out / "model.pt")
    assert meta["best_epoch"] == int(history.loc[history["val_loss"].idxmin(), "epoch"])
    assert meta["selection_metric"] == "val_loss"
    assert meta["best_val_mean_auroc"] == pytest.approx(
        float(history.loc[history["epoch"] == meta["best_epoch"], "val_mean_auroc"].iloc[0]))
