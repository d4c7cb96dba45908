"""Synthetic twin of CheXpert v1.0 (``CheXpert-v1.0-small`` layout), with uncertain labels of known truth.

``generate_chexpert_synthetic(out_dir, params)`` writes::

    CheXpert-v1.0-small/train.csv, valid.csv          the real header and cell formats (1.0 / 0.0 / -1.0 / blank)
    CheXpert-v1.0-small/{train,valid}/patient<NNNNN>/study<K>/view<M>_{frontal,lateral}.jpg
    synthetic_truth.csv                               hidden truth (0/1) of every label of every image

Labels are drawn per study (all views of a study share its report, as in CheXpert). In train.csv, a share
``uncertain_fraction`` of the observation cells is written as ``-1.0``; of those, ``uncertain_positive_share``
(default 80%) are truly positive. Other truly positive cells are ``1.0``; truly negative cells are ``0.0`` with
probability ``negative_fraction``, else blank (not mentioned). ``No Finding`` is ``1.0`` when no observation
except Support Devices is truly positive, else blank. valid.csv has only 0/1 (radiologist consensus, as in the
release). Frontal images are chest phantoms whose findings follow the *truth* (Pleural Effusion -> effusion,
Lung Opacity -> infiltration, Lung Lesion -> mass, ...); lateral images are a pragmatic squeezed variant.
The reader never looks at ``synthetic_truth.csv``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from xraypipe.atomic import atomic_dir

from .common import check_pair, check_range, chest_film, lateral_film, resolve, rng_for

OBSERVATIONS = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
                "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
                "Fracture", "Support Devices")
HEADER = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA") + OBSERVATIONS
PHANTOM = {"Cardiomegaly": "Cardiomegaly", "Enlarged Cardiomediastinum": "Cardiomegaly", "Lung Opacity": "Infiltration",
           "Lung Lesion": "Mass", "Consolidation": "Pneumonia", "Pneumonia": "Pneumonia", "Atelectasis": "Atelectasis",
           "Pneumothorax": "Pneumothorax", "Pleural Effusion": "Effusion"}
FOLDER = "CheXpert-v1.0-small"
TRUTH_FILE = "synthetic_truth.csv"

DEFAULT_PARAMS: dict = {
    "seed": 0,
    "n_patients": 40,              # train patients
    "n_valid_patients": 10,        # valid.csv patients (the official test split)
    "studies": [1, 3],             # studies per patient
    "lateral_fraction": 0.35,      # share of studies that also have a lateral view
    "ap_fraction": 0.7,            # frontal views that are AP (rest PA)
    "image_size": 128,             # rendered height; width is 82% of it (the small release is ~320 x 390)
    "difficulty": 0.4,
    "uncertain_fraction": 0.12,    # share of observation cells (train) written as -1.0
    "uncertain_positive_share": 0.8,  # share of the uncertain cells that are truly positive
    "negative_fraction": 0.25,     # truly negative cells written 0.0 (the rest blank)
    "prevalence": {o: p for o, p in zip(OBSERVATIONS[1:], (0.05, 0.12, 0.45, 0.04, 0.25, 0.07, 0.03, 0.15, 0.09,
                                                            0.38, 0.02, 0.04, 0.5))},
}
_TAG_PATIENT, _TAG_VIEW = 31, 32


def resolve_params(params: dict | None) -> dict:
    p = resolve(params, DEFAULT_PARAMS, "CheXpert")
    check_range(p, "seed", 0, 2**31, integer=True)
    check_range(p, "n_patients", 1, 99_999, integer=True)
    check_range(p, "n_valid_patients", 0, 9_999, integer=True)
    check_pair(p, "studies", 1, 99)
    check_range(p, "image_size", 32, 2048, integer=True)
    for key in ("lateral_fraction", "ap_fraction", "difficulty", "uncertain_fraction", "uncertain_positive_share",
                "negative_fraction"):
        check_range(p, key, 0.0, 1.0)
    for o, v in p["prevalence"].items():
        if not (isinstance(v, (int, float)) and 0 <= v <= 1):
            raise ValueError(f"parameter 'prevalence' for {o!r} must be in [0, 1], got {v!r}")
    return p


def _cell(v: float) -> str:
    return "" if np.isnan(v) else f"{v:.1f}"


def generate_chexpert_synthetic(out_dir: str | os.PathLike, params: dict) -> dict:
    p = resolve_params(params)
    S = int(p["image_size"])
    W = int(round(S * 0.82))
    obs = OBSERVATIONS[1:]
    prev = np.array([p["prevalence"][o] for o in obs])
    lines = {"train": [",".join(HEADER)], "valid": [",".join(HEADER)]}
    truth_lines = [",".join(("Path",) + OBSERVATIONS)]
    counts = {"images": 0, "uncertain": 0, "uncertain_positive": 0, "blank": 0, "lateral": 0}
    n_total = p["n_patients"] + p["n_valid_patients"]
    with atomic_dir(out_dir) as tmp:
        for pid in range(1, n_total + 1):
            split = "train" if pid <= p["n_patients"] else "valid"
            r = rng_for(p["seed"], _TAG_PATIENT, pid)
            sex = "Male" if r.random() < 0.55 else ("Female" if r.random() < 0.99 else "Unknown")
            age = int(np.clip(round(r.normal(61, 17)), 18, 90))
            lo, hi = p["studies"]
            n_studies = int(r.integers(lo, hi + 1))
            for s in range(1, n_studies + 1):
                truth = (r.random(len(obs)) < prev).astype(float)
                observed = np.where(truth == 1, 1.0, np.where(r.random(len(obs)) < p["negative_fraction"], 0.0, np.nan))
                if split == "train":
                    unc = r.random(len(obs)) < p["uncertain_fraction"]
                    truth = np.where(unc, (r.random(len(obs)) < p["uncertain_positive_share"]).astype(float), truth)
                    observed = np.where(unc, -1.0, np.where(truth == 1, 1.0, observed))
                    counts["uncertain"] += int(unc.sum())
                    counts["uncertain_positive"] += int((unc & (truth == 1)).sum())
                else:
                    observed = truth.copy()
                no_finding = float(not truth[:-1].any())  # Support Devices does not count
                nf_obs = 1.0 if no_finding else (np.nan if split == "train" else 0.0)
                counts["blank"] += int(np.isnan(observed).sum())
                ap = r.random() < p["ap_fraction"]
                views = ["frontal"] + (["lateral"] if r.random() < p["lateral_fraction"] else [])
                findings = {PHANTOM[o] for o, t in zip(obs, truth) if t == 1 and o in PHANTOM}
                study_dir = Path(split) / f"patient{pid:05d}" / f"study{s}"
                (tmp / FOLDER / study_dir).mkdir(parents=True, exist_ok=True)
                frontal = chest_film(p["seed"], pid, s - 1, "M" if sex == "Male" else "F", "AP" if ap else "PA",
                                     findings, S, p["difficulty"])
                for k, view in enumerate(views, start=1):
                    pixels = frontal if view == "frontal" else lateral_film(frontal, rng_for(p["seed"], _TAG_VIEW, pid, s))
                    rel = f"{FOLDER}/{study_dir.as_posix()}/view{k}_{view}.jpg"
                    Image.fromarray(pixels).resize((W, S), Image.Resampling.BILINEAR).save(tmp / rel, quality=90)
                    cells = [rel, sex, str(age), "Frontal" if view == "frontal" else "Lateral",
                             ("AP" if ap else "PA") if view == "frontal" else "", _cell(nf_obs)]
                    cells += [_cell(v) for v in observed]
                    lines[split].append(",".join(cells))
                    truth_lines.append(",".join([rel, str(int(no_finding))] + [str(int(t)) for t in truth]))
                    counts["images"] += 1
                    counts["lateral"] += view == "lateral"
        (tmp / FOLDER / "train.csv").write_text("\n".join(lines["train"]) + "\n")
        (tmp / FOLDER / "valid.csv").write_text("\n".join(lines["valid"]) + "\n")
        (tmp / TRUTH_FILE).write_text("\n".join(truth_lines) + "\n")
    return {**counts, "n_train_rows": len(lines["train"]) - 1, "n_valid_rows": len(lines["valid"]) - 1,
            "seed": p["seed"]}
