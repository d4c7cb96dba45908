"""The compiled one-pass loader kernel (xraypipe.feed_kernel) against the torch path and the textbook expression."""

import os
import signal
import threading
import time

import numpy as np
import pytest
import torch

from xraypipe import feed_kernel
from xraypipe.data import GRAY_MEAN, GRAY_STD, CacheBatches, normalized_float

from test_batch_feed import PATHOLOGIES, _cache, _close, _reference


def test_numba_is_installed_so_the_loader_takes_the_compiled_path():
    """numba is a pinned dependency: without it the loader silently falls back to the slower torch kernels."""
    assert feed_kernel.available()


def _affine(mean, std):
    std = np.asarray(std, dtype=np.float32)
    return np.float32(1.0) / (np.float32(255.0) * std), -np.asarray(mean, dtype=np.float32) / std


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("per_pixel", [False, True])
def test_gather_normalize_equals_the_textbook_expression(threads, per_pixel):
    rng = np.random.default_rng(7)
    size = 128  # 16,384 pixels: 8+ rows give every thread a part of >= MIN_PIXELS_PER_THREAD
    images = rng.integers(0, 256, size=(30, size, size), dtype=np.uint8)
    images[3] = np.resize(np.arange(256, dtype=np.uint8), (size, size))  # every uint8 value
    rows = np.array([3, 0, 29, 5, 5, 17, 8, 12, 3, 21, 1, 2])  # unsorted, with repeats
    if per_pixel:
        mean = rng.uniform(0.2, 0.8, size=(size, size)).astype(np.float32)
        std = rng.uniform(0.05, 0.3, size=(size, size)).astype(np.float32)
    else:
        mean, std = GRAY_MEAN, GRAY_STD
    scale, shift = _affine(mean, std)
    out = np.full((len(rows), size * size), np.nan, dtype=np.float32)
    feed_kernel.gather_normalize(images.reshape(30, -1), rows, scale, shift, out, threads=threads)
    _close(torch.from_numpy(out.reshape(len(rows), 1, size, size)), _reference(images[rows], mean, std))


def test_the_parallel_kernel_runs_only_where_it_pays_and_is_safe(monkeypatch):
    launched = []
    kernels = feed_kernel._compiled()
    monkeypatch.setattr(feed_kernel, "_compiled", lambda: {
        key: (lambda *a, key=key: launched.append(key[1]) or kernels[key](*a)) for key in kernels})
    images = np.zeros((16, 256 * 256), dtype=np.uint8)
    out = np.empty((8, 256 * 256), dtype=np.float32)
    feed_kernel.gather_normalize(images, np.arange(8), np.float32(1), np.float32(0), out, threads=4)
    feed_kernel.gather_normalize(images, np.arange(8), np.float32(1), np.float32(0), out, threads=1)
    small = np.zeros((16, 64), dtype=np.uint8)  # 512 pixels in all: not worth starting threads
    feed_kernel.gather_normalize(small, np.arange(8), np.float32(1), np.float32(0), out[:, :64].copy(), threads=4)
    monkeypatch.setattr(feed_kernel, "_forked_child", True)
    feed_kernel.gather_normalize(images, np.arange(8), np.float32(1), np.float32(0), out, threads=4)
    assert launched == [True, False, False, False]


def test_gather_normalize_refuses_bad_inputs():
    images = np.zeros((4, 16), dtype=np.uint8)
    out = np.empty((2, 16), dtype=np.float32)
    with pytest.raises(IndexError, match="row 4 outside the 4 source rows"):
        feed_kernel.gather_normalize(images, np.array([0, 4]), 1.0, 0.0, out)
    with pytest.raises(IndexError, match="row -1"):
        feed_kernel.gather_normalize(images, np.array([-1, 0]), 1.0, 0.0, out)
    with pytest.raises(ValueError, match="uint8 source"):
        feed_kernel.gather_normalize(images.astype(np.float32), np.array([0, 1]), 1.0, 0.0, out)
    with pytest.raises(ValueError, match="float32 output"):
        feed_kernel.gather_normalize(images, np.array([0, 1, 2]), 1.0, 0.0, out)


