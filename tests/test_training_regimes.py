"""Training regimes of the seed studies: schedules, early stopping, frozen/staged backbones, top-k checkpoint
ensembles and oversampling of rare labels."""

import re

import numpy as np
import pandas as pd
import pytest
import torch

from test_train_resume import PATHOLOGIES, TRAINING, VARIANT, make_cache
from xraypipe.data import CacheBatches, oversampling_weights
from xraypipe.inference import load_trained_model
from xraypipe.models import build_model
from xraypipe.train import build_scheduler, step_scheduler, train_variant


def _train(tmp_path, cache, tag="run", **changes):
    variant = {**VARIANT, **changes}
    out = tmp_path / tag
    seen = []
    train_variant(cache_dir=cache, pathologies=PATHOLOGIES, variant=variant, training=TRAINING,
                  model_out=out / "model.pt", history_out=out / "history.csv", checkpoint_path=out / "last.pt",
                  threads=1, progress=False, on_epoch_end=lambda e, r: seen.append(
                      torch.load(out / "last.pt", weights_only=False)["model"]))
    return out, pd.read_csv(out / "history.csv"), seen, variant


def _initial_weights(variant):
    torch.manual_seed(variant["seed"])  # train_variant seeds the same way before building the model
    return build_model(variant["model"], num_classes=len(PATHOLOGIES), **variant["model_args"]).state_dict()


def test_step_schedule_decays_by_gamma_every_step_size_epochs():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = build_scheduler({"type": "step", "step_size": 2, "gamma": 0.1}, opt, epochs=6)
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        step_scheduler(sched, {"type": "step"}, float("nan"))
    np.testing.assert_allclose(lrs, [1e-3, 1e-3, 1e-4, 1e-4, 1e-5])


def test_step_schedule_with_milestones_decays_at_those_epochs_only():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = build_scheduler({"type": "step", "step_size": 2, "milestones": [3], "gamma": 0.1}, opt, epochs=8)
    lrs = []
    for _ in range(7):
        lrs.append(opt.param_groups[0]["lr"])
        step_scheduler(sched, {"type": "step"}, float("nan"))
    np.testing.assert_allclose(lrs, [1e-3, 1e-3, 1e-3, 1e-4, 1e-4, 1e-4, 1e-4])


def test_plateau_schedule_watches_the_validation_metric():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = {"type": "plateau", "gamma": 0.5, "patience": 1}
    sched = build_scheduler(schedule, opt, epochs=10)
    for metric in (0.6, 0.7, 0.7, 0.7):  # improves, then stalls for two epochs (> patience 1)
        step_scheduler(sched, schedule, metric)
    assert opt.param_groups[0]["lr"] == 0.5
    step_scheduler(sched, schedule, float("nan"))  # NaN metric: no step
    assert opt.param_groups[0]["lr"] == 0.5


def test_early_stopping_stops_after_patience_epochs_without_improvement(tmp_path):
    cache = make_cache(tmp_path / "cache")
    rng = np.random.default_rng(0)  # scramble the labels: nothing to learn, validation cannot keep improving
    index = pd.read_csv(cache / "index.csv")
    index[PATHOLOGIES] = rng.integers(0, 2, (len(index), 2)).astype(float)
    index.to_csv(cache / "index.csv", index=False)
    _, history, _, _ = _train(tmp_path, cache, epochs=12, early_stopping_patience=2)
    best = int(history["val_mean_auroc"].idxmax()) + 1
    assert len(history) == best + 2 < 12


def test_frozen_backbone_trains_only_the_head(tmp_path):
    cache = make_cache(tmp_path / "cache")
    out, _, _, variant = _train(tmp_path, cache, epochs=2, regime="frozen")
    initial = _initial_weights(variant)
    trained = torch.load(out / "model.pt", weights_only=False)["state_dict"]
    head = [k for k in initial if k.startswith(str(len(list(build_model("small_cnn", 2, **variant["model_args"]))) - 1))]
    assert head  # the last Linear's weight and bias
    for key, value in initial.items():
        if key in head:
            assert not torch.equal(value, trained[key]), key
        else:
            assert torch.equal(value, trained[key]), key  # conv weights and batch-norm statistics untouched


