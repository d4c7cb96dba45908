"""Decode every image once into memory-mappable uint8 arrays, one per split, shared by all variants.

Output for a dataset (``build_cache``): ``<split>.npy`` of shape (N, S, S) uint8 for each split,
``index.csv`` (the manifest rows in cache order, with ``cache_row``) and ``skipped.csv`` (images left out
under ``unreadable: skip``; only the header otherwise). Loading a batch is then a slice of a memory map
instead of a PNG decode.

Sources: an image file (``path``), or -- for datasets shipped as arrays (MedMNIST ``.npz``) -- a manifest row
with ``array_key``/``array_index``: the image is ``np.load(path)[array_key][array_index]`` and is copied
(resized if needed) without materialising any file.

Unreadable images (missing, truncated, corrupt): ``unreadable="error"`` (default) stops with an
``ImageDecodeError`` naming the file; ``unreadable="skip"`` leaves them out of the cache and lists them
(split, image_id, path, error) in ``skipped.csv``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from xraypipe.atomic import atomic_path, write_csv
from xraypipe.splits import SPLITS, check_patient_leakage

# Decompression-bomb guard off: real radiographs exceed PIL's default pixel limit (e.g. 3000x3000 CheXpert full).
Image.MAX_IMAGE_PIXELS = None


class ImageDecodeError(ValueError):
    """An image file is missing, truncated, corrupt or of an unsupported kind; the message names the file."""


def to_gray_uint8(image: Image.Image, path: str = "<image>") -> np.ndarray:
    """Convert any PIL mode to an 8-bit grayscale array.

    - L / P / 1: as is (palette and bilevel converted to L);
    - I;16*, I, F (16-bit and float radiographs): linear min-max window onto 0..255, since many 16-bit
      files use only 10-12 bits and a fixed /257 scale would render them nearly black;
    - RGB / RGBA / LA: alpha dropped (composited on black), luminance (ITU-R 601) as gray.
    """
    mode = image.mode
    if mode == "L":
        return np.asarray(image, dtype=np.uint8)
    if mode in ("P", "1", "CMYK", "YCbCr", "LAB", "HSV"):
        return np.asarray(image.convert("RGB").convert("L"), dtype=np.uint8)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        if rgba.getchannel("A").getextrema() == (255, 255):  # opaque (e.g. NIH's RGBA files): compositing is a no-op
            return np.asarray(rgba.convert("L"), dtype=np.uint8)
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("L"), dtype=np.uint8)
    if mode == "RGB":
        return np.asarray(image.convert("L"), dtype=np.uint8)
    if mode.startswith("I") or mode == "F":
        arr = np.asarray(image).astype(np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        if hi <= lo:
            return np.zeros(arr.shape, dtype=np.uint8)
        return np.round((arr - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    raise ImageDecodeError(f"{path}: unsupported image mode {mode!r}")


RESIZE_MODES = ("pad", "crop", "stretch")


def resize_square(gray: np.ndarray, size: int, how: str = "pad") -> np.ndarray:
    """Resize a 2-D uint8 array to size x size.

    pad: letterbox (keep the whole image and its aspect ratio, pad with black); crop: centre crop to
    square; stretch: ignore the aspect ratio. ``reducing_gap`` lets PIL shrink by integer factors first,
    which keeps large downscales fast and alias-free.
    """
    return _resize_gray_image(Image.fromarray(gray, mode="L"), size, how)


def _resize_gray_image(image: Image.Image, size: int, how: str = "pad") -> np.ndarray:
    """``resize_square`` on a mode-L PIL image (no round trip through numpy)."""
    w, h = image.size
    if how == "crop" and h != w:
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        image = image.crop((left, top, left + side, top + side))
    elif how == "pad" and h != w:
        side = max(h, w)
        canvas = Image.new("L", (side, side), 0)
        canvas.paste(image, ((side - w) // 2, (side - h) // 2))
        image = canvas
    elif how not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {how!r}")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(image, dtype=np.uint8)


def load_image(path: str | os.PathLike, size: int, how: str = "pad") -> np.ndarray:
    """Decode one image file to a size x size uint8 gray array; ImageDecodeError names the file."""
    path = str(path)
    if how not in RESIZE_MODES:  # checked here: a ValueError inside the decode block would read as a decode error
        raise ValueError(f"unknown resize mode {how!r}")
    try:
        with Image.open(path) as image:
            image.draft("L", (size, size))  # JPEG only: decode at reduced scale
            image.load()
            if image.mode == "L" and min(image.size) > 0:  # 8-bit gray (most radiographs): resize the decoded image
                return _resize_gray_image(image, size, how)
            gray = to_gray_uint8(image, path)
    except FileNotFoundError:
        raise ImageDecodeError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, ImageDecodeError):
            raise
        raise ImageDecodeError(f"{path}: cannot decode image ({type(exc).__name__}: {exc})") from None
    if gray.ndim != 2 or min(gray.shape) == 0:
        raise ImageDecodeError(f"{path}: unexpected image shape {gray.shape}")
    return resize_square(gray, size, how)


_ARRAYS: dict = {}  # (npz path, key) -> array, the one most recently used (bounded memory)


def load_array_image(path: str, key: str, index: int, size: int, how: str = "pad") -> np.ndarray:
    """Image ``index`` of array ``key`` in the .npz ``path`` as a size x size uint8 gray array."""
    where = f"{path}[{key}][{index}]"
    arr = _ARRAYS.get((path, key))
    if arr is None:
        try:
            with np.load(path) as data:
                arr = np.asarray(data[key])
        except FileNotFoundError:
            raise ImageDecodeError(f"{path}: array file not found") from None
        except KeyError:
            raise ImageDecodeError(f"{path}: no array {key!r}") from None
        except (OSError, ValueError, EOFError) as exc:
            raise ImageDecodeError(f"{path}: cannot read array {key!r} ({type(exc).__name__}: {exc})") from None
        _ARRAYS.clear()
        _ARRAYS[(path, key)] = arr
    if not 0 <= index < len(arr):
        raise ImageDecodeError(f"{where}: index out of range (array has {len(arr)} images)")
    img = arr[index]
    if img.ndim == 3 and img.shape[-1] in (3, 4):
        gray = to_gray_uint8(Image.fromarray(img.astype(np.uint8)), where)
    elif img.ndim == 2:
        gray = img.astype(np.uint8)
    else:
        raise ImageDecodeError(f"{where}: unexpected image shape {img.shape}")
    return resize_square(gray, size, how)


def _load_job(args):
    path, size, how, key, index, lenient = args
    try:
        if isinstance(key, str) and key:
            return load_array_image(path, key, int(index), size, how)
        return load_image(path, size, how)
    except ImageDecodeError as exc:
        if lenient:
            return str(exc)
        raise


_SHARED_OUT = None  # the output memory map, inherited by forked workers (see decode_into)


def _write_job(args):
    """Worker side of a pool writing straight into the shared memory map: returns None, or the error text."""
    row, job = args
    array = _load_job(job)
    if isinstance(array, str):
        return array
    _SHARED_OUT[row] = array
    return None


def decode_into(paths: list[str], out: np.ndarray, size: int, how: str, threads: int, progress=None,
                array_keys=None, array_indices=None, unreadable: str = "error") -> list[tuple[int, str]]:
    """Decode ``paths`` (or their array rows) into ``out[i]`` using ``threads`` worker processes (PNG decoding
    holds the GIL). Returns the (row, error) pairs left out under ``unreadable="skip"`` (their ``out`` rows are 0)."""
    if unreadable not in ("error", "skip"):
        raise ValueError(f"unknown unreadable policy {unreadable!r}; expected error or skip")
    keys = list(array_keys) if array_keys is not None else [None] * len(paths)
    indices = list(array_indices) if array_indices is not None else [None] * len(paths)
    jobs = [(p, size, how, k, i, unreadable == "skip") for p, k, i in zip(paths, keys, indices)]
    uses_arrays = any(isinstance(k, str) and k for k in keys)
    global _SHARED_OUT
    # With fork, workers inherit a file-backed memory map (MAP_SHARED): they write their rows into it directly and
    # return only a status, so the parent does no unpickling or copying and both cores stay on decoding.
    shared = (isinstance(out, np.memmap) and out.mode in ("r+", "w+") and os.name == "posix"
              and "fork" in mp.get_all_start_methods())
    chunksize = max(1, min(8, len(jobs) // (max(threads, 1) * 32)))
    # small chunks: an image costs ~10 ms to decode, so IPC is negligible, and no worker idles at the end while
    # another finishes a long last chunk
    if threads <= 1 or len(jobs) < 2 * threads or uses_arrays:  # arrays: a copy, no decoding worth a pool
        results = map(_load_job, jobs)
        pool, direct = None, False
    elif shared:
        _SHARED_OUT = out
        pool, direct = mp.get_context("fork").Pool(threads), True
        results = pool.imap(_write_job, enumerate(jobs), chunksize=chunksize)
    else:
        ctx = mp.get_context("fork" if os.name == "posix" else "spawn")
        pool, direct = ctx.Pool(threads), False
        results = pool.imap(_load_job, jobs, chunksize=chunksize)
    failures = []
    try:
        for i, array in enumerate(results):
            if isinstance(array, str):
                failures.append((i, array))
                out[i] = 0
            elif not direct:
                out[i] = array
            if progress is not None:
                progress.update(1)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        _SHARED_OUT = None
        _ARRAYS.clear()
    return failures


SKIPPED_COLUMNS = ["split", "image_id", "path", "error"]


def build_cache(manifest: pd.DataFrame, out_dir: str | os.PathLike, *, image_size: int, resize: str = "pad",
                threads: int = 1, progress: bool = True, unreadable: str = "error",
                patient_wise: bool = True) -> pd.DataFrame:
    """Write ``<split>.npy`` (uint8, N x S x S) for each split, ``index.csv`` and ``skipped.csv``; return the index.
    ``patient_wise=False`` only for a dataset configured with an image-level split (``split.unit: image``)."""
    from xraypipe.job_log import progress as progress_bar

    if "split" not in manifest.columns:
        raise ValueError("manifest has no 'split' column; run the splits stage first")
    if patient_wise:
        check_patient_leakage(manifest)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    parts, skipped = [], []
    for split in SPLITS:
        part = manifest[manifest["split"] == split].reset_index(drop=True)
        with atomic_path(out_dir / f"{split}.npy") as tmp:
            array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(part), image_size, image_size))
            bar = progress_bar(total=len(part), desc=f"decode {split}", unit="img", enabled=progress)
            failures = decode_into(part["path"].tolist(), array, image_size, resize, threads, bar,
                                   array_keys=part["array_key"].tolist() if "array_key" in part else None,
                                   array_indices=part["array_index"].tolist() if "array_index" in part else None,
                                   unreadable=unreadable)
            bar.close()
            array.flush()
            if failures:
                bad = [row for row, _ in failures]
                keep = np.setdiff1d(np.arange(len(part)), bad)
                compact_path = tmp.with_name(tmp.name + ".compact.npy")
                compact = np.lib.format.open_memmap(compact_path, mode="w+", dtype=np.uint8,
                                                    shape=(len(keep), image_size, image_size))
                for j, row in enumerate(keep):
                    compact[j] = array[row]
                compact.flush()
                del compact
                os.replace(compact_path, tmp)
                for row, error in failures:
                    skipped.append({"split": split, "image_id": part.at[row, "image_id"], "path": part.at[row, "path"],
                                    "error": error})
                part = part.iloc[keep].reset_index(drop=True)
            del array
        part.insert(0, "cache_row", np.arange(len(part)))
        parts.append(part)
    index = pd.concat(parts, ignore_index=True)
    write_csv(out_dir / "skipped.csv", pd.DataFrame(skipped, columns=SKIPPED_COLUMNS))
    write_csv(out_dir / "index.csv", index)
    return index


def load_cache_split(cache_dir: str | os.PathLike, split: str) -> np.ndarray:
    return np.load(Path(cache_dir) / f"{split}.npy", mmap_mode="r")


def load_cache_index(cache_dir: str | os.PathLike) -> pd.DataFrame:
    return pd.read_csv(Path(cache_dir) / "index.csv", dtype={"patient_id": str, "image_id": str, "view": str,
                                                             "official_split": str, "study_id": str,
                                                             "body_part": str, "array_key": str}, keep_default_na=True)
