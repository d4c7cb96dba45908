"""Input standardisation (``variants.<v>.normalization``) and the feed's uint8 -> float32 normalisation.

Every method maps the cache's uint8 pixels u to ``(u / 255 - mean) / std`` (float32):

- ``fixed`` (default): mean 0.5, std 0.25 for every pixel (roughly a chest film's intensity statistics);
- ``imagenet``: the gray equivalents of ImageNet's RGB statistics (the means of its channel means and stds,
  0.449 and 0.226), what networks pretrained on ImageNet expect;
- ``per_pixel``: a mean image and a std image over the TRAINING split, computed once by a streamed,
  numerically stable pass (``pixel_stats``: per-chunk float64 moments merged with Chan et al.'s parallel update,
  so memory is bounded by one chunk, not the split) and stored beside the cache
  (``results/cache/{dataset}/pixel_stats.npz``); std is floored at ``STD_FLOOR`` so constant pixels (padding)
  map to 0 instead of dividing by zero;
- ``mean_image``: the training split's mean image subtracted, nothing divided (the ChestX-ray8 study's "mean
  image"; std 1 for every pixel);
- ``per_image``: each image by its own mean and std (floored likewise);
- ``unit``: the pixels in [0, 1] and nothing else (mean 0, std 1: the CheXpert study's probe regimes).

The trained model file stores the method with its mean/std (the per-pixel images themselves), so prediction,
``xraypipe-predict`` and Grad-CAM apply exactly the transform the model was trained with.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xraypipe import feed_kernel
from xraypipe.atomic import atomic_path

NORMALIZATIONS = ("fixed", "imagenet", "per_pixel", "mean_image", "per_image", "unit")
IMAGE_STATISTICS = ("per_pixel", "mean_image")  # the methods whose mean/std are S x S images of pixel_stats
# Fixed intensity normalisation of the [0, 1] gray values (roughly the mean/std of chest radiographs).
GRAY_MEAN = 0.5
GRAY_STD = 0.25
FIXED = (GRAY_MEAN, GRAY_STD)
IMAGENET_GRAY = (0.449, 0.226)  # mean of (0.485, 0.456, 0.406), mean of (0.229, 0.224, 0.225)
STD_FLOOR = 1.0 / 255  # one gray level: the smallest std a pixel (or image) is divided by
STATS_FORMAT = 1
PIXEL_STATS_NAME = "pixel_stats.npz"  # beside the cache's <split>.npy (PATHS["pixel_stats"])


def pixel_stats(images, chunk_rows: int = 256) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-pixel mean and (population, ddof=0) std of ``images`` (N x H x W, any dtype) in float64, in the
    images' own units, streamed ``chunk_rows`` images at a time (e.g. over a memory map).

    Each chunk's mean and sum of squared deviations (M2) are computed in float64 around the chunk's own mean,
    then merged: delta = m_b - m_a; m = m_a + delta n_b / n; M2 = M2_a + M2_b + delta^2 n_a n_b / n. Unlike the
    naive E[x^2] - E[x]^2 in float32 this stays exact to float64 rounding for values near 255.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    n_total = len(images)
    if n_total == 0:
        raise ValueError("no images to compute pixel statistics over")
    shape = tuple(images.shape[1:])
    mean = np.zeros(shape, dtype=np.float64)
    m2 = np.zeros(shape, dtype=np.float64)
    n = 0
    for start in range(0, n_total, chunk_rows):
        chunk = np.asarray(images[start:start + chunk_rows], dtype=np.float64)
        nb = len(chunk)
        mb = chunk.mean(axis=0)
        chunk -= mb
        m2b = np.einsum("i...,i...->...", chunk, chunk)
        delta = mb - mean
        total = n + nb
        mean += delta * (nb / total)
        m2 += m2b + delta * delta * (n * nb / total)
        n = total
    return mean, np.sqrt(m2 / n), n


def write_pixel_stats(cache_dir: str | os.PathLike, out: str | os.PathLike, *, split: str = "train",
                      chunk_rows: int = 256) -> dict:
    """Compute the per-pixel statistics of ``<cache_dir>/<split>.npy`` (in [0, 1] units, as the loader's u/255)
    and write them atomically to ``out`` (.npz: mean, std, count, split, std_floor, format)."""
    from xraypipe.preprocess import load_cache_split

    path = Path(cache_dir) / f"{split}.npy"
    if not path.exists():
        raise FileNotFoundError(f"{path}: cached {split} split not found (run the cache stage first)")
    images = load_cache_split(cache_dir, split)
    if len(images) == 0:
        raise ValueError(f"{path}: the {split} split is empty; per-pixel statistics need training images")
    mean, std, count = pixel_stats(images, chunk_rows)
    stats = {"mean": (mean / 255.0).astype(np.float32), "std": (std / 255.0).astype(np.float32),
             "count": np.int64(count), "split": np.str_(split), "std_floor": np.float32(STD_FLOOR),
             "format": np.int64(STATS_FORMAT)}
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **stats)
    return stats


def load_pixel_stats(path: str | os.PathLike) -> dict:
    """The statistics written by ``write_pixel_stats``; errors name the file and what is wrong."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: per-pixel statistics not found (run the pixel_stats stage)")
    try:
        with np.load(path) as data:
            stats = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(f"{path}: cannot read per-pixel statistics ({type(exc).__name__}: {exc})") from None
    missing = [k for k in ("mean", "std", "count") if k not in stats]
    if missing:
        raise ValueError(f"{path}: missing {missing}")
    if stats["mean"].shape != stats["std"].shape or stats["mean"].ndim != 2:
        raise ValueError(f"{path}: mean {stats['mean'].shape} and std {stats['std'].shape} must be equal 2-D images")
    return stats


