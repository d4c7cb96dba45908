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
from xraypipe.standardize import GRAY_MEAN, GRAY_STD, Normalization, normalized_float  # noqa: F401  (the feed's API)


class CacheBatches:
    """Iterable of (images float32 B x 1 x S x S, targets B x L, mask B x L) torch tensors for one split.

    Distributed (``world_size`` > 1, one instance per DDP process): every process draws the same seeded global
    batch of ``batch_size`` rows and keeps its ``rank``-th share (rows ``rank::world_size``), so the global batch,
    and hence the meaning of ``batch_size`` and ``lr``, does not depend on the number of processes. A final batch
    too small to give every process a row is skipped by all of them (DDP needs every process to step).
    ``pin_memory`` puts each batch in page-locked memory so ``.to(cuda, non_blocking=True)`` overlaps the copy.

    ``workers`` > 0 (``training.num_workers``): that many threads prepare the next batches (read, augment,
    normalise) while the loop works on the current one, like a DataLoader's workers but threads, since the
    kernels release the GIL. The batches are the same as with ``workers=0``: rows and augmentation draws are still
    taken in batch order in the iterating thread (only the pixel work moves), and with ``reuse_buffer`` a ring of
    ``workers + 2`` buffers keeps each batch intact until the next one is drawn.

    ``augment_device`` (a torch device; the training loop passes its CUDA device): augmented batches are copied
    to it as uint8 (a quarter of the float bytes) and augmented and normalised there, with the same draws, so the
    CPU only gathers rows. Unaugmented batches keep the compiled host kernel.
    """

    def __init__(self, cache_dir: str | Path, split, pathologies, *, batch_size: int, shuffle: bool = False,
                 augment: bool = False, seed: int = 0, pin_memory: bool = False, rank: int = 0, world_size: int = 1,
                 encoding: str = "u_ignore", blank: str = "masked", oversample: bool = False,
                 targets_override=None, augment_args: dict | None = None, normalization=None,
                 reuse_buffer: bool = False, workers: int = 0, augment_device=None, minority_copies=None):
        """``split``: a split name (every row of ``<split>.npy``), or a row selection: a DataFrame with ``split``
        and ``cache_row`` columns naming rows of any splits (e.g. a cross-validation fold of train + val), read
        through the existing memory maps (``CacheRows``), never copied. Rows are then ordered by (split,
        cache_row); ``rows`` yielded with each batch are positions in ``self.index``.

        ``minority_copies`` (``variants.<v>.minority_copies``): ``copies`` extra copies of every image of one class
        (``of``), each augmented once by its own seeded draw (``draw_copy_augmentation``), the same every epoch:
        they are positions ``len(self.index)`` and up (``self.copy_source`` names the image each copies)."""
        import torch

        from xraypipe.encodings import encode_uncertain_labels

        index = load_cache_index(cache_dir)
        if isinstance(split, str):
            self.index = index[index["split"] == split].sort_values("cache_row").reset_index(drop=True)
            self.images = load_cache_split(cache_dir, split)
            if len(self.images) != len(self.index):
                raise ValueError(f"{cache_dir}: {split}.npy has {len(self.images)} images but index.csv lists "
                                 f"{len(self.index)}")
        else:
            self.index = select_index_rows(index, split, source=str(Path(cache_dir) / "index.csv"))
            self.images = CacheRows(cache_dir, self.index["split"], self.index["cache_row"])
        labels = self.index[list(pathologies)].to_numpy(dtype=np.float32)
        # uncertain (-1) and blank (NaN) labels become targets + a loss mask (default: both masked out)
        targets, mask = encode_uncertain_labels(labels, encoding, blank)
        if targets_override is not None:  # e.g. U-SelfTrained's relabelled targets
            targets, mask = (np.asarray(a, dtype=np.float32) for a in targets_override)
        self.copy_source, self.copy_draws = minority_copy_plan(targets, mask, minority_copies, seed)
        targets, mask = (np.concatenate([a, a[self.copy_source]]) for a in (targets, mask))
        self.targets, self.mask = torch.from_numpy(targets), torch.from_numpy(mask)
        self.sample_weights = oversampling_weights(targets, mask) if oversample else None
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.augment_args = dict(augment_args or {})  # augment_batch's keyword arguments (ranges)
        # reuse_buffer: every batch is written into one float32 buffer, so a batch is valid only until the next is
        # drawn -- right for a training loop that consumes each batch at once (twice the rate: no fresh pages);
        # never combined with pinned memory, whose asynchronous copies may still read the buffer
        self.reuse_buffer = bool(reuse_buffer) and not pin_memory
        self._float_buffers = []
        if int(workers) < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.workers = int(workers)
        # input standardisation: a standardize.Normalization, a model file's metadata['normalization'], or None
        # (the fixed mean 0.5 / std 0.25)
        self.normalization = Normalization.from_meta(normalization)
        self.normalization.check_size(int(self.images.shape[-1]), what=f"cached images of {cache_dir}")
        self.augment_device = torch.device(augment_device) if augment_device is not None else None
        self.seed = seed
        self.epoch = 0
        self.pin_memory = pin_memory
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.rank, self.world_size = rank, world_size

    def _buffer(self, slot: int = 0):
        """Reused float32 batch buffer number ``slot`` (``reuse_buffer``), or None for a fresh tensor per batch."""
        if not self.reuse_buffer:
            return None
        import torch

        while len(self._float_buffers) <= slot:
            self._float_buffers.append(torch.empty((self.batch_size, *self.images.shape[1:]), dtype=torch.float32))
        return self._float_buffers[slot]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def n_images(self) -> int:
        """The images of an epoch: the split's rows and the minority copies."""
        return len(self.index) + len(self.copy_source)

    def __len__(self) -> int:
        n = self.n_images
        full, rest = divmod(n, self.batch_size)
        return full + (1 if rest >= self._smallest_batch() else 0)

    def _smallest_batch(self) -> int:
        """The fewest images a (last) batch may hold: one per rank; two per rank when training (shuffle), as
        BatchNorm cannot normalise a single image (that image waits for the next epoch's permutation)."""
        return self.world_size * (2 if self.shuffle and self.batch_size > 1 else 1)

    def _epoch_rows(self):
        """This epoch's batches as row positions: a seeded permutation (or oversampling draw), sorted within each
        batch (sorted reads are sequential on disk), this rank's share of each global batch."""
        n = self.n_images
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.sample_weights is not None and self.shuffle:
            # oversampling: an epoch of n draws with replacement, rare-label images more likely
            order = rng.choice(n, size=n, replace=True, p=self.sample_weights / self.sample_weights.sum())
        else:
            order = rng.permutation(n) if self.shuffle else np.arange(n)
        for start in range(0, n, self.batch_size):
            rows = np.sort(order[start:start + self.batch_size])
            if len(rows) < self._smallest_batch():
                continue
            if self.world_size > 1:
                rows = rows[self.rank::self.world_size]
            yield rows

    def _draws(self, rows, generator):
        """The batch's augmentation parameters, drawn from the epoch's generator (in batch order), or None."""
        return draw_augmentation(len(rows), generator, **self.augment_args) if self.augment else None

    def _images(self, rows, draws, out, threads=None):
        """The batch's float32 images B x 1 x S x S (into ``out`` when given), augmented with ``draws``."""
        copies = np.flatnonzero(rows >= len(self.index))
        source = rows if not len(copies) else np.where(rows < len(self.index), rows,
                                                         self.copy_source[np.maximum(rows - len(self.index), 0)])
        if draws is None and not len(copies):
            return self.normalization.apply(self.images, rows=source, out=out, threads=threads)
        import torch

        u8 = torch.from_numpy(np.ascontiguousarray(self.images[source]))
        if draws is None:  # unaugmented but for the copies: the originals by the host kernel, the copies here
            x = self.normalization.apply(self.images, rows=source, out=out, threads=threads)
            unit = u8[copies].unsqueeze(1).float().div_(255.0)
            picked = {k: v[rows[copies] - len(self.index)] for k, v in self.copy_draws.items()}
            x[torch.from_numpy(copies)] = self.normalization.apply_unit(apply_copy_augmentation(unit, picked))
            return x
        if self.augment_device is not None:
            if self.pin_memory:
                u8 = u8.pin_memory()
            u8 = u8.to(self.augment_device, non_blocking=self.pin_memory)
            draws = {k: (v.to(self.augment_device) if v is not None else None) for k, v in draws.items()}
        x = u8.unsqueeze(1).float().div_(255.0)
        if len(copies):  # a copy's own fixed augmentation first, then the epoch's
            picked = {k: v[rows[copies] - len(self.index)].to(x.device) for k, v in self.copy_draws.items()}
            where = torch.from_numpy(copies).to(x.device)
            x[where] = apply_copy_augmentation(x[where], picked)
        return self.normalization.apply_unit(apply_augmentation(x, draws))

    def _prepared_ahead(self, epoch_rows, generator):
        """(rows, images) of each batch, prepared by ``self.workers`` threads that run ahead of the loop by up to
        ``workers + 1`` batches, each in its own buffer slot (with ``reuse_buffer``)."""
        import threading
        from concurrent.futures import ThreadPoolExecutor

        # the epoch's batches and augmentation draws, taken here, in batch order: the stream of workers=0
        plan = [(rows, self._draws(rows, generator)) for rows in epoch_rows]
        # the batch the loop holds, one per worker, and one of slack so that a worker seldom waits for a slot
        slots = self.workers + 2
        buffers = [self._buffer(slot) for slot in range(slots)]
        released, stop = [0], [False]  # batches the loop is done with (0 .. released - 1); the loop has stopped
        turn = threading.Condition()

        def prepare(j):
            with turn:  # batch j writes slot j % slots: wait until the loop is done with batch j - slots
                turn.wait_for(lambda: stop[0] or released[0] > j - slots)
                if stop[0]:
                    return None
            rows, draws = plan[j]
            # each worker runs the single-threaded kernel: the workers are the parallelism
            return self._images(rows, draws, buffers[j % slots], 1)

        # the workers take batches in order and never wait for the loop to hand them one; the loop waits (once a
        # batch) only when it is ahead of them
        with ThreadPoolExecutor(self.workers, thread_name_prefix="xraypipe-batches") as pool:
            futures = [pool.submit(prepare, j) for j in range(len(plan))]
            try:
                for k, future in enumerate(futures):
                    with turn:  # the loop asks for batch k, so it is done with batch k - 1
                        released[0] = k
                        turn.notify_all()
                    yield plan[k][0], future.result()
            finally:  # the loop stopped early or a worker failed: unblock the waiting, drop the queued
                with turn:
                    stop[0] = True
                    turn.notify_all()
                for future in futures:
                    future.cancel()

    def __iter__(self):
        import torch

        # rank 0 keeps the single-process stream; other ranks get their own augmentation draws
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch + 1_000_000_007 * self.rank)
        epoch_rows = self._epoch_rows()
        if self.workers:
            prepared = self._prepared_ahead(epoch_rows, generator)
        else:
            prepared = ((rows, self._images(rows, self._draws(rows, generator), self._buffer()))
                        for rows in epoch_rows)
        for rows, x in prepared:
            idx = torch.from_numpy(rows)
            y, m = self.targets[idx], self.mask[idx]
            if self.pin_memory:
                y, m = y.pin_memory(), m.pin_memory()
                x = x if x.device.type != "cpu" else x.pin_memory()  # made on the device already
            yield x, y, m, rows


