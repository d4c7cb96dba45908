"""One-pass gather + uint8 -> float32 + affine normalisation of cache rows, compiled with numba.

The batch loader's hot loop is ``out[i] = images[rows[i]] * scale + shift`` over 200 KB of float32 per 224 px
image. Written with torch kernels it takes three passes (gather into a uint8 staging buffer, cast, multiply-add)
because torch's CPU kernels do not fuse a dtype cast into arithmetic; compiled, it is one pass that reads each
uint8 pixel once and writes each float once (benchmarks/README.md has the rates). numba is used rather than a C
extension because it needs no compiler on the user's machine; it caches the compiled code (``cache=True``).

With ``threads`` > 1 the rows are split over numba's threading layer (``parallel=True``; OpenMP where an OpenMP
runtime is installed). Its threads wait for work by spinning briefly, so a batch is handed to them in
microseconds; a pool of Python threads measured several times slower here, each hand-off waking a sleeping
thread and passing the GIL. Two guards make the parallel kernel safe to call from anywhere:
- launches are serialised by a lock, because numba's fallback layer (workqueue) aborts the process when two
  threads launch parallel kernels at once;
- a forked child (``os.fork``, multiprocessing) always takes the serial kernel: GNU OpenMP does not survive
  fork, and numba terminates a child that uses a parent's OpenMP threads (torch has the same limitation).

``available()`` is False where numba cannot be imported (or ``XRAYPIPE_NO_NUMBA=1``);
``xraypipe.standardize.normalized_float`` then takes the torch path, which gives the same values to float32 rounding.
"""

from __future__ import annotations

import os
import threading

import numpy as np

# below this many pixels per thread, starting the parallel kernel costs more than it saves
MIN_PIXELS_PER_THREAD = 1 << 16

_numba = None  # the numba module once imported, False when it cannot be
_kernels = None
_launch_lock = threading.Lock()
_forked_child = False


def _mark_forked_child() -> None:
    global _forked_child
    _forked_child = True


os.register_at_fork(after_in_child=_mark_forked_child)


def available() -> bool:
    """numba can be imported (imported on first call: it takes about 0.4 s) and ``XRAYPIPE_NO_NUMBA`` is unset."""
    global _numba
    if os.environ.get("XRAYPIPE_NO_NUMBA", "") not in ("", "0"):
        return False
    if _numba is None:
        try:
            import numba
        except ImportError:  # the torch path is the fallback
            numba = False
        _numba = numba
    return _numba is not False


def parallel_allowed() -> bool:
    """False in a forked child (of any process that imported this module before forking) and in a
    multiprocessing child: there the serial kernel runs whatever ``threads`` says."""
    import multiprocessing

    return not _forked_child and multiprocessing.parent_process() is None


def _compiled():
    """{(per_pixel, parallel): kernel}, compiled on first use and cached on disk by numba."""
    global _kernels
    if _kernels is None:
        if not available():
            raise RuntimeError("numba is not installed (or XRAYPIPE_NO_NUMBA is set): the fused kernel is unavailable")
        serial = _numba.njit(nogil=True, cache=True)
        parallel = _numba.njit(nogil=True, cache=True, parallel=True)
        prange = _numba.prange

        # four functions, not one compiled twice: numba's on-disk cache tells functions apart by name and line,
        # not by their options, so a serial and a parallel build of one function would overwrite each other
        @serial
        def gather_affine_scalar(src, rows, scale, shift, out):
            for i in range(rows.shape[0]):
                pixels, row = src[rows[i]], out[i]
                for j in range(pixels.shape[0]):
                    row[j] = np.float32(pixels[j]) * scale + shift

        @parallel
        def gather_affine_scalar_parallel(src, rows, scale, shift, out):
            for i in prange(rows.shape[0]):
                pixels, row = src[rows[i]], out[i]
                for j in range(pixels.shape[0]):
                    row[j] = np.float32(pixels[j]) * scale + shift

        @serial
        def gather_affine_per_pixel(src, rows, scale, shift, out):
            for i in range(rows.shape[0]):
                pixels, row = src[rows[i]], out[i]
                for j in range(pixels.shape[0]):
                    row[j] = np.float32(pixels[j]) * scale[j] + shift[j]

        @parallel
        def gather_affine_per_pixel_parallel(src, rows, scale, shift, out):
            for i in prange(rows.shape[0]):
                pixels, row = src[rows[i]], out[i]
                for j in range(pixels.shape[0]):
                    row[j] = np.float32(pixels[j]) * scale[j] + shift[j]

        kernels = {(False, False): gather_affine_scalar, (False, True): gather_affine_scalar_parallel,
                   (True, False): gather_affine_per_pixel, (True, True): gather_affine_per_pixel_parallel}
        _kernels = kernels
    return _kernels


def gather_normalize(src: np.ndarray, rows: np.ndarray, scale, shift, out: np.ndarray, threads: int = 1) -> None:
    """``out[i] = float32(src[rows[i]]) * scale + shift`` for every i, in one pass.

    ``src``: uint8, N x P, C-contiguous (a memory map's rows flattened); ``rows``: int64 positions into it;
    ``scale``/``shift``: float32 scalars, or length-P float32 arrays (per-pixel standardisation);
    ``out``: float32, len(rows) x P, C-contiguous, written in place. ``threads`` > 1 splits the rows over that
    many threads (see the module's notes)."""
    if src.dtype != np.uint8 or src.ndim != 2 or not src.flags.c_contiguous:
        raise ValueError(f"gather_normalize needs a C-contiguous 2-D uint8 source, got {src.dtype} {src.shape}")
    if out.dtype != np.float32 or out.shape != (len(rows), src.shape[1]) or not out.flags.c_contiguous:
        raise ValueError(f"gather_normalize needs a C-contiguous float32 output of {(len(rows), src.shape[1])}, "
                         f"got {out.dtype} {out.shape}")
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    if len(rows) and (rows.min() < 0 or rows.max() >= len(src)):  # the kernel does no bounds checks
        raise IndexError(f"row {rows.min() if rows.min() < 0 else rows.max()} outside the {len(src)} source rows")
    scale, shift = np.asarray(scale, dtype=np.float32), np.asarray(shift, dtype=np.float32)
    per_pixel = not (scale.ndim == 0 and shift.ndim == 0)
    if per_pixel:
        scale = np.ascontiguousarray(np.broadcast_to(scale.reshape(-1), (src.shape[1],)))
        shift = np.ascontiguousarray(np.broadcast_to(shift.reshape(-1), (src.shape[1],)))
    else:
        scale, shift = scale[()], shift[()]
    threads = max(1, min(int(threads), (len(rows) * src.shape[1]) // MIN_PIXELS_PER_THREAD))
    if threads > 1 and parallel_allowed():
        kernel = _compiled()[per_pixel, True]
        with _launch_lock:
            _numba.set_num_threads(min(threads, _numba.config.NUMBA_NUM_THREADS))
            kernel(src, rows, scale, shift, out)
    else:
        _compiled()[per_pixel, False](src, rows, scale, shift, out)