@dataclass
class Normalization:
    """``(u / 255 - mean) / std`` with ``mean``/``std`` scalars (fixed, imagenet) or S x S images (per_pixel,
    mean_image);
    per_image uses each image's own statistics."""

    method: str = "fixed"
    mean: float | np.ndarray = FIXED[0]
    std: float | np.ndarray = FIXED[1]
    source: str | None = None

    def __post_init__(self):
        if self.method not in NORMALIZATIONS:
            raise ValueError(f"unknown normalization {self.method!r}; choose one of {', '.join(NORMALIZATIONS)}")
        if self.method in IMAGE_STATISTICS:
            self.mean = np.asarray(self.mean, dtype=np.float32)
            self.std = np.maximum(np.asarray(self.std, dtype=np.float32), np.float32(STD_FLOOR))
            if self.mean.ndim != 2 or self.mean.shape != self.std.shape:
                raise ValueError(f"{self.method} normalization needs equal 2-D mean and std images, got "
                                 f"{self.mean.shape} and {self.std.shape}")

    @classmethod
    def for_variant(cls, method: str, stats_path: str | os.PathLike | None = None) -> "Normalization":
        if method == "fixed":
            return cls("fixed", *FIXED)
        if method == "imagenet":
            return cls("imagenet", *IMAGENET_GRAY)
        if method in ("per_image", "unit"):
            return cls(method, 0.0, 1.0)
        if method in IMAGE_STATISTICS:
            if stats_path is None:
                raise ValueError(f"normalization {method} needs the pixel statistics file (pixel_stats.npz)")
            stats = load_pixel_stats(stats_path)
            std = stats["std"] if method == "per_pixel" else np.ones_like(stats["mean"])
            return cls(method, stats["mean"], std, source=str(stats_path))
        return cls(method)  # raises: unknown method

    @classmethod
    def from_meta(cls, norm: dict | None) -> "Normalization":
        """From a model file's ``metadata['normalization']``; files written before the option existed hold only
        ``{mean, std}`` scalars (the fixed method)."""
        if norm is None:
            return cls("fixed", *FIXED)
        if isinstance(norm, Normalization):
            return norm
        return cls(norm.get("method", "fixed"), norm["mean"], norm["std"], source=norm.get("source"))

    def to_meta(self) -> dict:
        meta = {"method": self.method}
        if self.method in IMAGE_STATISTICS:
            meta.update(mean=np.asarray(self.mean), std=np.asarray(self.std), source=self.source,
                        sha256=hashlib.sha256(np.asarray(self.mean).tobytes() + np.asarray(self.std).tobytes())
                        .hexdigest())
        else:
            meta.update(mean=float(self.mean), std=float(self.std))
        return meta

    def check_size(self, size: int, what: str = "images") -> None:
        if self.method in IMAGE_STATISTICS and tuple(self.mean.shape) != (size, size):
            raise ValueError(f"per-pixel statistics ({self.source or 'model file'}) are "
                             f"{self.mean.shape[0]}x{self.mean.shape[1]} but the {what} are {size}x{size}")

    def apply(self, images: np.ndarray, chunk: int = 16, rows=None, out=None, threads: int | None = None):
        """uint8 images (B x S x S), or ``images[rows]`` of a (memory-mapped) array -> float32 tensor B x 1 x S x S
        (see ``normalized_float``; ``out``: a reusable float32 buffer)."""

        if not hasattr(images, "shape"):
            images = np.asarray(images)
        if self.method == "per_image":
            return self.apply_unit(normalized_float(images, 0.0, 1.0, chunk=chunk, rows=rows, out=out,
                                                    threads=threads))
        self.check_size(images.shape[-1])
        return normalized_float(images, self.mean, self.std, chunk=chunk, rows=rows, out=out, threads=threads)

    def apply_unit(self, x):
        """The same transform on a float tensor already in [0, 1] (B x 1 x S x S), e.g. after augmentation."""
        import torch

        if self.method == "per_image":
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            std = x.std(dim=(1, 2, 3), keepdim=True, unbiased=False).clamp_min_(STD_FLOOR)
            return x.sub_(mean).div_(std)
        self.check_size(x.shape[-1])
        mean = torch.as_tensor(self.mean, dtype=torch.float32, device=x.device)
        std = torch.as_tensor(self.std, dtype=torch.float32, device=x.device)
        return x.sub_(mean).div_(std)