def select_index_rows(index, selection, source: str = "index.csv"):
    """The rows of a cache ``index`` named by ``selection`` (a DataFrame with ``split`` and ``cache_row``), ordered
    by (split, cache_row). Errors name the first selected row the index does not have, or a duplicate."""
    import pandas as pd

    missing_cols = [c for c in ("split", "cache_row") if c not in selection.columns]
    if missing_cols:
        raise ValueError(f"row selection lacks column(s) {missing_cols} (needs split and cache_row)")
    wanted = pd.DataFrame({"split": selection["split"].astype(str).to_numpy(),
                           "cache_row": selection["cache_row"].astype(np.int64).to_numpy()})
    dup = wanted.duplicated()
    if dup.any():
        r = wanted[dup].iloc[0]
        raise ValueError(f"row selection names split {r['split']!r} cache_row {r['cache_row']} twice")
    keyed = index.assign(cache_row=index["cache_row"].astype(np.int64))
    merged = wanted.merge(keyed, on=["split", "cache_row"], how="left", indicator=True)
    absent = merged["_merge"] != "both"
    if absent.any():
        r = merged[absent].iloc[0]
        raise ValueError(f"{source}: no row with split {r['split']!r} and cache_row {r['cache_row']} "
                         f"({int(absent.sum())} selected rows missing)")
    return (merged.drop(columns="_merge").sort_values(["split", "cache_row"], kind="stable")
            .reset_index(drop=True)[list(index.columns)])


