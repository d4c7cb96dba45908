"""Synthetic twin of the Kermany pediatric pneumonia release (``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}``).

File names follow the release: ``IM-<PPPP>-<SSSS>.jpeg`` and ``NORMAL2-IM-<PPPP>-<SSSS>.jpeg`` for normal
patients, ``person<N>_bacteria_<K>.jpeg`` / ``person<N>_virus_<K>.jpeg`` for pneumonia (``K`` a running image
number; ``..._<K>_<J>`` and ``IM-<PPPP>-<SSSS>-<JJJJ>`` for some, as in the release). Test patients are disjoint
from train patients but, as in the release, numbered independently: ``person3`` of ``test/`` is not
``person3`` of ``train/``. The ``val`` folder (Kaggle copy; ``val_images: 0``
gives the Mendeley layout without it) holds a few images of *train* patients, as the Kaggle copy does.
Images are chest phantoms (JPEG); pneumonia images show consolidation (plus infiltrates when bacterial).
"""

from __future__ import annotations

import os

from PIL import Image

from xraypipe.atomic import atomic_dir

from .common import check_pair, check_range, chest_film, resolve, rng_for

DEFAULT_PARAMS: dict = {
    "seed": 0,
    "n_patients": 60,
    "pneumonia_fraction": 0.6,
    "bacterial_fraction": 0.65,   # of pneumonia patients
    "images_per_patient": [1, 3],
    "test_fraction": 0.25,        # of patients, in chest_xray/test
    "val_images": 4,              # images of train patients moved to chest_xray/val (Kaggle copy); 0 = none
    "image_size": 128,
    "difficulty": 0.3,
}
_TAG_PATIENT, _TAG_SPLIT = 51, 52


def resolve_params(params: dict | None) -> dict:
    p = resolve(params, DEFAULT_PARAMS, "Kermany")
    check_range(p, "seed", 0, 2**31, integer=True)
    check_range(p, "n_patients", 2, 99_999, integer=True)
    for key in ("pneumonia_fraction", "bacterial_fraction", "test_fraction", "difficulty"):
        check_range(p, key, 0.0, 1.0)
    check_pair(p, "images_per_patient", 1, 50)
    check_range(p, "val_images", 0, 10_000, integer=True)
    check_range(p, "image_size", 32, 2048, integer=True)
    return p


def generate_kermany_synthetic(out_dir: str | os.PathLike, params: dict) -> dict:
    p = resolve_params(params)
    n = p["n_patients"]
    perm = rng_for(p["seed"], _TAG_SPLIT).permutation(n)
    n_test = min(max(int(round(p["test_fraction"] * n)), 1), n - 1)
    test = set(int(i) + 1 for i in perm[:n_test])
    image_no = 0
    number = {"train": 0, "test": 0}  # patient numbers run per folder, as in the release
    files = []  # (split, class, name, pixels-args)
    for pid in range(1, n + 1):
        r = rng_for(p["seed"], _TAG_PATIENT, pid)
        pneumonia = r.random() < p["pneumonia_fraction"]
        bacterial = r.random() < p["bacterial_fraction"]
        normal2 = r.random() < 0.5
        k = int(r.integers(p["images_per_patient"][0], p["images_per_patient"][1] + 1))
        split = "test" if pid in test else "train"
        number[split] += 1
        num = number[split]
        sub_numbered = r.random() < 0.3  # the release's <K>_<J> / <S>-<J> names
        for t in range(k):
            if pneumonia:
                image_no += 1
                kind = "bacteria" if bacterial else "virus"
                sub = f"_{t + 1}" if sub_numbered and not bacterial else ""
                name = f"person{num}_{kind}_{image_no}{sub}.jpeg"
                findings = ("Pneumonia", "Infiltration") if bacterial else ("Pneumonia",)
            else:
                series = f"0001-{t + 1:04d}" if sub_numbered else f"{t + 1:04d}"
                name = f"{'NORMAL2-' if normal2 else ''}IM-{num:04d}-{series}.jpeg"
                findings = ()
            files.append([split, "PNEUMONIA" if pneumonia else "NORMAL", name, pid, t, findings])
    train_idx = [i for i, f in enumerate(files) if f[0] == "train"]
    for i in rng_for(p["seed"], _TAG_SPLIT, 1).permutation(train_idx)[: p["val_images"]]:
        files[int(i)][0] = "val"
    counts = {"train": 0, "val": 0, "test": 0, "PNEUMONIA": 0, "NORMAL": 0}
    with atomic_dir(out_dir) as tmp:
        for split, cls, name, pid, t, findings in files:
            d = tmp / "chest_xray" / split / cls
            d.mkdir(parents=True, exist_ok=True)
            sex = "M" if pid % 2 else "F"
            pixels = chest_film(p["seed"], pid, t, sex, "AP", findings, p["image_size"], p["difficulty"])
            Image.fromarray(pixels).save(d / name, format="JPEG", quality=90)
            counts[split] += 1
            counts[cls] += 1
        for split in ("train", "test"):
            for cls in ("NORMAL", "PNEUMONIA"):
                (tmp / "chest_xray" / split / cls).mkdir(parents=True, exist_ok=True)
    return {**counts, "n_patients": n, "n_test_patients": n_test, "seed": p["seed"]}
