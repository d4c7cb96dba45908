"""The Python API (docs/api.md): load a trained model, predict images, and a Dataset over the pipeline's cache.

    import xraypipe
    model = xraypipe.load_model("results/models/nih_synthetic/resnet18/model.pt")
    frame = xraypipe.predict_images(model, ["a.png", "b.jpg"])     # image, prob_<P>, positive_<P>
    data = xraypipe.CacheDataset("results/cache/nih_synthetic", "train")   # (image 1 x S x S, labels L)

Predictions go through the same code as ``xraypipe-predict`` and the predict stage: the image is decoded and
squared like the cache (``resize``), standardised with the normalisation stored in the model file, and scored by
the module ``xraypipe.inference`` rebuilds (an ensemble's mean probability; U-MultiClass's positive score).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

__all__ = ["TrainedModel", "load_model", "predict_images", "CacheDataset"]


class TrainedModel:
    """A trained variant: the torch module (eval mode) with what is needed to score images with it.

    ``pathologies`` (alias ``labels``): the output order; ``thresholds``: ``{pathology: threshold}`` chosen on
    validation (``thresholds.json`` of the evaluate stage; NaN where none could be chosen) or None;
    ``image_size``: the side the model was trained on; ``normalization``: the input standardisation
    (:class:`xraypipe.standardize.Normalization`); ``metadata``: the model file's metadata dict. Calling the
    object (or :meth:`predict`) is :func:`predict_images`.
    """

    def __init__(self, module, metadata: dict, thresholds: dict | None = None, path: str | os.PathLike | None = None,
                 device=None):
        from xraypipe.standardize import Normalization

        self.module = module
        self.metadata = metadata
        self.pathologies = list(metadata["pathologies"])
        self.image_size = int(metadata["image_size"])
        self.normalization = Normalization.from_meta(metadata.get("normalization"))
        self.thresholds = None if thresholds is None else {p: float(thresholds[p]) for p in self.pathologies}
        self.path = Path(path) if path is not None else None
        self.device = device

    @property
    def labels(self) -> list[str]:
        return self.pathologies

    @property
    def name(self) -> str:
        return str(self.metadata.get("model", "model"))

    def predict(self, images, **kwargs):
        return predict_images(self, images, **kwargs)

    __call__ = predict

    def __repr__(self) -> str:
        where = f" from {self.path}" if self.path else ""
        thresholds = "with" if self.thresholds is not None else "without"
        return (f"<TrainedModel {self.name}{where}: {len(self.pathologies)} labels, {self.image_size} px, "
                f"{thresholds} thresholds>")


def _device(device):
    import torch

    if device is None:
        return torch.device("cpu")
    if isinstance(device, str) and device == "auto":
        from xraypipe.inference import select_device

        return select_device("auto")
    return torch.device(device)


def load_model(path: str | os.PathLike, device=None, thresholds="auto") -> TrainedModel:
    """The trained model in ``path`` (a ``model.pt`` written by the train stage) on ``device`` (None: the CPU;
    ``"auto"``: CUDA when available; or any torch device).

    ``thresholds``: ``"auto"`` reads ``thresholds.json`` beside the model when it exists (None otherwise); a path
    must exist; a ``{pathology: threshold}`` dict is used as given; None: no thresholds (probabilities only).
    Errors (``ValueError`` subclasses; ``xraypipe.predict_cli.PredictError``) name the file: a missing file, a
    resume checkpoint instead of a model, a file that could run code when loaded, a thresholds file without a
    threshold for one of the model's labels.
    """
    from xraypipe.predict_cli import PredictError, load_model as load_model_file, load_thresholds

    path = Path(path)
    module, meta = load_model_file(path)
    device = _device(device)
    module = module.to(device).eval()
    pathologies = list(meta["pathologies"])
    if isinstance(thresholds, str) and thresholds == "auto":
        beside = path.parent / "thresholds.json"
        thresholds = load_thresholds(beside, pathologies) if beside.exists() else None
    elif isinstance(thresholds, (str, os.PathLike)):
        thresholds = load_thresholds(Path(thresholds), pathologies)
    elif thresholds is not None:
        missing = [p for p in pathologies if p not in thresholds]
        if missing:
            raise PredictError(f"thresholds: no threshold for {missing}")
        thresholds = {p: (float("nan") if thresholds[p] is None else float(thresholds[p])) for p in pathologies}
    return TrainedModel(module, meta, thresholds, path, device)


def _gray_uint8(array, where: str) -> np.ndarray:
    """A 2-D uint8 gray image from an array: uint8 as is, bool as 0/255, floats in [0, 1] times 255, other
    integers (16-bit films) windowed min..max onto 0..255 like 16-bit files; H x W x 3/4 uint8 colour: luminance."""
    from PIL import Image

    from xraypipe.preprocess import to_gray_uint8

    a = np.asarray(array)
    if a.ndim == 3 and a.shape[-1] in (3, 4) and a.dtype == np.uint8:
        return to_gray_uint8(Image.fromarray(a, mode="RGB" if a.shape[-1] == 3 else "RGBA"), where)
    if a.ndim != 2 or min(a.shape) == 0:
        raise ValueError(f"{where}: expected a 2-D gray image (or H x W x 3/4 uint8 colour), got shape {a.shape}")
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
            raise ValueError(f"{where}: a float image must hold values in [0, 1] (got {a.min():g}..{a.max():g})")
        return np.round(a * 255).astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer):
        lo, hi = int(a.min()), int(a.max())
        if hi <= lo:
            return np.zeros(a.shape, dtype=np.uint8)
        return np.round((a.astype(np.float64) - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    raise ValueError(f"{where}: unsupported dtype {a.dtype}")


def _items(images) -> list:
    """``images`` as a list of paths and 2-D (or colour) arrays; a single path or array is one image and a 3-D
    gray stack (N x H x W, not ending in 3 or 4 channels) is N images."""
    if isinstance(images, (str, os.PathLike)):
        return [images]
    if isinstance(images, np.ndarray) or hasattr(images, "__array_interface__"):
        a = np.asarray(images)
        if a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (3, 4) and a.dtype == np.uint8):
            return [a]
        if a.ndim == 3:
            return list(a)
        raise ValueError(f"images: expected a 2-D image, a N x H x W stack or a list, got shape {a.shape}")
    return list(images)


def predict_images(model: TrainedModel, images, *, resize: str = "pad", batch_size: int = 32,
                   allow_color: bool = False):
    """Score ``images`` with ``model``; a pandas DataFrame with one row per image, in order.

    ``images``: a path or an array, or a list of them (paths: PNG/JPEG/TIFF of any mode, checked like
    ``xraypipe-predict``: single-frame, not tiny, not a colour photograph unless ``allow_color``; arrays: 2-D gray
    uint8 0..255, float 0..1 or 16-bit, or H x W x 3/4 uint8 colour; a N x H x W array is N images). Each image is
    squared (``resize``: pad, crop or stretch, as the dataset's ``preprocess.resize``) to the model's size.

    Columns: ``image`` (the path, or ``array[i]``), ``prob_<P>`` for each pathology P (in the model's order)
    and, when the model has thresholds, ``positive_<P>``: ``prob_<P> >= threshold`` (False where the threshold is
    NaN), the calls ``xraypipe-predict`` prints.
    """
    import pandas as pd
    import torch

    from xraypipe.predict_cli import check_image_kind
    from xraypipe.preprocess import load_image, resize_square

    if not isinstance(model, TrainedModel):
        raise TypeError(f"predict_images needs a TrainedModel (xraypipe.load_model), got {type(model).__name__}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    size = model.image_size
    names, arrays = [], []
    for i, item in enumerate(_items(images)):
        if isinstance(item, (str, os.PathLike)):
            check_image_kind(Path(item), allow_color)
            arrays.append(load_image(item, size, resize))
            names.append(str(item))
        else:
            where = f"array[{i}]"
            arrays.append(resize_square(_gray_uint8(item, where), size, resize))
            names.append(where)
    probs = np.zeros((len(arrays), len(model.pathologies)), dtype=np.float64)
    module = model.module.eval()
    first = next(module.parameters(), None)  # where the weights are (also after a user's module.to(...))
    device = first.device if first is not None else torch.device("cpu")
    with torch.inference_mode():
        for start in range(0, len(arrays), batch_size):
            x = model.normalization.apply(np.stack(arrays[start:start + batch_size])).to(device)
            probs[start:start + batch_size] = torch.sigmoid(module(x).float()).cpu().numpy()
    columns = {"image": names}
    columns.update({f"prob_{p}": probs[:, j] for j, p in enumerate(model.pathologies)})
    if model.thresholds is not None:
        for j, p in enumerate(model.pathologies):
            t = model.thresholds[p]
            columns[f"positive_{p}"] = (probs[:, j] >= t) if np.isfinite(t) else np.zeros(len(arrays), dtype=bool)
    return pd.DataFrame(columns)


class CacheDataset(Dataset):
    """A ``torch.utils.data.Dataset`` over one split of the pipeline's cache (``results/cache/<dataset>/``: the
    cache stage's ``<split>.npy``, N x S x S uint8, memory-mapped, and ``index.csv``), for your own training loop.

    ``dataset[i]`` is ``(image, labels)``: ``image`` a float32 tensor 1 x S x S, the pixels in [0, 1]
    (``normalization=None``) or standardised like a variant (``"fixed"``, ``"imagenet"``, ``"per_image"``,
    ``"unit"``, ``"per_pixel"``/``"mean_image"`` with the cache's ``pixel_stats.npz``; or a trained model's
    ``model.normalization``), then ``transform(image)`` when given; ``labels`` a float32 tensor of the
    ``pathologies`` (default: every label column of the index, in its order): 1 positive, 0 negative, -1 uncertain
    (CheXpert), NaN unknown (as torchxrayvision's datasets mark a missing label).

    Attributes: ``pathologies``, ``labels`` (N x L float32 array), ``index`` (the split's
    rows of ``index.csv`` in cache order: image_id, patient_id, path, ...), ``images`` (the memory map).
    Picklable without copying the images (DataLoader workers under ``spawn`` reopen the memory map).
    """

    def __init__(self, cache_dir: str | os.PathLike, split: str, transform=None, *, pathologies=None,
                 normalization=None):
        from xraypipe.datasets.contract import manifest_pathologies
        from xraypipe.preprocess import load_cache_index, load_cache_split
        from xraypipe.standardize import PIXEL_STATS_NAME, Normalization

        self.cache_dir, self.split, self.transform = Path(cache_dir), str(split), transform
        index_path, array_path = self.cache_dir / "index.csv", self.cache_dir / f"{self.split}.npy"
        for path in (index_path, array_path):
            if not path.exists():
                raise FileNotFoundError(f"{path}: not found (build the cache first: snakemake "
                                        f"results/cache/<dataset>/index.csv)")
        index = load_cache_index(self.cache_dir)
        self.index = index[index["split"] == self.split].sort_values("cache_row").reset_index(drop=True)
        self.images = load_cache_split(self.cache_dir, self.split)
        if self.images.ndim != 3 or self.images.dtype != np.uint8:
            raise ValueError(f"{array_path}: expected N x S x S uint8 images, got {self.images.shape} "
                             f"{self.images.dtype}")
        if len(self.images) != len(self.index):
            raise ValueError(f"{array_path}: {len(self.images)} images but index.csv lists {len(self.index)} "
                             f"rows of split {self.split!r}")
        if not np.array_equal(self.index["cache_row"].to_numpy(), np.arange(len(self.index))):
            raise ValueError(f"{index_path}: the cache_row values of split {self.split!r} are not "
                             f"0..{len(self.index) - 1}")
        self.pathologies = list(pathologies) if pathologies is not None else manifest_pathologies(index)
        missing = [p for p in self.pathologies if p not in self.index.columns]
        if missing:
            raise ValueError(f"{index_path}: no label column(s) {missing}")
        self.labels = self.index[self.pathologies].to_numpy(dtype=np.float32)
        if normalization is None:
            self.normalization = None
        elif isinstance(normalization, str):
            self.normalization = Normalization.for_variant(normalization, self.cache_dir / PIXEL_STATS_NAME)
        else:
            self.normalization = Normalization.from_meta(normalization)
        if self.normalization is not None:
            self.normalization.check_size(int(self.images.shape[-1]), what=f"cached images of {self.cache_dir}")

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i):
        import torch

        n = len(self)
        if not isinstance(i, (int, np.integer)):
            raise TypeError(f"CacheDataset indices are integers, got {type(i).__name__}")
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} images of split {self.split!r}")
        i = int(i) % n
        x = torch.from_numpy(np.array(self.images[i], dtype=np.float32)).div_(255.0).unsqueeze(0)
        if self.normalization is not None:
            x = self.normalization.apply_unit(x.unsqueeze(0))[0]
        if self.transform is not None:
            x = self.transform(x)
        return x, torch.from_numpy(self.labels[i].copy())

    def __getstate__(self):
        state = self.__dict__.copy()
        state["images"] = None  # reopened by __setstate__: a pickled memory map would copy every image
        return state

    def __setstate__(self, state):
        from xraypipe.preprocess import load_cache_split

        self.__dict__.update(state)
        self.images = load_cache_split(self.cache_dir, self.split)

    def __repr__(self) -> str:
        return (f"<CacheDataset {self.cache_dir} split {self.split!r}: {len(self)} images of "
                f"{self.image_size} px, labels {self.pathologies}>")
