"""Seeded, deterministic synthetic twin of NIH ChestX-ray14, in the real release's file layout.

``generate_nih_synthetic(out_dir, params)`` writes::

    images/<PPPPPPPP>_<FFF>.png     8-bit grayscale (a few RGBA, as in the real release)
    Data_Entry_2017_v2020.csv       the real header; 11 fields per row
    BBox_List_2017.csv              the real header; 1024x1024 frame; "Infiltrate" spelling
    train_val_list.txt, test_list.txt   split by patient

Labels come from a latent-Gaussian (probit) model: per image, finding f is present when
``a * z_patient + sqrt(1 - a^2) * e_f(t) > Phi^-1(1 - p_f)``, where ``z_patient`` is a per-patient
severity, ``e(t)`` has unit-variance components correlated across findings (Effusion with Cardiomegaly
and Atelectasis, Pneumonia with Infiltration, ...) and autocorrelated across a patient's follow-ups
(persistence). Every latent is marginally N(0, 1), so each finding's marginal prevalence is exactly the
requested one in expectation, while findings co-occur and persist realistically.

Images are rendered by :mod:`xraypipe.synthetic.phantom`.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from PIL import Image

from xraypipe.atomic import atomic_dir

from .phantom import BOX_FRAME, FINDINGS, NIH_BOX_SIZE_STATS, ImageSpec, render_radiograph, rng_for

DATA_ENTRY_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
                     "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")
BBOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h]"
BOX_LABEL_SPELLING = {"Infiltration": "Infiltrate"}  # the real BBox_List_2017.csv spells it this way
NO_FINDING = "No Finding"

DEFAULT_PARAMS: dict = {
    "seed": 0,
    "n_patients": 150,
    "follow_ups": [1, 6],          # [min, max] images per patient
    "image_size": 256,             # square side in pixels
    "difficulty": 0.5,             # 0..1: lower lesion contrast, more noise and anatomical variation
    "prevalence": {                # probability per image
        "Atelectasis": 0.12, "Cardiomegaly": 0.10, "Effusion": 0.14, "Infiltration": 0.18,
        "Mass": 0.07, "Nodule": 0.08, "Pneumonia": 0.05, "Pneumothorax": 0.06,
    },
    "ap_fraction": 0.3,            # share of AP views (rest PA)
    "rgba_fraction": 0.02,         # share of images saved as RGBA PNG
    "box_fraction": 0.5,           # share of positive findings with a ground-truth box row
    "test_fraction": 0.25,         # share of patients in test_list.txt
}

# ---- label model constants
_SEVERITY_LOADING = 0.4
# correlations between the findings' image-level latents (beyond the shared severity)
_LINKS = {("Cardiomegaly", "Effusion"): 0.45, ("Infiltration", "Pneumonia"): 0.55,
          ("Atelectasis", "Effusion"): 0.40, ("Atelectasis", "Infiltration"): 0.15, ("Mass", "Nodule"): 0.30}
# lag-1 autocorrelation of each latent source across follow-ups (chronic findings persist longer)
_PERSISTENCE = {"Atelectasis": 0.65, "Cardiomegaly": 0.92, "Effusion": 0.70, "Infiltration": 0.60,
                "Mass": 0.90, "Nodule": 0.90, "Pneumonia": 0.45, "Pneumothorax": 0.50}
_FOLLOW_UP_DECAY = 0.6  # P(n follow-ups) ~ decay ** (n - min): most patients have one image, some many
# (width, height, pixel spacing) of the scanners in the real release, with their shares
_DEVICES = ((2500, 2048, 0.168, 0.35), (2992, 2991, 0.143, 0.30), (3056, 2544, 0.139, 0.18),
            (2048, 2500, 0.168, 0.12), (2544, 3056, 0.139, 0.05))
_TAG_PATIENT, _TAG_SPLIT = 21, 22


def _link_cholesky() -> np.ndarray:
    r = np.eye(len(FINDINGS))
    for (a, b), v in _LINKS.items():
        i, j = FINDINGS.index(a), FINDINGS.index(b)
        r[i, j] = r[j, i] = v
    return np.linalg.cholesky(r)


_CHOL = _link_cholesky()
_PHI = np.array([_PERSISTENCE[f] for f in FINDINGS])


# --------------------------------------------------------------------------------------------- params
def resolve_params(params: dict | None) -> dict:
    """Merge ``params`` over DEFAULT_PARAMS (``prevalence`` key by key) and validate; ValueError names the key."""
    params = dict(params or {})
    out = copy.deepcopy(DEFAULT_PARAMS)
    for key, value in params.items():
        if key not in DEFAULT_PARAMS:
            raise ValueError(f"unknown synthetic NIH parameter {key!r}; known: {', '.join(sorted(DEFAULT_PARAMS))}")
        if key == "prevalence":
            if not isinstance(value, dict):
                raise ValueError("parameter 'prevalence' must be a mapping finding -> probability")
            for f, p in value.items():
                if f not in FINDINGS:
                    raise ValueError(f"unknown finding {f!r} in parameter 'prevalence'; known: {', '.join(FINDINGS)}")
                out["prevalence"][f] = p
        else:
            out[key] = value

    def check(key, ok, what):
        if not ok:
            raise ValueError(f"parameter {key!r} must be {what}, got {out[key]!r}")

    def is_int(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    def is_num(v):
        return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)

    check("seed", is_int(out["seed"]) and out["seed"] >= 0, "a non-negative integer")
    check("n_patients", is_int(out["n_patients"]) and 1 <= out["n_patients"] <= 99_999_999, "an integer >= 1")
    fu = out["follow_ups"]
    check("follow_ups", isinstance(fu, (list, tuple)) and len(fu) == 2 and all(is_int(v) for v in fu)
          and 1 <= fu[0] <= fu[1] <= 999, "[min, max] integers with 1 <= min <= max <= 999")
    out["follow_ups"] = [int(fu[0]), int(fu[1])]
    check("image_size", is_int(out["image_size"]) and 32 <= out["image_size"] <= 4096, "an integer in [32, 4096]")
    for key in ("difficulty", "ap_fraction", "rgba_fraction", "box_fraction", "test_fraction"):
        check(key, is_num(out[key]) and 0.0 <= float(out[key]) <= 1.0, "a number in [0, 1]")
        out[key] = float(out[key])
    for f, p in out["prevalence"].items():
        if not (is_num(p) and 0.0 <= float(p) <= 1.0):
            raise ValueError(f"parameter 'prevalence' for {f!r} must be a number in [0, 1], got {p!r}")
        out["prevalence"][f] = float(p)
    out["seed"], out["n_patients"], out["image_size"] = int(out["seed"]), int(out["n_patients"]), int(out["image_size"])
    return out


# --------------------------------------------------------------------------------------------- metadata
@dataclass(frozen=True)
class ImageRecord:
    image_index: str
    patient_id: int
    follow_up: int
    age: int
    sex: str
    view: str
    findings: tuple      # sorted alphabetically (FINDINGS order is alphabetical)
    boxed: tuple         # findings that get a row in BBox_List_2017.csv
    width: int
    height: int
    spacing: float
    rgba: bool

    @property
    def finding_labels(self) -> str:
        return "|".join(self.findings) if self.findings else NO_FINDING


def _thresholds(prevalence: dict) -> np.ndarray:
    nd = NormalDist()
    out = []
    for f in FINDINGS:
        p = prevalence[f]
        out.append(math.inf if p <= 0 else -math.inf if p >= 1 else nd.inv_cdf(1.0 - p))
    return np.array(out)


def _patient_records(pid: int, p: dict, thresholds: np.ndarray) -> list[ImageRecord]:
    r = rng_for(p["seed"], _TAG_PATIENT, pid)
    lo, hi = p["follow_ups"]
    weights = _FOLLOW_UP_DECAY ** np.arange(hi - lo + 1)
    n = lo + int(r.choice(hi - lo + 1, p=weights / weights.sum()))
    sex = "M" if r.random() < 0.565 else "F"
    age0 = int(np.clip(round(r.normal(47.0, 16.6)), 1, 92))
    ages = np.minimum(age0 + np.cumsum(np.r_[0, r.poisson(0.7, n - 1)]), 95)
    dev_p = np.array([d[3] for d in _DEVICES])
    home_dev = int(r.choice(len(_DEVICES), p=dev_p))
    devs = np.where(r.random(n) < 0.75, home_dev, r.choice(len(_DEVICES), size=n, p=dev_p))
    views = np.where(r.random(n) < p["ap_fraction"], "AP", "PA")
    rgba = r.random(n) < p["rgba_fraction"]
    box_u = r.random((n, len(FINDINGS)))
    # latent labels: shared severity + correlated, autocorrelated sources
    z = r.standard_normal()
    eps = np.empty((n, len(FINDINGS)))
    eps[0] = r.standard_normal(len(FINDINGS))
    for t in range(1, n):
        eps[t] = _PHI * eps[t - 1] + np.sqrt(1 - _PHI ** 2) * r.standard_normal(len(FINDINGS))
    a = _SEVERITY_LOADING
    latent = a * z + math.sqrt(1 - a * a) * eps @ _CHOL.T
    present = latent > thresholds
    records = []
    for t in range(n):
        findings = tuple(f for k, f in enumerate(FINDINGS) if present[t, k])
        boxed = tuple(f for k, f in enumerate(FINDINGS) if present[t, k] and box_u[t, k] < p["box_fraction"])
        w, h, sp, _ = _DEVICES[int(devs[t])]
        records.append(ImageRecord(
            image_index=f"{pid:08d}_{t:03d}.png", patient_id=pid, follow_up=t, age=int(ages[t]), sex=sex,
            view=str(views[t]), findings=findings, boxed=boxed, width=w, height=h, spacing=sp, rgba=bool(rgba[t]),
        ))
    return records


def build_records(params: dict | None = None) -> list[ImageRecord]:
    """All image records (metadata and labels) without rendering anything; cheap enough for label tests."""
    p = resolve_params(params)
    thresholds = _thresholds(p["prevalence"])
    out: list[ImageRecord] = []
    for pid in range(1, p["n_patients"] + 1):
        out.extend(_patient_records(pid, p, thresholds))
    return out


def split_patients(params: dict | None, patient_ids) -> set:
    """The (seeded) set of test patients: round(test_fraction * n), at least one patient on each side."""
    p = resolve_params(params)
    ids = np.array(sorted(set(int(i) for i in patient_ids)))
    n_test = int(round(p["test_fraction"] * len(ids)))
    if len(ids) >= 2 and 0 < p["test_fraction"] < 1:
        n_test = min(max(n_test, 1), len(ids) - 1)
    perm = rng_for(p["seed"], _TAG_SPLIT).permutation(len(ids))
    return set(int(i) for i in ids[perm[:n_test]])


def image_spec(record: ImageRecord, params: dict, findings=None) -> ImageSpec:
    return ImageSpec(seed=params["seed"], patient_id=record.patient_id, follow_up=record.follow_up,
                     sex=record.sex, view=record.view,
                     findings=tuple(record.findings if findings is None else findings),
                     size=params["image_size"], difficulty=params["difficulty"])


def _box_fields(box) -> str:
    """x,y,w,h in the 1024 frame, two decimals, rounded outwards so the box still encloses the lesion."""
    x, y, w, h = box
    x0, y0 = math.floor(max(x, 0.0) * 100), math.floor(max(y, 0.0) * 100)
    x1 = math.ceil(min(x + w, BOX_FRAME) * 100)
    y1 = math.ceil(min(y + h, BOX_FRAME) * 100)
    return f"{x0 / 100:.2f},{y0 / 100:.2f},{(x1 - x0) / 100:.2f},{(y1 - y0) / 100:.2f}"


# --------------------------------------------------------------------------------------------- generate
_RENDER: dict = {}  # the parameters and image folder a forked rendering worker inherits


def _render_and_save(rec: ImageRecord) -> dict:
    """Render one record's radiograph, write its PNG and return its boxes (a worker's whole job)."""
    pixels, boxes = render_radiograph(image_spec(rec, _RENDER["params"]))
    img = Image.fromarray(pixels)  # uint8 2-D -> mode L
    if rec.rgba:
        img = img.convert("RGBA")
    img.save(_RENDER["images"] / rec.image_index, format="PNG")
    return boxes


def _rendered_boxes(records: list, threads: int):
    """Each record's boxes, in record order, rendering with ``threads`` forked processes (each image is seeded by
    its own record, so the files do not depend on the process count)."""
    import multiprocessing as mp

    if threads <= 1 or len(records) < 4 * threads or "fork" not in mp.get_all_start_methods():
        yield from map(_render_and_save, records)
        return
    with mp.get_context("fork").Pool(threads, initializer=_one_thread_per_worker) as pool:
        yield from pool.imap(_render_and_save, records, chunksize=8)


def _one_thread_per_worker() -> None:
    """A pool worker's BLAS/OpenMP pools down to one thread: the job's threads are the processes (Snakemake sets
    OMP_NUM_THREADS to the job's thread count, and each worker inherits it)."""
    from threadpoolctl import threadpool_limits

    _RENDER["thread_limits"] = threadpool_limits(limits=1)  # kept alive for the worker's lifetime


def generate_nih_synthetic(out_dir: str | os.PathLike, params: dict, threads: int = 1) -> dict:
    """Write a synthetic NIH ChestX-ray14 twin into out_dir; return a small summary dict
    (n_images, n_patients, counts per finding, n_boxes). ``threads``: rendering processes.

    Everything is written into a temporary sibling directory that replaces ``out_dir`` only at the end
    (xraypipe.atomic: a killed run's leftover is removed by the next). Same params -> byte-identical files,
    whatever ``threads``.
    """
    p = resolve_params(params)
    records = build_records(p)
    test_patients = split_patients(p, (r.patient_id for r in records))
    with atomic_dir(out_dir) as tmp:
        images = tmp / "images"
        images.mkdir()
        entry_lines = [DATA_ENTRY_HEADER]
        box_lines = [BBOX_HEADER]
        counts = {f: 0 for f in FINDINGS}
        _RENDER.update(params=p, images=images)
        try:
            rendered = list(_rendered_boxes(records, int(threads)))
        finally:
            _RENDER.clear()
        for rec, boxes in zip(records, rendered):
            for f in rec.findings:
                counts[f] += 1
            for f in rec.boxed:
                box_lines.append(f"{rec.image_index},{BOX_LABEL_SPELLING.get(f, f)},{_box_fields(boxes[f])}")
            entry_lines.append(f"{rec.image_index},{rec.finding_labels},{rec.follow_up},{rec.patient_id},{rec.age},"
                               f"{rec.sex},{rec.view},{rec.width},{rec.height},{rec.spacing!r},{rec.spacing!r}")
        (tmp / "Data_Entry_2017_v2020.csv").write_text("\n".join(entry_lines) + "\n")
        (tmp / "BBox_List_2017.csv").write_text("\n".join(box_lines) + "\n")
        test = [r.image_index for r in records if r.patient_id in test_patients]
        train = [r.image_index for r in records if r.patient_id not in test_patients]
        (tmp / "train_val_list.txt").write_text("".join(f"{n}\n" for n in sorted(train)))
        (tmp / "test_list.txt").write_text("".join(f"{n}\n" for n in sorted(test)))
    return {
        "n_images": len(records),
        "n_patients": p["n_patients"],
        "n_test_patients": len(test_patients),
        "n_test_images": len(test),
        "counts": counts,
        "n_no_finding": sum(1 for r in records if not r.findings),
        "n_boxes": len(box_lines) - 1,
        "n_ap": sum(1 for r in records if r.view == "AP"),
        "n_rgba": sum(1 for r in records if r.rgba),
        "image_size": p["image_size"],
        "seed": p["seed"],
    }


__all__ = ["DEFAULT_PARAMS", "FINDINGS", "NIH_BOX_SIZE_STATS", "DATA_ENTRY_HEADER", "BBOX_HEADER",
           "ImageRecord", "build_records", "split_patients", "resolve_params", "image_spec",
           "generate_nih_synthetic"]