class CacheRows:
    """A read-only array-like view of chosen rows of a cache's ``<split>.npy`` memory maps.

    ``view[positions]`` (an int, a slice or an integer array) returns the images of those positions, stacked in
    the order asked, reading each split's rows in ascending order (sequential on disk). Nothing is copied up
    front: a cross-validation fold over train + val costs no extra disk or memory.
    """

    def __init__(self, cache_dir: str | Path, splits, cache_rows):
        self.splits = np.asarray(splits, dtype=str)
        self.rows = np.asarray(cache_rows, dtype=np.int64)
        if self.splits.shape != self.rows.shape or self.rows.ndim != 1:
            raise ValueError("CacheRows: splits and cache_rows must be 1-D sequences of one length")
        self.arrays = {}
        for name in dict.fromkeys(self.splits.tolist()):
            array = load_cache_split(cache_dir, name)
            chosen = self.rows[self.splits == name]
            bad = chosen[(chosen < 0) | (chosen >= len(array))]
            if len(bad):
                raise ValueError(f"{Path(cache_dir) / (name + '.npy')}: cache_row {int(bad[0])} out of range "
                                 f"(the array has {len(array)} images)")
            self.arrays[name] = array
        first = next(iter(self.arrays.values()), None)
        image_shape = tuple(first.shape[1:]) if first is not None else (0, 0)
        for name, array in self.arrays.items():
            if tuple(array.shape[1:]) != image_shape:
                raise ValueError(f"{cache_dir}: {name}.npy images are {array.shape[1:]}, others {image_shape}")
        self.shape = (len(self.rows), *image_shape)
        self.dtype = first.dtype if first is not None else np.dtype(np.uint8)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, positions):
        if isinstance(positions, (int, np.integer)):
            return self[np.array([positions])][0]
        positions = np.arange(len(self))[positions] if isinstance(positions, slice) else np.asarray(positions)
        out = np.empty((len(positions), *self.shape[1:]), dtype=self.dtype)
        splits, rows = self.splits[positions], self.rows[positions]
        for name, array in self.arrays.items():
            where = np.flatnonzero(splits == name)
            if len(where) == 0:
                continue
            order = np.argsort(rows[where], kind="stable")
            out[where[order]] = array[rows[where][order]]
        return out


