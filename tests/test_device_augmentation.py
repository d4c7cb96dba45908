"""Augmentation where the model is: with ``augment_device`` the uint8 batch is copied to that device and augmented
and normalised there (the training loop passes its CUDA device). On CPU the device path gives the host path's
batches exactly, and on the ``meta`` device every tensor of the augmentation is shown to live on the device."""

import numpy as np
import pytest
import torch

from test_batch_feed import PATHOLOGIES, _cache
from test_train_resume import TRAINING, VARIANT, make_cache
from xraypipe.data import CacheBatches
from xraypipe.standardize import Normalization
from xraypipe.train import _Distributed, _load_batches


def _epoch(batches, epoch=2):
    batches.set_epoch(epoch)
    return [(x.clone(), y.clone(), m.clone(), rows.copy()) for x, y, m, rows in batches]


@pytest.mark.parametrize("options", [
    {},
    {"augment_args": {"gamma": [0.8, 1.25], "max_rotate_deg": 15.0}},
    {"normalization": Normalization("per_image", 0.0, 1.0)},
    {"oversample": True, "workers": 2},
    {"rank": 1, "world_size": 2},
])
def test_the_device_path_gives_the_host_paths_batches_on_cpu(tmp_path, options):
    _cache(tmp_path)
    common = {"batch_size": 8, "shuffle": True, "augment": True, "seed": 5, "reuse_buffer": True, **options}
    host = _epoch(CacheBatches(tmp_path, "train", PATHOLOGIES, **common))
    device = _epoch(CacheBatches(tmp_path, "train", PATHOLOGIES, augment_device="cpu", **common))
    assert len(host) == len(device) > 2
    for (xa, ya, ma, ra), (xb, yb, mb, rb) in zip(host, device):
        np.testing.assert_array_equal(ra, rb)
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(ma, mb)


def test_per_pixel_statistics_follow_the_batch_to_the_device(tmp_path):
    images, _ = _cache(tmp_path)
    size = images.shape[-1]
    stats = Normalization("per_pixel", np.full((size, size), 0.4, np.float32), np.full((size, size), 0.2, np.float32))
    common = {"batch_size": 8, "shuffle": True, "augment": True, "seed": 1, "normalization": stats}
    host = _epoch(CacheBatches(tmp_path, "train", PATHOLOGIES, **common))
    device = _epoch(CacheBatches(tmp_path, "train", PATHOLOGIES, augment_device="cpu", **common))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(host, device))
    # on the meta device a statistic (or an augmentation draw) left on the host would raise a device mismatch
    meta = CacheBatches(tmp_path, "train", PATHOLOGIES, augment_device="meta", **common)
    shapes = [(x.device.type, tuple(x.shape)) for x, _, _, _ in meta]
    assert shapes and all(d == "meta" and s[1:] == (1, size, size) for d, s in shapes)


def test_unaugmented_batches_stay_on_the_host(tmp_path):
    _cache(tmp_path)
    batches = CacheBatches(tmp_path, "train", PATHOLOGIES, batch_size=8, augment_device="meta")  # augment off
    assert all(x.device.type == "cpu" for x, _, _, _ in batches)


def test_the_training_loop_hands_its_device_to_the_training_batches_only(tmp_path):
    cache = make_cache(tmp_path / "cache")
    train, val, _ = _load_batches(cache, ["Mass", "Effusion"], VARIANT, _Distributed(TRAINING), pin=False, workers=0,
                                  train_targets=None, train_rows=None, val_rows=None,
                                  augment_device=torch.device("meta"))
    assert train.augment_device == torch.device("meta") and val.augment_device is None
    x, _, _, _ = next(iter(train))
    assert x.device.type == "meta"
