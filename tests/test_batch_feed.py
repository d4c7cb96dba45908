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


COPIES = {"copies": 2, "of": "negative", "flip_probability": 0.5, "max_rotate_deg": 20, "brightness": [1.2, 1.5]}


def _one_label_cache(tmp_path, n=12, size=16):
    """A Kermany-like cache: one label; rows 0-3 NORMAL (0), the others PNEUMONIA (1); dim images so brightening
    is not clipped."""
    rng = np.random.default_rng(2)
    images = rng.integers(20, 120, size=(n, size, size), dtype=np.uint8)
    np.save(tmp_path / "train.npy", images)
    labels = np.where(np.arange(n) < 4, 0.0, 1.0)
    write_csv(tmp_path / "index.csv", pd.DataFrame({
        "cache_row": np.arange(n), "image_id": [f"i{i}" for i in range(n)], "patient_id": [str(i) for i in range(n)],
        "split": "train", "Pneumonia": labels}))
    return images


def _batches_by_row(batches):
    out = {}
    for x, y, _, rows in batches:
        for k, r in enumerate(rows.tolist()):
            out[r] = (x[k].clone(), float(y[k, 0]))
    return out


def test_minority_copies_are_fixed_augmented_copies_of_the_normal_images(tmp_path):
    images = _one_label_cache(tmp_path)
    plain = CacheBatches(tmp_path, "train", ["Pneumonia"], batch_size=5, shuffle=True, seed=1)
    copied = CacheBatches(tmp_path, "train", ["Pneumonia"], batch_size=5, shuffle=True, seed=1,
                          minority_copies=COPIES)
    # two copies of each of the 4 NORMAL images, labelled NORMAL, after the 12 originals
    assert copied.n_images == 12 + 8 and copied.copy_source.tolist() == [0, 1, 2, 3] * 2
    assert copied.targets[12:, 0].tolist() == [0.0] * 8 and len(copied) == 4
    first, second = _batches_by_row(copied), None
    copied.set_epoch(1)
    second = _batches_by_row(copied)
    assert sorted(first) == sorted(second) == list(range(20))  # every original and copy once an epoch
    reference = _batches_by_row(plain)
    for r in range(12):  # the originals are untouched
        torch.testing.assert_close(first[r][0], reference[r][0])
    for r in range(12, 20):
        torch.testing.assert_close(first[r][0], second[r][0])  # a copy is the same image every epoch
        assert first[r][1] == 0.0
    # a copy is its source rotated/flipped and brightened by x1.2-1.5: with no rotation and no flip, exactly that
    still = CacheBatches(tmp_path, "train", ["Pneumonia"], batch_size=20, minority_copies={
        **COPIES, "flip_probability": 0.0, "max_rotate_deg": 0.0})
    x = next(iter(still))[0]
    unit = x * 0.25 + 0.5  # undo the fixed normalisation (mean 0.5, std 0.25)
    source = torch.from_numpy(images[still.copy_source].astype(np.float32) / 255).unsqueeze(1)
    gain = (unit[12:] / source).flatten(1)
    assert float(gain.std(dim=1).max()) < 1e-3  # one factor per copy
    assert 1.2 - 1e-3 <= float(gain.mean(dim=1).min()) and float(gain.mean(dim=1).max()) <= 1.5 + 1e-3
    # every copy flipped: the mirror image of its (unrotated) source
    flipped = CacheBatches(tmp_path, "train", ["Pneumonia"], batch_size=20, minority_copies={
        **COPIES, "flip_probability": 1.0, "max_rotate_deg": 0.0, "brightness": [1.0, 1.0]})
    x = next(iter(flipped))[0]
    torch.testing.assert_close(x[12:16], torch.flip(x[:4], dims=[-1]), atol=1e-4, rtol=0)


def test_minority_copies_of_positive_images_and_none_by_default(tmp_path):
    _one_label_cache(tmp_path)
    positives = CacheBatches(tmp_path, "train", ["Pneumonia"], batch_size=4, minority_copies={**COPIES, "copies": 1,
                                                                                              "of": "positive"})
    assert positives.copy_source.tolist() == list(range(4, 12))
    assert CacheBatches(tmp_path, "train", ["Pneumonia"], batch_size=4).n_images == 12
    # with on-the-fly augmentation too (a copy's own draw, then the epoch's): every image, finite
    augmented = CacheBatches(tmp_path, "train", ["Pneumonia"], batch_size=4, shuffle=True, augment=True,
                             minority_copies=COPIES)
    seen = [(x, rows) for x, _, _, rows in augmented]
    assert sorted(r for _, rows in seen for r in rows.tolist()) == list(range(20))
    assert all(bool(torch.isfinite(x).all()) for x, _ in seen)