def test_staged_trains_the_head_first_then_everything(tmp_path):
    cache = make_cache(tmp_path / "cache")
    _, _, per_epoch, variant = _train(tmp_path, cache, epochs=3, regime="staged", staged_head_epochs=1)
    initial = _initial_weights(variant)
    first_conv = "0.weight"
    assert torch.equal(per_epoch[0][first_conv], initial[first_conv])  # epoch 1: backbone frozen
    assert not torch.equal(per_epoch[2][first_conv], initial[first_conv])  # later: fine-tuned


def test_top_k_checkpoint_ensemble_averages_probabilities(tmp_path):
    cache = make_cache(tmp_path / "cache")
    out, history, _, _ = _train(tmp_path, cache, epochs=4, ensemble_top_k=3)
    saved = torch.load(out / "model.pt", weights_only=False)
    assert len(saved["ensemble_state_dicts"]) == 3
    best3 = history.sort_values(["val_mean_auroc", "epoch"], ascending=[False, True])["epoch"].head(3).tolist()
    assert saved["metadata"]["ensemble_epochs"] == best3
    x = torch.rand(5, 1, 16, 16)
    mean_of_members = _assert_ensemble_averages_members(out / "model.pt", saved, x)
    single, _ = load_trained_model(out / "model.pt", ensemble=False)
    with torch.no_grad():
        assert not torch.allclose(torch.sigmoid(single(x)), mean_of_members)


def test_checkpoints_within_epochs_join_the_ensemble_k_per_epoch(tmp_path, capsys):
    """The CheXpert paper's ensemble: checkpoints every N batches (here 1 of each epoch's 4), the k best of each
    epoch. 64 training images at batch 16: 4 batches, so checkpoints after batches 1, 2, 3 and at the epoch's end."""
    cache = make_cache(tmp_path / "cache")
    out, history, _, _ = _train(tmp_path, cache, epochs=3, ensemble_top_k=2, checkpoint_every_batches=1,
                                ensemble_per_epoch=True)
    log = capsys.readouterr().out
    mids = [(int(e), int(b), float(a))
            for e, b, a in re.findall(r"epoch (\d+) batch (\d+): val_loss \S+ val_mean_auroc (\S+)", log)]
    assert [(e, b) for e, b, _ in mids] == [(e, b) for e in (1, 2, 3) for b in (1, 2, 3)], log
    saved = torch.load(out / "model.pt", weights_only=False)
    meta = saved["metadata"]
    checkpoints = meta["ensemble_checkpoints"]
    assert len(saved["ensemble_state_dicts"]) == len(checkpoints) == 2 * 3  # 2 per epoch x 3 epochs
    within = meta["within_epoch_validation"]
    assert [(r["epoch"], r["batch"]) for r in within] == [(e, b) for e, b, _ in mids]
    # the known answer: per epoch, the 2 best of its 3 within-epoch scores and its end-of-epoch score (batch 99)
    expected = []
    for epoch in (1, 2, 3):
        candidates = [(r["val_mean_auroc"], r["batch"]) for r in within if r["epoch"] == epoch]
        candidates.append((float(history.loc[history["epoch"] == epoch, "val_mean_auroc"].iloc[0]), 99))
        expected += [(epoch, b) for a, b in sorted(candidates, key=lambda c: (-c[0], c[1]))[:2]]
    assert sorted((c["epoch"], c["batch"] or 99) for c in checkpoints) == sorted(expected)
    assert len(history) == 3  # the history (and the single best epoch) stays per epoch
    _assert_ensemble_averages_members(out / "model.pt", saved, torch.rand(5, 1, 16, 16))


