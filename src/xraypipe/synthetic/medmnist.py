"""Synthetic twins of MedMNIST PneumoniaMNIST and ChestMNIST ``.npz`` files (28/64/128/224 px).

Same keys, dtypes and shapes as the official files: ``{train,val,test}_images`` uint8 (N, S, S) and
``{train,val,test}_labels`` uint8 (N, 1) for PneumoniaMNIST / (N, 14) for ChestMNIST (NIH label order),
saved with ``numpy.savez_compressed`` as ``<flavour>.npz`` (28 px) or ``<flavour>_<size>.npz``. Images are chest
phantoms rendered at max(size, 64) and downscaled; the eight phantom findings are visible, the other six
ChestMNIST labels are drawn without a visual signature.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from xraypipe.atomic import atomic_dir

from .common import check_range, chest_film, resolve, rng_for
from .phantom import FINDINGS

CHEST_LABELS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
                "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia")
CHEST_PREVALENCE = (0.1, 0.1, 0.12, 0.18, 0.06, 0.07, 0.05, 0.06, 0.04, 0.02, 0.02, 0.02, 0.03, 0.01)
SIZES = (28, 64, 128, 224)
DEFAULT_PARAMS: dict = {"seed": 0, "n_train": 160, "n_val": 40, "n_test": 60, "size": 28, "prevalence": 0.6,
                        "difficulty": 0.3}
_TAG = 61


def file_name(flavour: str, size: int) -> str:
    return f"{flavour}.npz" if size == 28 else f"{flavour}_{size}.npz"


def resolve_params(params: dict | None) -> dict:
    p = resolve(params, DEFAULT_PARAMS, "MedMNIST")
    check_range(p, "seed", 0, 2**31, integer=True)
    for key in ("n_train", "n_val", "n_test"):
        check_range(p, key, 0, 1_000_000, integer=True)
    if p["size"] not in SIZES:
        raise ValueError(f"parameter 'size' must be one of {SIZES}, got {p['size']!r}")
    check_range(p, "prevalence", 0.0, 1.0)
    check_range(p, "difficulty", 0.0, 1.0)
    return p


def generate_medmnist_synthetic(out_dir: str | os.PathLike, params: dict, flavour: str = "pneumoniamnist") -> dict:
    p = resolve_params(params)
    size, render = p["size"], max(p["size"], 64)
    arrays, idx = {}, 0
    for split in ("train", "val", "test"):
        n = p[f"n_{split}"]
        images = np.empty((n, size, size), np.uint8)
        labels = np.zeros((n, 1 if flavour == "pneumoniamnist" else len(CHEST_LABELS)), np.uint8)
        for i in range(n):
            idx += 1
            r = rng_for(p["seed"], _TAG, idx)
            if flavour == "pneumoniamnist":
                labels[i, 0] = r.random() < p["prevalence"]
                findings = ("Pneumonia", "Infiltration") if labels[i, 0] else ()
            else:
                labels[i] = r.random(len(CHEST_LABELS)) < np.array(CHEST_PREVALENCE)
                findings = tuple(f for f, y in zip(CHEST_LABELS, labels[i]) if y and f in FINDINGS)
            pixels = chest_film(p["seed"], idx, 0, "M" if r.random() < 0.5 else "F", "PA", findings, render,
                                p["difficulty"])
            if size != render:
                pixels = np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.BOX))
            images[i] = pixels
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    with atomic_dir(out_dir) as tmp:
        np.savez_compressed(Path(tmp) / file_name(flavour, size), **arrays)
    return {"file": file_name(flavour, size), **{k: int(v.shape[0]) for k, v in arrays.items() if k.endswith("images")},
            "positives": int(sum(arrays[f"{s}_labels"].sum() for s in ("train", "val", "test")))}