def minority_copy_plan(targets: np.ndarray, mask: np.ndarray, settings: dict | None, seed: int):
    """(positions of the images the copies copy, in copy order; each copy's augmentation draw) for
    ``variants.<v>.minority_copies``; no copies: an empty plan. ``of: negative``: images with no known positive
    label; ``positive``: images with any."""
    copies = int(settings["copies"]) if settings else 0  # the validated variant's section (schema default 0)
    if copies <= 0:
        return np.zeros(0, dtype=np.int64), {}
    import torch

    positive = ((targets * mask) > 0.5).any(axis=1)
    members = np.flatnonzero(~positive if settings["of"] == "negative" else positive)
    source = np.tile(members, copies).astype(np.int64)
    generator = torch.Generator().manual_seed(int(seed) * 7_919 + 104_729)  # apart from the epochs' streams
    draws = draw_copy_augmentation(len(source), generator, settings["flip_probability"], settings["max_rotate_deg"],
                                   settings["brightness"])
    return source, draws


def draw_copy_augmentation(b: int, generator, flip_probability: float, max_rotate_deg: float, brightness) -> dict:
    """The pediatric pneumonia study's copy augmentation for ``b`` copies: a horizontal flip with
    ``flip_probability``, a rotation uniform in +-``max_rotate_deg``, a brightness factor uniform in
    ``brightness``."""
    import torch

    flip = torch.rand(b, generator=generator) < flip_probability
    angle = (torch.rand(b, generator=generator) * 2 - 1) * max_rotate_deg * math.pi / 180
    lo, hi = brightness
    gain = torch.rand(b, generator=generator) * (hi - lo) + lo
    sign = torch.where(flip, -1.0, 1.0)  # a flip is a mirrored x axis of the sampling grid
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos * sign, -sin, torch.zeros(b)], 1),
                         torch.stack([sin * sign, cos, torch.zeros(b)], 1)], 1)
    return {"theta": theta, "gain": gain.view(b, 1, 1, 1)}