def test_validating_within_epochs_leaves_the_training_unchanged(tmp_path):
    cache = make_cache(tmp_path / "cache")
    plain, plain_history, _, _ = _train(tmp_path, cache, "plain", epochs=2)
    within, within_history, _, _ = _train(tmp_path, cache, "within", epochs=2, checkpoint_every_batches=1)
    pd.testing.assert_frame_equal(plain_history.drop(columns="seconds"), within_history.drop(columns="seconds"))
    a = torch.load(plain / "model.pt", weights_only=False)["state_dict"]
    b = torch.load(within / "model.pt", weights_only=False)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_keep_top_k_per_epoch_and_overall():
    from xraypipe.train import keep_top_k

    model = torch.nn.Linear(1, 1)
    top = []
    for epoch, batch, metric in [(1, 1, 0.5), (1, 2, 0.7), (1, None, 0.6), (2, 1, 0.9), (2, None, 0.4),
                                 (2, 2, 0.8)]:
        top = keep_top_k(top, metric, epoch, model, 2, batch=batch, per_epoch=True)
    assert [(t["epoch"], t["batch"]) for t in top] == [(2, 1), (2, 2), (1, 2), (1, None)]
    overall = []
    for epoch, batch, metric in [(1, 1, 0.5), (1, 2, 0.7), (1, None, 0.7), (2, 1, 0.9)]:
        overall = keep_top_k(overall, metric, epoch, model, 2, batch=batch)
    assert [(t["epoch"], t["batch"]) for t in overall] == [(2, 1), (1, 2)]  # a tie: the earlier checkpoint


def _assert_ensemble_averages_members(model_path, saved, x):
    """The loaded ensemble's probability is the mean of its members' probabilities; returns that mean."""
    ensemble, meta = load_trained_model(model_path)
    members = []
    for state in saved["ensemble_state_dicts"]:
        m = build_model(meta["model"], num_classes=2, **meta["model_args"])
        m.load_state_dict(state)
        members.append(torch.sigmoid(m.eval()(x)))
    with torch.no_grad():
        mean = torch.stack(members).mean(0)
        torch.testing.assert_close(torch.sigmoid(ensemble(x)), mean, rtol=1e-4, atol=1e-5)
    return mean


def test_oversampling_draws_rare_label_images_more_often(tmp_path):
    targets = np.array([[1, 0], [1, 0], [1, 0], [1, 0], [0, 1], [0, 0]], dtype=np.float32)
    weights = oversampling_weights(targets, np.ones_like(targets))
    np.testing.assert_allclose(weights, [1, 1, 1, 1, 4, 1])  # the one rare positive counts as four
    cache = make_cache(tmp_path / "cache", n=(200, 10, 10))
    index = pd.read_csv(cache / "index.csv")
    train = index["split"] == "train"
    index.loc[train, "Mass"] = 0.0
    index.loc[train & (index["cache_row"] < 10), "Mass"] = 1.0  # 10 of 200 positive
    index.to_csv(cache / "index.csv", index=False)
    plain = CacheBatches(cache, "train", PATHOLOGIES, batch_size=50, shuffle=True)
    over = CacheBatches(cache, "train", PATHOLOGIES, batch_size=50, shuffle=True, oversample=True)

    def positives(batches):
        return sum(int(y[:, 0].sum()) for _, y, _, _ in batches)

    assert positives(plain) == 10
    assert positives(over) > 3 * positives(plain)


def test_frozen_regime_with_ddp_is_refused(tmp_path, monkeypatch):
    cache = make_cache(tmp_path / "cache")
    monkeypatch.setattr("xraypipe.train._Distributed.enabled", property(lambda self: True))
    with pytest.raises(ValueError, match="regime 'frozen' with training.distributed"):
        _train(tmp_path, cache, regime="frozen")


def _train_plain(tmp_path, cache, tag, **changes):
    """train_variant without the per-epoch checkpoint probe (ensemble members checkpoint in their own folders)."""
    variant = {**VARIANT, **changes}
    out = tmp_path / tag
    train_variant(cache_dir=cache, pathologies=PATHOLOGIES, variant=variant, training=TRAINING,
                  model_out=out / "model.pt", history_out=out / "history.csv", checkpoint_path=out / "last.pt",
                  threads=1, progress=False)
    return out, pd.read_csv(out / "history.csv"), None, variant