def test_concurrent_callers_from_python_threads_get_their_own_rows():
    """Two Python threads launching the parallel kernel at once (numba's workqueue layer aborts the process on
    concurrent launches unless they are serialised)."""
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, size=(40, 128 * 128), dtype=np.uint8)
    scale, shift = _affine(GRAY_MEAN, GRAY_STD)
    results, errors = {}, []

    def work(k):
        try:
            rows = np.arange(k, 40, 2)
            out = np.empty((len(rows), images.shape[1]), dtype=np.float32)
            for _ in range(20):
                feed_kernel.gather_normalize(images, rows, scale, shift, out, threads=2)
            results[k] = (rows, out)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for rows, out in results.values():
        _close(torch.from_numpy(out), _reference(images[rows], GRAY_MEAN, GRAY_STD).reshape(len(rows), -1))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_a_forked_child_takes_the_serial_kernel():
    """After the parent has used the parallel kernel, a forked child asking for threads must not touch the
    parent's OpenMP threads (numba would terminate it, GNU OpenMP could hang it)."""
    images = np.random.default_rng(4).integers(0, 256, size=(12, 128 * 128), dtype=np.uint8)
    out = np.empty((8, images.shape[1]), dtype=np.float32)
    feed_kernel.gather_normalize(images, np.arange(8), np.float32(1), np.float32(0), out, threads=2)
    pid = os.fork()
    if pid == 0:
        code = 2
        try:
            feed_kernel.gather_normalize(images, np.arange(4, 12), np.float32(1), np.float32(0), out, threads=2)
            code = 0 if np.array_equal(out, images[4:12].astype(np.float32)) else 1
        finally:
            os._exit(code)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail("the forked child hung in gather_normalize")


def test_normalized_float_takes_the_kernel_and_matches_the_torch_path(tmp_path, monkeypatch):
    rng = np.random.default_rng(9)
    np.save(tmp_path / "a.npy", rng.integers(0, 256, size=(50, 32, 32), dtype=np.uint8))
    mm = np.load(tmp_path / "a.npy", mmap_mode="r")  # read-only memory map, as the loader opens the cache
    rows = np.sort(rng.choice(50, size=20, replace=False))
    mean = rng.uniform(0.3, 0.7, size=(32, 32)).astype(np.float32)
    std = rng.uniform(0.1, 0.3, size=(32, 32)).astype(np.float32)
    calls = []
    real = feed_kernel.gather_normalize
    monkeypatch.setattr(feed_kernel, "gather_normalize", lambda *a, **k: calls.append(1) or real(*a, **k))
    for m, s in ((GRAY_MEAN, GRAY_STD), (mean, std)):
        fast = normalized_float(mm, m, s, rows=rows)
        whole = normalized_float(mm, m, s)
        monkeypatch.setenv("XRAYPIPE_NO_NUMBA", "1")
        _close(fast, normalized_float(mm, m, s, rows=rows))
        _close(whole, normalized_float(mm, m, s))
        monkeypatch.delenv("XRAYPIPE_NO_NUMBA")
        _close(fast, _reference(np.asarray(mm)[rows], m, s))
    assert len(calls) == 4  # the torch-path calls (XRAYPIPE_NO_NUMBA) did not reach the kernel
    empty = normalized_float(mm, rows=np.array([], dtype=np.int64))
    assert empty.shape == (0, 1, 32, 32)


def test_cache_batches_feed_through_the_kernel(tmp_path, monkeypatch):
    images, _ = _cache(tmp_path)
    calls = []
    real = feed_kernel.gather_normalize
    monkeypatch.setattr(feed_kernel, "gather_normalize", lambda *a, **k: calls.append(len(a[1])) or real(*a, **k))
    batches = CacheBatches(tmp_path, "train", PATHOLOGIES, batch_size=8, shuffle=True, seed=2, reuse_buffer=True)
    for x, _, _, rows in batches:
        _close(x, _reference(images[rows], GRAY_MEAN, GRAY_STD))
    assert sum(calls) == len(images) and len(calls) == len(batches)
