"""Batches prepared ahead by worker threads (CacheBatches(workers=N), training.num_workers) are the batches the
loop would have prepared itself, stay intact until the next one is drawn, and leave no thread behind."""

import threading
import time

import numpy as np
import pytest
import torch

from xraypipe.data import CacheBatches, augment_batch
from xraypipe.standardize import Normalization
from xraypipe.train import train_variant

from test_batch_feed import PATHOLOGIES, _cache, _close, _reference
from test_train_resume import PATHOLOGIES as TOY_PATHOLOGIES, TRAINING, VARIANT, make_cache


def _worker_threads():
    return [t for t in threading.enumerate() if t.name.startswith("xraypipe-batches")]


def _epoch(batches, epoch=1):
    batches.set_epoch(epoch)
    return [(x.clone(), y.clone(), m.clone(), rows.copy()) for x, y, m, rows in batches]


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("options", [
    {"shuffle": True},
    {"shuffle": True, "augment": True, "augment_args": {"gamma": [0.8, 1.25]}},
    {"shuffle": True, "oversample": True, "normalization": Normalization("per_image", 0.0, 1.0)},
    {"shuffle": True, "rank": 1, "world_size": 2},
    {"shuffle": False, "reuse_buffer": False},
])
def test_workers_give_the_batches_of_the_loop(tmp_path, workers, options):
    _cache(tmp_path)
    options = {"reuse_buffer": True, "seed": 4, **options}
    expected = _epoch(CacheBatches(tmp_path, "train", PATHOLOGIES, batch_size=8, workers=0, **options))
    got = _epoch(CacheBatches(tmp_path, "train", PATHOLOGIES, batch_size=8, workers=workers, **options))
    assert len(got) == len(expected) > 2
    for (xa, ya, ma, ra), (xb, yb, mb, rb) in zip(expected, got):
        np.testing.assert_array_equal(ra, rb)
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(ma, mb)
    assert not _worker_threads()


def test_augmented_batches_still_follow_the_single_generator_stream(tmp_path):
    """The worker path draws augmentations in batch order from the epoch's generator: the stream augment_batch
    sees when called batch after batch."""
    images, _ = _cache(tmp_path)
    batches = CacheBatches(tmp_path, "train", PATHOLOGIES, batch_size=8, shuffle=True, augment=True, seed=6,
                           workers=2)
    batches.set_epoch(3)
    generator = torch.Generator().manual_seed(6 * 1_000_003 + 3)
    for x, _, _, rows in batches:
        unit = torch.from_numpy(images[rows]).unsqueeze(1).float().div_(255.0)
        expected = Normalization.from_meta(None).apply_unit(augment_batch(unit, generator))
        assert torch.equal(x, expected)


def test_a_held_batch_is_intact_while_workers_run_ahead(tmp_path):
    images, _ = _cache(tmp_path, n=61)
    batches = CacheBatches(tmp_path, "train", PATHOLOGIES, batch_size=4, shuffle=True, seed=1, reuse_buffer=True,
                           workers=3)
    pointers = set()
    for x, _, _, rows in batches:
        time.sleep(0.01)  # the workers fill the other buffers meanwhile
        _close(x, _reference(images[rows], 0.5, 0.25))
        pointers.add(x.data_ptr())
    assert len(pointers) == 5  # a ring of workers + 2 buffers, reused


def test_stopping_early_or_a_failing_worker_leaves_no_thread(tmp_path, monkeypatch):
    _cache(tmp_path)
    batches = CacheBatches(tmp_path, "train", PATHOLOGIES, batch_size=4, shuffle=True, workers=2)
    iterator = iter(batches)
    next(iterator)
    iterator.close()  # what a `break` out of the loop does
    assert not _worker_threads()

    calls = []
    real = batches.normalization.apply

    def fail_on_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk read failed")
        return real(*args, **kwargs)

    monkeypatch.setattr(batches.normalization, "apply", fail_on_the_third)
    with pytest.raises(OSError, match="disk read failed"):
        for _ in batches:
            pass
    assert not _worker_threads()


def test_negative_workers_are_refused(tmp_path):
    _cache(tmp_path)
    with pytest.raises(ValueError, match="workers must be >= 0"):
        CacheBatches(tmp_path, "train", PATHOLOGIES, batch_size=4, workers=-1)


def test_training_with_num_workers_0_or_2_gives_the_same_model(tmp_path):
    cache = make_cache(tmp_path / "cache")
    states = []
    for workers in (0, 2):
        out = tmp_path / f"w{workers}"
        train_variant(cache_dir=cache, pathologies=TOY_PATHOLOGIES, variant={**VARIANT, "epochs": 2},
                      training={**TRAINING, "num_workers": workers}, model_out=out / "model.pt",
                      history_out=out / "history.csv", checkpoint_path=out / "last.pt", threads=1, progress=False)
        states.append(torch.load(out / "model.pt", weights_only=False)["state_dict"])
    assert states[0].keys() == states[1].keys()
    for name in states[0]:
        assert torch.equal(states[0][name], states[1][name]), name
