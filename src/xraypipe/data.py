"""Feeding the cache to a training loop: whole batches sliced from the memory map.

A batch is one sorted fancy-index read of the uint8 memmap, converted to float once per batch, which is
far cheaper than a per-item Dataset + collate. Shuffling and augmentation are seeded per epoch, so a run
resumed from a checkpoint sees exactly the batches it would have seen without the interruption.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from xraypipe.preprocess import load_cache_index, load_cache_split

# Fixed intensity normalisation of the [0, 1] gray values (roughly the mean/std of chest radiographs).
GRAY_MEAN = 0.5
GRAY_STD = 0.25


class CacheBatches:
    """Iterable of (images float32 B x 1 x S x S, targets B x L, mask B x L) torch tensors for one split.

    Distributed (``world_size`` > 1, one instance per DDP process): every process draws the same seeded global
    batch of ``batch_size`` rows and keeps its ``rank``-th share (rows ``rank::world_size``), so the global batch,
    and hence the meaning of ``batch_size`` and ``lr``, does not depend on the number of processes. A final batch
    too small to give every process a row is skipped by all of them (DDP needs every process to step).
    ``pin_memory`` puts each batch in page-locked memory so ``.to(cuda, non_blocking=True)`` overlaps the copy.
    """

    def __init__(self, cache_dir: str | Path, split: str, pathologies, *, batch_size: int, shuffle: bool = False,
                 augment: bool = False, seed: int = 0, pin_memory: bool = False, rank: int = 0, world_size: int = 1,
                 encoding: str = "u_ignore", blank: str = "masked", oversample: bool = False,
                 targets_override=None):
        import torch

        from xraypipe.encodings import encode_uncertain_labels

        index = load_cache_index(cache_dir)
        self.index = index[index["split"] == split].sort_values("cache_row").reset_index(drop=True)
        self.images = load_cache_split(cache_dir, split)
        if len(self.images) != len(self.index):
            raise ValueError(f"{cache_dir}: {split}.npy has {len(self.images)} images but index.csv lists {len(self.index)}")
        labels = self.index[list(pathologies)].to_numpy(dtype=np.float32)
        # uncertain (-1) and blank (NaN) labels become targets + a loss mask (default: both masked out)
        targets, mask = encode_uncertain_labels(labels, encoding, blank)
        if targets_override is not None:  # e.g. U-SelfTrained's relabelled targets
            targets, mask = (np.asarray(a, dtype=np.float32) for a in targets_override)
        self.targets, self.mask = torch.from_numpy(targets), torch.from_numpy(mask)
        self.sample_weights = oversampling_weights(targets, mask) if oversample else None
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.pin_memory = pin_memory
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.rank, self.world_size = rank, world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.index)
        full, rest = divmod(n, self.batch_size)
        return full + (1 if rest >= self.world_size else 0)

    def __iter__(self):
        import torch

        n = len(self.index)
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.sample_weights is not None and self.shuffle:
            # oversampling: an epoch of n draws with replacement, rare-label images more likely
            order = rng.choice(n, size=n, replace=True, p=self.sample_weights / self.sample_weights.sum())
        else:
            order = rng.permutation(n) if self.shuffle else np.arange(n)
        # rank 0 keeps the single-process stream; other ranks get their own augmentation draws
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch + 1_000_000_007 * self.rank)
        for start in range(0, n, self.batch_size):
            rows = np.sort(order[start:start + self.batch_size])  # sorted reads are sequential on disk
            if self.world_size > 1:
                if len(rows) < self.world_size:
                    continue
                rows = rows[self.rank::self.world_size]
            batch = torch.from_numpy(np.ascontiguousarray(self.images[rows])).unsqueeze(1)
            x = batch.float().div_(255.0)
            if self.augment:
                x = augment_batch(x, generator)
            x = x.sub_(GRAY_MEAN).div_(GRAY_STD)
            idx = torch.from_numpy(rows)
            y, m = self.targets[idx], self.mask[idx]
            if self.pin_memory:
                x, y, m = x.pin_memory(), y.pin_memory(), m.pin_memory()
            yield x, y, m, rows


def oversampling_weights(targets: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-image sampling weight for oversampling rare labels (seed 003): an image weighs as much as its rarest
    positive label needs to be seen as often as the most common one (count_max / count_label); images without a
    positive label weigh 1."""
    positives = (targets * mask) > 0.5
    counts = positives.sum(axis=0).astype(float)
    boost = np.where(counts > 0, counts.max() / np.maximum(counts, 1), 0.0)
    weights = np.where(positives, boost[None, :], 0.0).max(axis=1, initial=0.0)
    return np.maximum(weights, 1.0)


def augment_batch(x, generator, max_rotate_deg: float = 7.0, max_shift: float = 0.06, scale=(0.92, 1.08),
                  contrast=(0.8, 1.2), brightness: float = 0.08):
    """Small random affine (rotation, scale, shift) and exposure jitter on a batch in [0, 1].

    No horizontal flips: the heart's side is anatomical information in a chest film.
    """
    import torch
    import torch.nn.functional as F

    b = x.shape[0]

    def uniform(lo, hi):
        return torch.rand(b, generator=generator) * (hi - lo) + lo

    angle = uniform(-max_rotate_deg, max_rotate_deg) * math.pi / 180
    factor = 1.0 / uniform(*scale)
    tx, ty = uniform(-max_shift, max_shift) * 2, uniform(-max_shift, max_shift) * 2
    cos, sin = torch.cos(angle) * factor, torch.sin(angle) * factor
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    gain = uniform(*contrast).view(b, 1, 1, 1)
    shift = uniform(-brightness, brightness).view(b, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * gain + mean + shift).clamp_(0.0, 1.0)
