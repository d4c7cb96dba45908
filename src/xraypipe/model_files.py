"""Reading and writing the pipeline's PyTorch files (models, detectors, resume checkpoints), safely and stably.

- Reading never runs code from the file: ``torch.load(..., weights_only=True)`` unpickles only tensors and plain
  Python values (dicts, lists, strings, numbers). A file whose pickle asks for anything else (``os.system``, a
  class) is refused with one :class:`UnsafeModelFileError` naming the file; nothing in it is executed.
- A truncated or otherwise unreadable file raises :class:`CorruptModelFileError` naming the file.
- Writing is atomic, and equal contents give equal bytes: ``torch.save`` names the archive's inner folder after
  the file it writes to (here a random temporary name), so the archive is built in memory under a fixed name
  first and then written in one piece.
"""

from __future__ import annotations

import io
import os
import pickle
import time
import zipfile
from pathlib import Path

from xraypipe.atomic import atomic_path

ARCHIVE_NAME = "archive"  # the inner folder of every file written here, whatever its path


class ModelFileError(ValueError):
    """A model, detector or checkpoint file cannot be used; the message names the file."""


class UnsafeModelFileError(ModelFileError):
    """The file's pickle references code (a global other than tensors and plain types): refused, not run."""


class CorruptModelFileError(ModelFileError):
    """The file is truncated or not a PyTorch archive."""


def plain(obj):
    """``obj`` with numpy scalars and arrays turned into Python numbers and lists (tensors kept), so that the file
    loads with ``weights_only=True``."""
    import numpy as np

    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj)
    if isinstance(obj, (np.generic, np.ndarray)):
        return obj.tolist()
    return obj


def save_torch_file(obj, path: str | os.PathLike) -> Path:
    """``torch.save(plain(obj))`` to ``path`` atomically, with bytes that depend on ``obj`` only."""
    import torch

    buffer = io.BytesIO()
    torch.save(plain(obj), buffer)
    data = buffer.getvalue()
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def load_torch_file(path: str | os.PathLike, what: str = "model file"):
    """The object in a file written by :func:`save_torch_file` (or any weights-only PyTorch file)."""
    import torch

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: {what} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = str(exc).strip().splitlines()
        refused = next((line for line in lines if "global" in line.lower()), None)
        if refused is None:  # not a pickle at all (random bytes, a text file)
            raise CorruptModelFileError(f"{path}: not a PyTorch file ({(lines or ['unreadable'])[0][:200]})") from None
        raise UnsafeModelFileError(
            f"{path}: refused to load this {what}: it holds more than tensors and plain values, and loading it "
            f"could run code ({refused.strip()[:200]})") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError, IndexError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CorruptModelFileError(f"{path}: unreadable {what} ({type(exc).__name__}: {first[:200]})") from None


def move_aside(path: str | os.PathLike) -> Path:
    """Rename an unusable file to ``<name>.corrupt-<unix time>`` beside it (kept for inspection); the new path."""
    path = Path(path)
    target = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
    os.replace(path, target)
    return target
