"""Synthetic twin of MURA v1.1, in the release's layout and file naming.

``generate_mura_synthetic(out_dir, params)`` writes::

    MURA-v1.1/{train,valid}_image_paths.csv, {train,valid}_labeled_studies.csv   (no header, as released)
    MURA-v1.1/{train,valid}/XR_<PART>/patient<NNNNN>/study<K>_{positive,negative}/image<M>.png

Each patient has one body part (7 parts), 1..``studies`` studies of 1..4 images each, and a study-level label
(abnormal with probability ``abnormal_fraction``). Images are pragmatic bone phantoms: soft tissue, one to three
long bones with a bright cortex and darker medulla, joint gaps; abnormal studies show a fracture line, a
cortical bump or bright hardware on some of their images (as in MURA, not every image of an abnormal study shows it).
"""

from __future__ import annotations

import math
import os

import numpy as np
from PIL import Image

from xraypipe.atomic import atomic_dir

from .common import check_pair, check_range, resolve, rng_for

BODY_PARTS = ("XR_ELBOW", "XR_FINGER", "XR_FOREARM", "XR_HAND", "XR_HUMERUS", "XR_SHOULDER", "XR_WRIST")
FOLDER = "MURA-v1.1"
_BONES = {"XR_ELBOW": 2, "XR_FINGER": 3, "XR_FOREARM": 2, "XR_HAND": 3, "XR_HUMERUS": 1, "XR_SHOULDER": 1, "XR_WRIST": 2}
DEFAULT_PARAMS: dict = {
    "seed": 0,
    "n_patients": 42,            # train patients
    "n_valid_patients": 14,      # valid patients (the official test split)
    "studies": [1, 2],           # studies per patient
    "images_per_study": [1, 4],
    "abnormal_fraction": 0.4,
    "image_size": 128,
    "body_parts": list(BODY_PARTS),
}
_TAG_PATIENT, _TAG_IMAGE = 41, 42


def resolve_params(params: dict | None) -> dict:
    p = resolve(params, DEFAULT_PARAMS, "MURA")
    check_range(p, "seed", 0, 2**31, integer=True)
    check_range(p, "n_patients", 1, 99_999, integer=True)
    check_range(p, "n_valid_patients", 0, 99_999, integer=True)
    check_pair(p, "studies", 1, 20)
    check_pair(p, "images_per_study", 1, 4)
    check_range(p, "abnormal_fraction", 0.0, 1.0)
    check_range(p, "image_size", 32, 2048, integer=True)
    if not p["body_parts"] or any(b not in BODY_PARTS for b in p["body_parts"]):
        raise ValueError(f"parameter 'body_parts' must be a non-empty subset of {list(BODY_PARTS)}")
    return p


def render_bone(rng: np.random.Generator, size: int, n_bones: int, abnormal: bool) -> np.ndarray:
    h, w = size, int(size * rng.uniform(0.7, 1.0))
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    ys, xs = ys / h, xs / w
    ang = rng.uniform(-0.5, 0.5)
    ca, sa = math.cos(ang), math.sin(ang)
    u = ca * (xs - 0.5) + sa * (ys - 0.5)       # across the limb
    v = -sa * (xs - 0.5) + ca * (ys - 0.5)      # along the limb
    img = 0.08 + 0.04 * rng.standard_normal() + 0.22 * np.clip(1 - (u / rng.uniform(0.3, 0.42)) ** 2, 0, 1)
    gap = rng.uniform(-0.15, 0.15)
    offsets = np.linspace(-0.14, 0.14, n_bones) if n_bones > 1 else [0.0]
    for c in offsets:
        r = rng.uniform(0.045, 0.08)
        d = np.abs(u - c) / r
        shaft = (d < 1) & (np.abs(v - gap) > 0.02)
        cortex = np.clip(1 - np.abs(d - 0.8) / 0.2, 0, 1)
        img += shaft * (0.3 + 0.35 * cortex)
    if abnormal:
        kind = rng.integers(3)
        c = offsets[int(rng.integers(len(offsets)))]
        pos = rng.uniform(-0.35, 0.35)
        if kind == 0:   # fracture: a dark oblique line across a bone
            line = np.abs((v - pos) + 0.4 * (u - c)) < 0.008
            img -= line * (np.abs(u - c) < 0.09) * 0.35
        elif kind == 1:  # callus / cortical bump
            img += 0.25 * np.exp(-(((u - c - 0.07) / 0.03) ** 2 + ((v - pos) / 0.06) ** 2))
        else:            # hardware: a bright plate with screws
            plate = (np.abs(u - c - 0.02) < 0.015) & (np.abs(v - pos) < 0.15)
            img = np.where(plate, 0.98, img)
    img += 0.02 * rng.standard_normal(img.shape)
    return np.clip(img * 255, 0, 255).astype(np.uint8)


def generate_mura_synthetic(out_dir: str | os.PathLike, params: dict) -> dict:
    p = resolve_params(params)
    paths = {"train": [], "valid": []}
    studies = {"train": [], "valid": []}
    n_total = p["n_patients"] + p["n_valid_patients"]
    counts = {"images": 0, "studies": 0, "abnormal_studies": 0}
    with atomic_dir(out_dir) as tmp:
        for pid in range(1, n_total + 1):
            split = "train" if pid <= p["n_patients"] else "valid"
            r = rng_for(p["seed"], _TAG_PATIENT, pid)
            part = p["body_parts"][int(r.integers(len(p["body_parts"])))]
            for s in range(1, int(r.integers(p["studies"][0], p["studies"][1] + 1)) + 1):
                abnormal = bool(r.random() < p["abnormal_fraction"])
                study = f"{FOLDER}/{split}/{part}/patient{pid:05d}/study{s}_{'positive' if abnormal else 'negative'}"
                (tmp / study).mkdir(parents=True)
                n_img = int(r.integers(p["images_per_study"][0], p["images_per_study"][1] + 1))
                shows = r.random(n_img) < 0.8
                shows[int(r.integers(n_img))] = True
                for k in range(1, n_img + 1):
                    ri = rng_for(p["seed"], _TAG_IMAGE, pid, s, k)
                    img = render_bone(ri, p["image_size"], _BONES[part], abnormal and bool(shows[k - 1]))
                    Image.fromarray(img).save(tmp / study / f"image{k}.png")
                    paths[split].append(f"{study}/image{k}.png")
                    counts["images"] += 1
                studies[split].append(f"{study}/,{int(abnormal)}")
                counts["studies"] += 1
                counts["abnormal_studies"] += abnormal
        for split in ("train", "valid"):
            (tmp / FOLDER / f"{split}_image_paths.csv").write_text("".join(f"{x}\n" for x in paths[split]))
            (tmp / FOLDER / f"{split}_labeled_studies.csv").write_text("".join(f"{x}\n" for x in studies[split]))
    return {**counts, "seed": p["seed"]}