def apply_copy_augmentation(x, draws: dict):
    """``draw_copy_augmentation``'s draws on copies in [0, 1] (B x 1 x S x S): rotate (and flip), then brighten,
    clipped to [0, 1]."""
    import torch.nn.functional as F

    grid = F.affine_grid(draws["theta"], list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return x.mul_(draws["gain"]).clamp_(0.0, 1.0)


def oversampling_weights(targets: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-image sampling weight for oversampling rare labels (the ChestX-ray8 study): an image weighs as much as its rarest
    positive label needs to be seen as often as the most common one (count_max / count_label); images without a
    positive label weigh 1."""
    positives = (targets * mask) > 0.5
    counts = positives.sum(axis=0).astype(float)
    boost = np.where(counts > 0, counts.max() / np.maximum(counts, 1), 0.0)
    weights = np.where(positives, boost[None, :], 0.0).max(axis=1, initial=0.0)
    return np.maximum(weights, 1.0)


def augment_batch(x, generator, **ranges):
    """Small random affine (rotation, scale, shift) and exposure jitter on a batch in [0, 1]
    (``draw_augmentation`` then ``apply_augmentation``)."""
    return apply_augmentation(x, draw_augmentation(x.shape[0], generator, **ranges))


def draw_augmentation(b: int, generator, max_rotate_deg: float = 7.0, max_shift: float = 0.06, scale=(0.92, 1.08),
                      contrast=(0.8, 1.2), brightness: float = 0.08, gamma=(1.0, 1.0), flip: float = 0.0) -> dict:
    """The random parameters of ``b`` images' augmentation, drawn from ``generator``: an affine (rotation, scale,
    shift), a per-image gamma (x ** g, drawn log-uniformly, mimicking other detector response curves; (1, 1) =
    off), contrast gain and brightness shift. Horizontal flips only when asked (``flip``: their chance; the
    heart's side is anatomical information in a chest film, but the CheXpert study flipped at 0.5). Drawing is separate from applying so that batches prepared ahead by worker threads consume
    the generator in batch order."""
    import torch

    def uniform(lo, hi):
        return torch.rand(b, generator=generator) * (hi - lo) + lo

    angle = uniform(-max_rotate_deg, max_rotate_deg) * math.pi / 180
    factor = 1.0 / uniform(*scale)
    tx, ty = uniform(-max_shift, max_shift) * 2, uniform(-max_shift, max_shift) * 2
    cos, sin = torch.cos(angle) * factor, torch.sin(angle) * factor
    if flip > 0:  # a mirrored x axis of the sampling grid (drawn only when on: the default stream is unchanged)
        sign = torch.where(torch.rand(b, generator=generator) < flip, -1.0, 1.0)
    else:
        sign = torch.ones(b)
    theta = torch.stack([torch.stack([cos * sign, -sin, tx], 1), torch.stack([sin * sign, cos, ty], 1)], 1)
    g = None
    if tuple(gamma) != (1.0, 1.0):
        g = torch.exp(uniform(math.log(gamma[0]), math.log(gamma[1]))).view(b, 1, 1, 1)
    gain = uniform(*contrast).view(b, 1, 1, 1)
    shift = uniform(-brightness, brightness).view(b, 1, 1, 1)
    return {"theta": theta, "gamma": g, "gain": gain, "shift": shift}


def apply_augmentation(x, draws: dict):
    """``draw_augmentation``'s parameters applied to a batch in [0, 1] (B x 1 x S x S); the result is in [0, 1]."""
    import torch.nn.functional as F

    grid = F.affine_grid(draws["theta"], list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if draws["gamma"] is not None:
        x = x.clamp(min=0.0).pow(draws["gamma"])
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * draws["gain"] + mean + draws["shift"]).clamp_(0.0, 1.0)