def normalized_float(images: np.ndarray, mean=GRAY_MEAN, std=GRAY_STD, chunk: int = 16, rows=None, out=None,
                     threads: int | None = None):
    """uint8 images (B x S x S), or ``images[rows]`` of a uint8 (memory-mapped) array, -> float32 tensor
    B x 1 x S x S of ``(images / 255 - mean) / std``, computed as ``u * scale + shift`` (``scale = 1 / (255 std)``,
    ``shift = -mean / std``); equal to the textbook expression to a few float32 ulps of its largest term.

    ``mean``/``std``: scalars or S x S images (per-pixel standardisation). A C-contiguous uint8 array or memory map
    takes one compiled pass (``xraypipe.feed_kernel``: gather, cast and multiply-add fused) over ``threads``
    threads (default ``torch.get_num_threads()``, i.e. ``training.threads``). Other array-likes (CacheRows,
    negative strides), or a machine without numba (or ``XRAYPIPE_NO_NUMBA=1``), take torch kernels, a chunk of
    ``chunk`` images at a time. ``out``: a float32 buffer (>= B x S x S) to fill instead of allocating one; fresh
    pages cost a page fault each, so reusing a buffer doubles the rate (benchmarks/speed.py). The result is then
    a view of ``out``.
    """
    import torch

    n = len(images) if rows is None else len(rows)
    shape = (n, *images.shape[1:])
    std = np.asarray(std, dtype=np.float32)
    scale = np.float32(1.0) / (np.float32(255.0) * std)
    shift = -np.asarray(mean, dtype=np.float32) / std
    if out is None:
        flat = torch.empty(shape, dtype=torch.float32)
    else:
        flat = out[:n] if isinstance(out, torch.Tensor) else torch.from_numpy(out)[:n]
        if tuple(flat.shape) != shape or flat.dtype != torch.float32:
            raise ValueError(f"output buffer {tuple(out.shape)} {out.dtype} cannot hold {shape} float32")
    if (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.flags.c_contiguous
            and flat.is_contiguous() and feed_kernel.available()):
        pixels = int(np.prod(shape[1:]))
        positions = np.arange(n) if rows is None else rows
        feed_kernel.gather_normalize(np.asarray(images).reshape(len(images), pixels), positions, scale, shift,
                                     flat.numpy().reshape(n, pixels),
                                     threads=torch.get_num_threads() if threads is None else threads)
    else:
        _normalize_with_torch_kernels(images, torch.from_numpy(np.asarray(scale)), torch.from_numpy(np.asarray(shift)),
                                      chunk, rows, flat)
    return flat.unsqueeze(1)


def _normalize_with_torch_kernels(images, scale, shift, chunk: int, rows, flat) -> None:
    """``normalized_float`` without the compiled kernel: per chunk, a torch gather into a uint8 staging buffer, a
    cast into ``flat`` and a fused multiply-add there; array-likes that only numpy indexing reads (CacheRows,
    negative strides) are read by numpy instead of the gather."""
    import torch

    n = len(flat)
    source = _uint8_tensor(images)
    staging = None
    if rows is not None:
        rows = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.int64))
        if source is not None:
            staging = torch.empty((min(chunk, n), *flat.shape[1:]), dtype=torch.uint8)
    for start in range(0, n, chunk):
        part = flat[start:start + chunk]
        if source is None:  # an array-like (CacheRows) that only numpy indexing reads
            picked = images[start:start + chunk] if rows is None else images[rows[start:start + chunk].numpy()]
            part.copy_(torch.from_numpy(np.ascontiguousarray(picked)))
        elif rows is None:
            part.copy_(source[start:start + chunk])
        else:
            gathered = staging[:len(part)]
            torch.index_select(source, 0, rows[start:start + chunk], out=gathered)
            part.copy_(gathered)
        if scale.ndim == 0:
            torch.add(shift, part, alpha=float(scale), out=part)
        else:
            part.mul_(scale).add_(shift)


def _uint8_tensor(images):
    """A torch view (no copy) of a numpy uint8 array or memory map, or None for other array-likes (and for
    negative strides, which torch cannot view). Read-only memory maps give a tensor torch warns about; it is only
    ever read."""
    import warnings

    import torch

    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or any(s < 0 for s in images.strides):
        return None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(images)
