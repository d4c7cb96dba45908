"""Shared helpers of the twin generators: parameter merging/validation and phantom rendering shortcuts."""

from __future__ import annotations

import copy

import numpy as np
from PIL import Image

from .phantom import ImageSpec, render_radiograph, rng_for  # noqa: F401


def resolve(params: dict | None, defaults: dict, what: str) -> dict:
    """Merge ``params`` over ``defaults`` (nested dicts key by key); ValueError names an unknown key."""
    out = copy.deepcopy(defaults)
    for key, value in (params or {}).items():
        if key not in defaults:
            raise ValueError(f"unknown synthetic {what} parameter {key!r}; known: {', '.join(sorted(defaults))}")
        if isinstance(defaults[key], dict):
            if not isinstance(value, dict):
                raise ValueError(f"parameter {key!r} must be a mapping")
            for k, v in value.items():
                if k not in defaults[key]:
                    raise ValueError(f"unknown key {k!r} in parameter {key!r}; known: {', '.join(defaults[key])}")
                out[key][k] = v
        else:
            out[key] = value
    return out


def check_range(p: dict, key: str, lo: float, hi: float, integer: bool = False) -> None:
    v = p[key]
    ok = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and lo <= v <= hi
    if integer:
        ok = ok and float(v).is_integer()
    if not ok:
        raise ValueError(f"parameter {key!r} must be {'an integer' if integer else 'a number'} in [{lo}, {hi}], got {v!r}")


def check_pair(p: dict, key: str, lo: int, hi: int) -> None:
    v = p[key]
    if not (isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in v)
            and lo <= v[0] <= v[1] <= hi):
        raise ValueError(f"parameter {key!r} must be [min, max] integers with {lo} <= min <= max <= {hi}, got {v!r}")


def chest_film(seed: int, patient: int, follow_up: int, sex: str, view: str, findings, size: int,
               difficulty: float) -> np.ndarray:
    """A frontal chest phantom (uint8, size x size) with the given phantom findings."""
    pixels, _ = render_radiograph(ImageSpec(seed=seed, patient_id=patient, follow_up=follow_up, sex=sex, view=view,
                                            findings=tuple(sorted(set(findings))), size=max(int(size), 32),
                                            difficulty=difficulty))
    if pixels.shape[0] != size:
        pixels = np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0))
    return pixels


def lateral_film(frontal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A pragmatic 'lateral' film: the frontal phantom squeezed to a narrower, deeper chest and mirrored."""
    h, w = frontal.shape
    narrow = Image.fromarray(frontal[:, ::-1]).resize((max(8, int(w * rng.uniform(0.55, 0.7))), h),
                                                      Image.Resampling.BILINEAR)
    canvas = Image.new("L", (w, h), int(np.percentile(frontal, 5)))
    canvas.paste(narrow, ((w - narrow.size[0]) // 2, 0))
    return np.asarray(canvas)