def test_seed_ensemble_trains_independent_members_and_averages_them(tmp_path):
    cache = make_cache(tmp_path / "cache")
    out, history, _, variant = _train_plain(tmp_path, cache, "ens", epochs=2, ensemble_seeds=3)
    saved = torch.load(out / "model.pt", weights_only=False)
    meta = saved["metadata"]
    assert meta["ensemble_seeds"] == [3, 4, 5]
    assert sorted(history["member_seed"].unique()) == [3, 4, 5] and len(history) == 6
    # each member is exactly the single run with that seed (fresh model, same data)
    for seed, state in zip((3, 4, 5), saved["ensemble_state_dicts"]):
        single_out, _, _, _ = _train_plain(tmp_path, cache, f"single{seed}", epochs=2, seed=seed)
        single = torch.load(single_out / "model.pt", weights_only=False)["state_dict"]
        for key in single:
            torch.testing.assert_close(state[key], single[key])
    _assert_ensemble_averages_members(out / "model.pt", saved, torch.rand(6, 1, 16, 16))
    assert 0.0 <= meta["best_val_mean_auroc"] <= 1.0 and len(meta["member_best_val_mean_auroc"]) == 3
    assert not (out / "seed_members").exists()  # member files removed once the ensemble is written


def test_seed_ensemble_resumes_at_the_member_it_was_in(tmp_path, monkeypatch):
    import xraypipe.train as train_module

    cache = make_cache(tmp_path / "cache")
    calls = []
    real = train_module._train

    def crash_on_second_member(*args, **kwargs):
        calls.append(kwargs["variant"]["seed"])
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "_train", crash_on_second_member)
    with pytest.raises(KeyboardInterrupt):
        _train_plain(tmp_path, cache, "ens", epochs=1, ensemble_seeds=2)
    monkeypatch.setattr(train_module, "_train", lambda *a, **k: (calls.append(k["variant"]["seed"]), real(*a, **k))[1])
    _train_plain(tmp_path, cache, "ens", epochs=1, ensemble_seeds=2)
    assert calls == [3, 4, 4]  # the finished first member was not trained again


def test_gamma_augmentation_is_a_per_image_power():
    from xraypipe.data import augment_batch

    x = torch.rand(8, 1, 12, 12)
    identity = dict(max_rotate_deg=0.0, max_shift=0.0, scale=(1.0, 1.0), contrast=(1.0, 1.0), brightness=0.0)
    same = augment_batch(x.clone(), torch.Generator().manual_seed(0), **identity)
    torch.testing.assert_close(same, x, atol=1e-5, rtol=0)  # everything off: (almost) the identity
    out = augment_batch(x.clone(), torch.Generator().manual_seed(0), **identity, gamma=(0.5, 2.0))
    interior = (x > 0.05) & (x < 0.95)
    g = (out.clamp_min(1e-6).log() / x.clamp_min(1e-6).log())  # recovers each image's exponent
    for i in range(len(x)):
        gi = g[i][interior[i]]
        assert 0.5 - 1e-3 <= float(gi.median()) <= 2.0 + 1e-3
        assert float(gi.std()) < 1e-2  # one exponent per image
    assert float(g[:, 0][interior[:, 0]].std()) > 0.05  # differing between images


def test_flip_augmentation_mirrors_about_that_share_of_images_and_nothing_else():
    from xraypipe.data import augment_batch

    x = torch.rand(64, 1, 10, 10)
    identity = dict(max_rotate_deg=0.0, max_shift=0.0, scale=(1.0, 1.0), contrast=(1.0, 1.0), brightness=0.0)
    out = augment_batch(x.clone(), torch.Generator().manual_seed(0), **identity, flip=0.5)
    mirrored = [bool(torch.allclose(out[i], torch.flip(x[i], dims=[-1]), atol=1e-5)) for i in range(len(x))]
    kept = [bool(torch.allclose(out[i], x[i], atol=1e-5)) for i in range(len(x))]
    assert all(m or k for m, k in zip(mirrored, kept))  # each image either mirrored or untouched
    assert 20 <= sum(mirrored) <= 44  # about half of 64 (binomial, p = 0.5: well inside 4 sigma)
    never = augment_batch(x.clone(), torch.Generator().manual_seed(0), **identity)
    torch.testing.assert_close(never, x, atol=1e-5, rtol=0)  # off by default


def test_unit_normalization_keeps_the_pixels_in_0_1():
    from xraypipe.standardize import Normalization

    norm = Normalization.for_variant("unit")
    x = norm.apply(np.array([[[0, 255], [51, 102]]], dtype=np.uint8))
    torch.testing.assert_close(x, torch.tensor([[[[0.0, 1.0], [0.2, 0.4]]]]))
