"""The batch loader's uint8 -> normalised float conversion (the epoch-feed fast path of benchmarks/speed.py)."""

import numpy as np
import pandas as pd
import pytest
import torch

from xraypipe.atomic import write_csv
from xraypipe.data import GRAY_MEAN, GRAY_STD, CacheBatches, normalized_float

PATHOLOGIES = ["Mass", "Effusion"]


def _reference(images, mean, std):
    """The straightforward torch expression the fast path must reproduce (to float32 rounding)."""
    x = torch.from_numpy(np.array(images)).unsqueeze(1).float().div_(255.0)
    return x.sub_(torch.as_tensor(mean, dtype=torch.float32)).div_(torch.as_tensor(std, dtype=torch.float32))


def _close(got, expected):
    """Equal to float32 rounding: the fused multiply-add rounds differently from divide, subtract, divide, by a few
    ulps of the largest term (values near 0 come from cancelling terms of the size of mean / std)."""
    assert got.dtype == expected.dtype and got.shape == expected.shape
    scale = max(1.0, float(expected.abs().max()))
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=0, atol=4 * np.spacing(np.float32(scale)))


def test_rows_of_a_memmap_into_a_reused_buffer(tmp_path):
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, size=(20, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "a.npy", images)
    mm = np.load(tmp_path / "a.npy", mmap_mode="r")
    rows = np.array([1, 4, 5, 11, 19])
    buffer = torch.full((8, 8, 8), float("nan"))
    got = normalized_float(mm, GRAY_MEAN, GRAY_STD, chunk=2, rows=rows, out=buffer)
    _close(got, _reference(images[rows], GRAY_MEAN, GRAY_STD))
    assert got.data_ptr() == buffer.data_ptr()  # written in place, no fresh allocation
    with pytest.raises(ValueError, match="cannot hold"):
        normalized_float(mm, rows=np.arange(10), out=buffer)


def test_reused_buffer_batches_equal_fresh_ones(tmp_path):
    images, _ = _cache(tmp_path)
    fresh = CacheBatches(tmp_path, "train", PATHOLOGIES, batch_size=8, shuffle=True, seed=1)
    reused = CacheBatches(tmp_path, "train", PATHOLOGIES, batch_size=8, shuffle=True, seed=1, reuse_buffer=True)
    pointers = set()
    for (a, _, _, ra), (b, _, _, rb) in zip(fresh, reused):
        np.testing.assert_array_equal(ra, rb)
        assert torch.equal(a, b)
        pointers.add(b.data_ptr())
    assert len(pointers) == 1  # one buffer for every batch
    assert not CacheBatches(tmp_path, "train", PATHOLOGIES, batch_size=8, reuse_buffer=True,
                            pin_memory=True).reuse_buffer  # never with pinned (asynchronous) copies


@pytest.mark.parametrize("chunk", [1, 3, 4, 64])
def test_normalized_float_equals_the_torch_expression(chunk):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(11, 16, 16), dtype=np.uint8)
    images[0] = np.arange(256, dtype=np.uint8).reshape(16, 16)  # every uint8 value
    got = normalized_float(images, GRAY_MEAN, GRAY_STD, chunk=chunk)
    assert got.dtype == torch.float32 and got.shape == (11, 1, 16, 16)
    _close(got, _reference(images, GRAY_MEAN, GRAY_STD))
    # known values: 0 -> -2, 255 -> 2 for mean 0.5, std 0.25
    assert got[0, 0, 0, 0].item() == pytest.approx(-2.0, abs=1e-6)
    assert got[0, 0, 15, 15].item() == pytest.approx(2.0, abs=1e-6)
    # per-pixel mean and std images broadcast over the batch
    mean = rng.uniform(0.2, 0.8, size=(16, 16)).astype(np.float32)
    std = rng.uniform(0.05, 0.3, size=(16, 16)).astype(np.float32)
    got = normalized_float(images, mean, std, chunk=chunk)
    _close(got, _reference(images, mean, std))
    expected64 = (images.astype(np.float64) / 255 - mean) / std
    np.testing.assert_allclose(got[:, 0].numpy(), expected64, rtol=1e-5, atol=1e-5)


def _cache(tmp_path, n=37, size=12):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
    np.save(tmp_path / "train.npy", images)
    index = pd.DataFrame({"cache_row": np.arange(n), "image_id": [f"i{i}" for i in range(n)],
                          "patient_id": [str(i) for i in range(n)], "split": "train",
                          "Mass": rng.integers(0, 2, n).astype(float), "Effusion": rng.integers(0, 2, n).astype(float)})
    write_csv(tmp_path / "index.csv", index)
    return images, index


def test_cache_batches_deliver_the_normalised_rows_in_the_seeded_order(tmp_path):
    images, index = _cache(tmp_path)
    batches = CacheBatches(tmp_path, "train", PATHOLOGIES, batch_size=8, shuffle=True, seed=3)
    batches.set_epoch(2)
    order = np.random.default_rng([3, 2]).permutation(len(images))
    seen = []
    for i, (x, y, m, rows) in enumerate(batches):
        expected_rows = np.sort(order[i * 8:(i + 1) * 8])
        np.testing.assert_array_equal(rows, expected_rows)
        _close(x, _reference(images[rows], GRAY_MEAN, GRAY_STD))
        np.testing.assert_array_equal(y.numpy(), index.loc[rows, PATHOLOGIES].to_numpy(dtype=np.float32))
        seen.extend(rows.tolist())
    assert sorted(seen) == list(range(len(images)))


def test_other_inputs_take_the_numpy_path():
    """Flipped views (negative strides, which torch cannot view) and non-uint8 arrays give the same values."""
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(6, 10, 10), dtype=np.uint8)
    flipped = images[::-1, :, ::-1]
    _close(normalized_float(flipped, rows=np.array([0, 2, 5]), chunk=2),
           _reference(flipped[[0, 2, 5]], GRAY_MEAN, GRAY_STD))
    _close(normalized_float(images.astype(np.float32), chunk=4), _reference(images, GRAY_MEAN, GRAY_STD))


def test_training_never_draws_a_batch_of_one_image(tmp_path):
    """33 training images in batches of 8: a last batch of one would crash BatchNorm (train mode), so that image
    waits for another epoch's permutation; evaluation (no shuffle) still sees every image."""
    _cache(tmp_path, n=33)
    train = CacheBatches(tmp_path, "train", PATHOLOGIES, batch_size=8, shuffle=True, seed=3)
    sizes = [len(rows) for *_, rows in train]
    assert sizes == [8, 8, 8, 8] and len(train) == 4
    evaluation = CacheBatches(tmp_path, "train", PATHOLOGIES, batch_size=8)
    assert [len(rows) for *_, rows in evaluation] == [8, 8, 8, 8, 1] and len(evaluation) == 5
