"""Vectorised numpy phantom of a frontal (PA/AP) chest radiograph, with optional findings.

Everything is drawn in a normalised *anatomical* frame (x right, y down, both in [0, 1]; PA convention:
the patient's right lung on the image left, the heart on the image right). A per-image similarity
transform (small rotation, shift, scale) maps that frame onto the pixel grid, so all shapes are evaluated
at the inverse-transformed pixel centres. The image is composed as a radiographic *density* map (soft
tissue minus lung air plus bone, vessels and lesions) and tone-mapped with a film-like sigmoid.

Each finding is rendered by a function whose output is exactly zero outside its ground-truth box in the
anatomical frame; the box written to disk is the axis-aligned bound of that box after the image transform,
so every box encloses its rendered lesion.

Random streams (``numpy.random.SeedSequence`` with explicit spawn keys, never order-dependent):
patient anatomy, per-(patient, finding) lesion geometry (so a lesion persists at the same place across
follow-ups), per-image exposure/pose/noise, per-(image, finding) lesion jitter. Adding or removing a finding
therefore changes only the pixels inside that finding's box.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

FINDINGS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
            "Pneumothorax")

# Ground-truth box sizes per finding, measured from the real NIH ChestX-ray14 ``BBox_List_2017.csv``
# (984 boxes on 880 images, coordinates in the 1024x1024 frame; Wang et al., CVPR 2017, "ChestX-ray8").
# (w_mean, w_sd, h_mean, h_sd, w_min, w_max, h_min, h_max), pixels in the 1024 frame. "Infiltration" is
# spelled "Infiltrate" in that file. tests/test_synthetic_nih.py re-measures these from the real file.
NIH_BOX_SIZE_STATS: dict[str, tuple[float, ...]] = {
    "Atelectasis": (219.0, 152.2, 139.1, 71.6, 50.9, 872.1, 29.6, 439.2),
    "Cardiomegaly": (479.8, 53.4, 381.1, 56.8, 365.6, 662.1, 258.2, 544.0),
    "Effusion": (221.6, 123.9, 318.0, 195.0, 27.3, 901.1, 51.2, 873.4),
    "Infiltration": (294.0, 180.2, 297.4, 132.7, 95.6, 752.1, 55.8, 632.6),
    "Mass": (168.7, 128.8, 189.8, 133.6, 44.4, 698.6, 51.2, 674.7),
    "Nodule": (71.9, 21.2, 70.4, 23.8, 28.2, 122.4, 26.0, 150.6),
    "Pneumonia": (276.5, 158.7, 304.5, 141.1, 91.0, 763.4, 93.2, 821.5),
    "Pneumothorax": (198.9, 86.6, 246.0, 171.3, 34.1, 428.0, 21.6, 812.4),
}
# Correlation of log(w) and log(h) in the same file (rounded), used to draw (w, h) jointly.
_WH_LOG_CORR = {"Atelectasis": 0.33, "Cardiomegaly": 0.48, "Effusion": 0.24, "Infiltration": 0.55,
                "Mass": 0.84, "Nodule": 0.86, "Pneumonia": 0.63, "Pneumothorax": 0.46}
BOX_FRAME = 1024.0

# Lesion density added at difficulty 0.5 (radiographic density units: soft tissue ~1.0, aerated lung ~0.4).
# The contrast actually used is this times 2 * (1 - difficulty).
_LESION_CONTRAST = {"Atelectasis": 0.17, "Effusion": 0.36, "Infiltration": 0.15, "Mass": 0.15,
                    "Nodule": 0.13, "Pneumonia": 0.16, "Pneumothorax": 0.25}

# Spawn-key tags of the independent random streams.
_TAG_ANATOMY, _TAG_LESION, _TAG_IMAGE, _TAG_LESION_IMAGE = 11, 12, 13, 14


def rng_for(seed: int, *key: int) -> np.random.Generator:
    """A generator for one purpose, independent of every other and of the order of the calls."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=tuple(int(k) for k in key)))


def _smooth(z):
    """Smoothstep of z clipped to [0, 1]: exactly 0 for z <= 0 and 1 for z >= 1."""
    z = np.clip(z, 0.0, 1.0)
    return z * z * (3.0 - 2.0 * z)


def _lognormal(mean: float, sd: float, z: float) -> float:
    s2 = math.log1p((sd / mean) ** 2)
    return math.exp(math.log(mean) - s2 / 2 + math.sqrt(s2) * z)


def sample_box_size(finding: str, rng: np.random.Generator) -> tuple[float, float]:
    """(w, h) in the 1024 frame, log-normal with the real per-finding mean/sd and w-h correlation,
    clipped to the range observed in the real box file."""
    wm, ws, hm, hs, wmin, wmax, hmin, hmax = NIH_BOX_SIZE_STATS[finding]
    z1, z2 = rng.standard_normal(2)
    rho = _WH_LOG_CORR[finding]
    w = _lognormal(wm, ws, z1)
    h = _lognormal(hm, hs, rho * z1 + math.sqrt(1 - rho * rho) * z2)
    return float(np.clip(w, wmin, wmax)), float(np.clip(h, hmin, hmax))


# --------------------------------------------------------------------------------------------- anatomy
@dataclass(frozen=True)
class Anatomy:
    """Geometry of one patient's chest (normalised anatomical frame); ``d`` is distance from the midline."""
    cx: float            # midline
    lat: float           # lateral lung wall at the base (half the thoracic width)
    lat_taper: float     # relative narrowing of the lateral wall towards the apex
    apex_y: float        # highest point of the lung apices
    apex_d: float        # distance from the midline of the apex top
    apex_k: float        # curvature of the apical dome
    medial: float        # medial lung edge (half the width of the upper mediastinum)
    dome_y: tuple        # diaphragm dome top, (image-left = patient right, image-right)
    dome_d: float
    dome_k: float
    heart_w: float       # normal cardiac width (CTR * thoracic width)
    heart_hr: float      # heart height / width
    body_w: float        # half width of the soft-tissue envelope
    air: float           # lung air (darkness)
    rib_y0: float
    rib_sp: float
    rib_ka: float
    rib_kb: float
    rib_ant_y0: float
    clav_y: float
    clav_slope: float
    spine_w: float
    hilum_y: float
    female: bool
    bubble: float        # gastric bubble size (0: none)
    texture_seed: int    # vessel / soft-tissue texture
    ap: bool = False

    def lat_wall(self, t):
        """Distance of the lateral lung wall from the midline at relative height t (0 apex, 1 base)."""
        return self.lat * (1.0 - self.lat_taper * (1.0 - np.sqrt(np.clip(t * (2.0 - t), 0.0, 1.0))))

    @property
    def thoracic_width(self) -> float:
        return 2.0 * self.lat

    def cp_angle(self, side: int) -> tuple[float, float]:
        """(d, y) of the costophrenic angle of side 0 (image left) or 1 (image right)."""
        y = self.dome_y[side] + self.dome_k * (self.lat - self.dome_d) ** 2
        return self.lat, y

    def lung_inside(self, X, Y, side=None, outer_only=False):
        """Approximate signed distance into the lung fields (>0 inside), vectorised over X, Y.

        side None: the lung on the same side of the midline as each point. outer_only: distance to the
        lateral and apical walls only (ignoring the mediastinum and the diaphragm)."""
        dx = X - self.cx
        d = np.abs(dx)
        if side is None:
            dome = np.where(dx < 0, np.float32(self.dome_y[0]), np.float32(self.dome_y[1]))
        else:
            d = -dx if side == 0 else dx
            dome = self.dome_y[side]
        ybase = max(self.dome_y) + self.dome_k * (self.lat - self.dome_d) ** 2
        t = np.clip((Y - self.apex_y) / (ybase - self.apex_y), 0.0, 1.0)
        lat = self.lat_wall(t) - d
        top = Y - (self.apex_y + self.apex_k * (d - self.apex_d) ** 2)
        if outer_only:
            return np.minimum(lat, top)
        med = d - self.medial
        bot = dome + self.dome_k * (d - self.dome_d) ** 2 - Y
        return np.minimum(np.minimum(lat, top), np.minimum(med, bot))

    def heart_box(self, width: float | None = None, height: float | None = None):
        """(x0, y0, w, h) of the cardiac silhouette; it sits on the left hemidiaphragm, 1/3 right of midline."""
        w = self.heart_w if width is None else width
        h = self.heart_hr * w if height is None else height
        y1 = self.dome_y[1] + 0.075
        return (self.cx - 0.34 * w, y1 - h, w, h)


def make_anatomy(seed: int, patient_id: int, sex: str, difficulty: float) -> Anatomy:
    """Per-patient anatomy (drawn once); variation grows with difficulty."""
    r = rng_for(seed, _TAG_ANATOMY, patient_id)
    v = 0.5 + difficulty  # anatomical variation scale

    def n(mu, sd, lo, hi):
        return float(np.clip(mu + sd * v * r.standard_normal(), lo, hi))

    lat = n(0.375, 0.018, 0.33, 0.42)
    dome_r = n(0.655, 0.02, 0.60, 0.71)
    return Anatomy(
        cx=n(0.5, 0.008, 0.47, 0.53), lat=lat, lat_taper=n(0.42, 0.05, 0.3, 0.55),
        apex_y=n(0.125, 0.012, 0.09, 0.17), apex_d=n(0.16, 0.015, 0.12, 0.2), apex_k=n(4.5, 0.6, 3.0, 6.0),
        medial=n(0.058, 0.006, 0.045, 0.075),
        dome_y=(dome_r, dome_r + n(0.025, 0.01, 0.0, 0.05)), dome_d=n(0.15, 0.02, 0.1, 0.2),
        dome_k=n(1.5, 0.25, 0.9, 2.2),
        heart_w=n(0.46, 0.035, 0.38, 0.53) * 2 * lat, heart_hr=n(0.8, 0.05, 0.68, 0.92),
        body_w=n(0.5, 0.025, 0.44, 0.57), air=n(0.6, 0.04, 0.5, 0.7),
        rib_y0=n(0.115, 0.01, 0.09, 0.14), rib_sp=n(0.056, 0.004, 0.047, 0.066),
        rib_ka=n(1.5, 0.12, 1.1, 1.9), rib_kb=n(0.3, 0.04, 0.2, 0.4),
        rib_ant_y0=n(0.16, 0.01, 0.13, 0.19),
        clav_y=n(0.2, 0.012, 0.17, 0.24), clav_slope=n(0.3, 0.04, 0.18, 0.4),
        spine_w=n(0.036, 0.003, 0.03, 0.043), hilum_y=n(0.43, 0.015, 0.39, 0.47),
        female=(sex == "F"), bubble=float(r.uniform(0.02, 0.05) if r.random() < 0.7 else 0.0),
        texture_seed=int(r.integers(2**31)),
    )


def image_anatomy(an: Anatomy, view: str, rng: np.random.Generator, difficulty: float) -> Anatomy:
    """The anatomy as projected on one film: inspiration jitter; AP magnifies the heart, raises the
    clavicles and the diaphragm (portable films are taken with less inspiration)."""
    j = rng.standard_normal(3) * (0.5 + difficulty)
    dy = 0.008 * float(j[0])
    j = [float(v) for v in j]  # python floats: numpy scalars would promote float32 arrays to float64
    changes = dict(dome_y=(an.dome_y[0] + dy, an.dome_y[1] + dy), cx=an.cx + 0.003 * j[1],
                   heart_w=an.heart_w * (1 + 0.015 * j[2]))
    if view == "AP":
        changes.update(dome_y=(changes["dome_y"][0] - 0.03, changes["dome_y"][1] - 0.03),
                       heart_w=changes["heart_w"] * 1.12, clav_y=an.clav_y - 0.05,
                       clav_slope=an.clav_slope * 0.6, medial=an.medial * 1.12, ap=True)
    return dataclasses.replace(an, **changes)


# --------------------------------------------------------------------------------------------- noise
def _kernel(coords: np.ndarray, lo: float, hi: float, cells: int) -> np.ndarray:
    centres = lo + (np.arange(cells, dtype=np.float32) + 0.5) * (hi - lo) / cells
    sig = (hi - lo) / cells
    return np.exp(-(((coords[:, None] - centres[None, :]) / sig) ** 2)).astype(np.float32)


def smooth_noise(rng: np.random.Generator, ys: np.ndarray, xs: np.ndarray, cells: int,
                 box=(0.0, 0.0, 1.0, 1.0)) -> np.ndarray:
    """Smooth, roughly unit-variance random field sampled at rows ys x cols xs (image coordinates),
    with ``cells`` random values per side of ``box`` (x0, y0, w, h): resolution independent."""
    x0, y0, w, h = box
    g = rng.standard_normal((cells + 2, cells + 2)).astype(np.float32)
    ky = _kernel(ys, y0 - h / cells, y0 + h + h / cells, cells + 2)
    kx = _kernel(xs, x0 - w / cells, x0 + w + w / cells, cells + 2)
    return (ky @ g @ kx.T) * np.float32(1.0 / 1.1)


# --------------------------------------------------------------------------------------------- lesions
@dataclass(frozen=True)
class Lesion:
    finding: str
    box: tuple           # (x0, y0, w, h) in the normalised anatomical frame
    side: int            # 0 image-left, 1 image-right, -1 both / central
    shape: dict

    def __post_init__(self):
        object.__setattr__(self, "box", tuple(float(v) for v in self.box))


def _place_in_lung(an: Anatomy, w: float, h: float, rng, low_bias: float):
    """Centre of a w x h box inside the lungs (rejection sampling on the analytic lung shape)."""
    side = int(rng.random() < 0.5)
    ybase = an.cp_angle(side)[1]
    if w > (an.lat - an.medial) * 1.15:  # wider than one lung: bilateral, centred on the chest
        cx = an.cx + (rng.random() - 0.5) * 0.04
        cy = an.apex_y + h / 2 + (ybase - h - an.apex_y) * float(rng.beta(1.0 + low_bias, 1.0))
        return -1, cx, cy
    hx0, hy0, hw, hh = an.heart_box()
    best = None
    for _ in range(40):
        d = rng.uniform(an.medial + 0.02, an.lat - 0.02)
        y = an.apex_y + 0.03 + (ybase - an.apex_y - 0.06) * float(rng.beta(1.0 + low_bias, 1.0))
        x = an.cx + (d if side else -d)
        inside = float(an.lung_inside(np.float32(x), np.float32(y), side))
        in_heart = (hx0 + 0.1 * hw < x < hx0 + 0.9 * hw) and (y > hy0 + 0.15 * hh)
        if inside > 0.015 and not in_heart:
            best = (x, y)
            break
    if best is None:
        best = (an.cx + (1 if side else -1) * (an.medial + an.lat) / 2, (an.apex_y + ybase) / 2)
    x, y = best
    # keep the box within the thorax
    lo, hi = an.cx - an.lat, an.cx + an.lat
    x = float(np.clip(x, lo + w / 2, hi - w / 2)) if w < hi - lo else an.cx
    if h < ybase - an.apex_y:
        y = float(np.clip(y, an.apex_y + h / 2 - 0.02, ybase + 0.02 - h / 2))
    else:
        y = (an.apex_y + ybase) / 2
    return side, x, y


def make_lesion(finding: str, an: Anatomy, rng_geom, rng_img) -> Lesion:
    """Geometry of one finding for one film. ``rng_geom`` is per (patient, finding): the lesion persists
    at the same place over follow-ups; ``rng_img`` (per image) adds a little jitter."""
    w_px, h_px = sample_box_size(finding, rng_geom)
    w, h = w_px / BOX_FRAME, h_px / BOX_FRAME
    jit = [float(v) for v in rng_img.standard_normal(3)]
    shape: dict = {"seed": int(rng_geom.integers(2**31))}

    if finding == "Cardiomegaly":
        tw = an.thoracic_width
        w = float(np.clip(w * (1.08 if an.ap else 1.0), 0.555 * tw, 0.8 * tw))
        nx0, ny0, nw, nh = an.heart_box()
        w = max(w, nw * 1.08)
        h = max(h, nh * 1.05, w * 0.62)
        x0, y0, w, h = an.heart_box(w, h)
        return Lesion(finding, (x0, y0, w, h), 1, shape)

    if finding == "Effusion":
        side = int(rng_geom.random() < 0.5)
        d_cp, y_cp = an.cp_angle(side)
        lung_h = y_cp - an.apex_y
        h = float(np.clip(h, 0.05, 0.8 * lung_h))
        y1 = y_cp + 0.012
        if w > 1.2 * (an.lat - an.medial):  # both sides: one box spanning both bases
            w = float(min(w, 2 * an.lat + 0.02))
            y1 = max(an.cp_angle(0)[1], an.cp_angle(1)[1]) + 0.012
            x0 = an.cx - w / 2
            side = -1
        else:
            x_lat = an.cx + (d_cp + 0.01) * (1 if side else -1)
            x0 = x_lat - w if side else x_lat
        shape.update(meniscus=float(rng_geom.uniform(1.2, 2.2)))
        return Lesion(finding, (x0, y1 - h, w, h), side, shape)

    if finding == "Pneumothorax":
        side = int(rng_geom.random() < 0.5)
        lung_w = an.lat - an.medial
        w = float(np.clip(w, 0.04, 0.85 * lung_w))
        y_cp = an.cp_angle(side)[1]
        top = an.apex_y + float(rng_geom.uniform(0.0, 0.05))
        h = float(np.clip(h, 0.05, y_cp - top - 0.01))
        ymid = top + h / 2
        t = np.clip((ymid - an.apex_y) / (y_cp - an.apex_y), 0, 1)
        d_wall = float(an.lat_wall(t)) + 0.008
        x0 = an.cx + d_wall - w if side else an.cx - d_wall
        shape.update(rim=float(rng_geom.uniform(0.45, 0.75)))
        return Lesion(finding, (float(x0), top, w, h), side, shape)

    # parenchymal lesions
    low_bias = {"Atelectasis": 1.5, "Pneumonia": 1.0, "Infiltration": 0.7}.get(finding, 0.0)
    lung_h = max(an.cp_angle(0)[1], an.cp_angle(1)[1]) - an.apex_y
    w = float(min(w, 2 * an.lat))
    h = float(min(h, lung_h))
    side, cx, cy = _place_in_lung(an, w, h, rng_geom, low_bias)
    cx += 0.004 * jit[0]
    cy += 0.004 * jit[1]
    s = float(np.exp(0.03 * jit[2]))
    w, h = w * s, h * s
    if finding == "Mass":
        shape.update(lobes=rng_geom.uniform(0, 2 * np.pi, 3).tolist(), lobe_amp=float(rng_geom.uniform(0.05, 0.16)))
    elif finding == "Atelectasis":
        a, b = rng_geom.uniform(0.1, 0.9, 2)
        shape.update(kind="wedge" if rng_geom.random() < 0.35 else "plate", va=float(a), vb=float(b))
    return Lesion(finding, (cx - w / 2, cy - h / 2, w, h), side, shape)


def _box_local(X, Y, box):
    x0, y0, w, h = box
    u = (X - x0) / w
    v = (Y - y0) / h
    window = _smooth(u / 0.06) * _smooth((1 - u) / 0.06) * _smooth(v / 0.06) * _smooth((1 - v) / 0.06)
    return u, v, window


def _lesion_profile(les: Lesion, X, Y, px: float, rows, cols):
    """Density profile (>= 0, zero outside the box) of a parenchymal lesion on a crop."""
    u, v, win = _box_local(X, Y, les.box)
    x0, y0, w, h = les.box
    eu, ev = 2 * u - 1, 2 * v - 1
    rho2 = eu * eu + ev * ev
    f = les.finding
    if f == "Nodule":
        edge = max(0.08, 2.0 * px / min(w, h))
        prof = np.sqrt(np.clip(1 - rho2, 0, 1)) * _smooth((1 - rho2) / edge)
    elif f == "Mass":
        th = np.arctan2(ev, eu)
        p1, p2, p3 = les.shape["lobes"]
        amp = les.shape["lobe_amp"]
        b = 1 - amp * (1.5 + 0.5 * np.cos(3 * th + p1) + 0.4 * np.cos(5 * th + p2) + 0.3 * np.cos(2 * th + p3)) / 2.2
        r2 = rho2 / (b * b)
        edge = max(0.1, 2.0 * px / min(w, h))
        prof = np.sqrt(np.clip(1 - r2, 0, 1)) * _smooth((1 - r2) / edge) * 1.1
    elif f == "Infiltration":
        rng = np.random.default_rng(les.shape["seed"])
        nz = smooth_noise(rng, rows, cols, 5, les.box) + 0.5 * smooth_noise(rng, rows, cols, 10, les.box)
        env = _smooth((1 - rho2) / 0.7)
        prof = env * np.clip(0.45 + 0.6 * nz, 0, 1.3)
    elif f == "Pneumonia":
        rng = np.random.default_rng(les.shape["seed"])
        nz = smooth_noise(rng, rows, cols, 4, les.box)
        br = smooth_noise(rng, rows, cols, 9, les.box)
        env = _smooth((0.72 - rho2 + 0.2 * nz) / 0.3)
        bronchogram = np.clip(1 - np.abs(br) / 0.12, 0, 1) ** 2
        prof = env * (1.0 + 0.12 * nz - 0.3 * bronchogram)
    elif f == "Atelectasis":
        if les.shape["kind"] == "plate":
            t = float(np.clip(0.016 / h, 0.12, 0.3))  # half thickness in v units
            va = t + (1 - 2 * t) * les.shape["va"]
            vb = t + (1 - 2 * t) * (1 - les.shape["va"] if les.shape["vb"] > 0.3 else les.shape["vb"])
            vc = va + (vb - va) * u + 0.08 * np.sin(np.pi * u)
            prof = _smooth(1 - np.abs(v - vc) / t) * _smooth(u / 0.15) * _smooth((1 - u) / 0.15) * 1.3
        else:  # wedge: base on the pleura, apex towards the hilum
            lateral_is_left = les.side == 0
            ul = u if lateral_is_left else 1 - u
            half = 0.5 * (1 - ul)
            prof = _smooth((half - np.abs(v - 0.5)) / 0.08) * _smooth((1 - ul) / 0.1)
    else:
        raise ValueError(f"no renderer for {f}")
    return prof * win


# --------------------------------------------------------------------------------------------- render
@dataclass(frozen=True)
class ImageSpec:
    """Everything that determines one synthetic film."""
    seed: int
    patient_id: int
    follow_up: int
    sex: str
    view: str
    findings: tuple
    size: int = 256
    difficulty: float = 0.5


def _anatomy_rows(an: Anatomy, X, Y, hbox, px: float, vessel_terms, tex, out: dict) -> None:
    """Anatomy layers for a block of rows (kept small so numpy temporaries stay cache/allocator friendly).

    Writes into ``out``: D (density without lung air), lungmask, air (lung air, heart occluded), vmark
    (vessel/hilar markings, before masking by lesions), above (above the diaphragm)."""
    ap = an.ap
    dx = X - an.cx
    d = np.abs(dx)
    edge = max(0.005, 0.8 * px)

    # soft-tissue envelope (wider at the shoulders)
    bw = an.body_w + 0.1 * _smooth((0.3 - Y) / 0.2)
    tb = np.clip(1 - (dx / bw) ** 2, 0, 1)
    D = np.sqrt(tb) * (0.75 + 0.25 * _smooth((Y + 0.1) / 0.4))

    # lungs
    ins = an.lung_inside(X, Y)
    lungmask = _smooth(ins / (2 * edge))
    air = lungmask * (0.62 + 0.38 * _smooth(ins / 0.08))
    air *= 1 - 0.25 * _smooth((an.apex_y + 0.12 - Y) / 0.12)  # apices: more soft tissue overlap

    # heart: borders as functions of the relative height t; both start at the mediastinum, the right
    # border (image left) is widest at 60% of the height, the left border (cardiac apex) at 75%
    hx0, hy0, hw, hh = hbox
    t = (Y - hy0) / hh
    tc = np.clip(t, 0, 1)
    med = 0.9 * an.medial
    gr = np.where(tc < 0.6, np.sin(0.5 * np.pi * tc / 0.6) ** 1.3, 1 - 0.25 * ((tc - 0.6) / 0.4) ** 2)
    gl = np.where(tc < 0.75, np.sin(0.5 * np.pi * tc / 0.75) ** 1.7, 1 - 0.2 * ((tc - 0.75) / 0.25) ** 2)
    xr = an.cx - med - (an.cx - med - hx0) * gr
    xl = an.cx + med + (hx0 + hw - an.cx - med) * gl
    he = max(0.01, 2 * px)
    heart = _smooth((X - xr) / he) * _smooth((xl - X) / he) * _smooth(t / 0.04) * _smooth((1 - t) / 0.04)
    hmid, hhalf = 0.5 * (xl + xr), 0.5 * (xl - xr) + 1e-3
    hthick = np.sqrt(np.clip(1 - ((X - hmid) / hhalf) ** 2, 0, 1)) * heart
    knob = _smooth((1 - ((X - an.cx - 0.055) / 0.035) ** 2 - ((Y - an.hilum_y + 0.09) / 0.04) ** 2) / 0.3)
    air *= 1 - 0.92 * np.maximum(heart, knob)
    dome = np.where(dx < 0, np.float32(an.dome_y[0]), np.float32(an.dome_y[1]))
    above = _smooth((dome + an.dome_k * (d - an.dome_d) ** 2 - Y) / 0.03)
    D += 0.06 * hthick * above

    # radial branching markings: zero crossings of a field that varies fast with the angle around the
    # hilum and slowly with the radius (crossings merge = branch), thinning towards the periphery
    hxr, hyr = d - 0.09, Y - an.hilum_y
    hdist = np.sqrt(hxr * hxr + (0.85 * hyr) ** 2) + 1e-3
    theta = np.arctan2(hyr, hxr)
    lr = np.log(hdist)
    right = (dx > 0).astype(np.float32)
    field = np.zeros_like(X)
    for k, m, ph0, ph1 in vessel_terms:
        field += np.cos(k * theta + m * lr + ph0 + (ph1 - ph0) * right)
    vw = 0.10 + 0.25 * np.clip(1 - hdist / 0.3, 0, 1)
    vessels = np.clip(1 - np.abs(field) * np.float32(1 / math.sqrt(3.5)) / vw, 0, 1)
    vessels *= np.sqrt(vessels)
    taper = np.clip(1 - hdist / 0.33, 0, 1)
    hila = _smooth(1 - hdist / 0.075)
    vmark = lungmask * (0.13 * vessels * taper * np.sqrt(taper) + 0.17 * hila + 0.025 * tex)

    # spine (with vertebral bodies), trachea
    spine = np.sqrt(np.clip(1 - (dx / an.spine_w) ** 2, 0, 1))
    disc = 0.5 + 0.5 * np.cos(2 * np.pi * (Y - an.rib_y0) / 0.043)
    D += 0.16 * spine * (0.8 + 0.2 * disc) * _smooth((Y - 0.02) / 0.05)
    D -= 0.14 * _smooth(1 - d / 0.02) * _smooth((an.hilum_y - 0.06 - Y) / 0.04)

    # posterior ribs: from the spine up-and-out, then curving down along the lateral wall
    wall = an.lat + 0.03
    u_post = Y - (an.rib_kb * -d + an.rib_ka * d * d + 5.0 * np.clip(d - 0.24, 0, None) ** 2)
    ph = (u_post - an.rib_y0) / (an.rib_sp * (1 + 0.9 * np.clip(u_post - an.rib_y0, 0, None)))
    fr = ph - np.floor(ph)
    rw = 0.36 - 0.08 * np.clip(d / an.lat, 0, 1)  # ribs thin laterally
    band = _smooth(fr / 0.06) * _smooth((rw - fr) / 0.06)
    cortex = _smooth(1 - np.abs(fr - 0.025) / 0.04) + _smooth(1 - np.abs(fr - rw + 0.025) / 0.04)
    ribmask = (_smooth(ph / 0.2) * _smooth((10.3 - ph) / 0.3) * _smooth((wall - d) / 0.03)
               * _smooth((d - 0.02) / 0.03) * (0.35 + 0.65 * above))
    D += (0.07 * band + 0.035 * cortex) * ribmask
    # anterior ribs: fainter, from the lateral wall down towards the sternum
    dl = np.clip(wall - d, 0, None)
    pa = (Y - (0.55 * dl - 0.45 * dl * dl) - an.rib_ant_y0) / (an.rib_sp * 1.3)
    fa = pa - np.floor(pa)
    band_a = _smooth(fa / 0.1) * _smooth((0.38 - fa) / 0.1)
    D += 0.045 * band_a * _smooth(pa / 0.2) * _smooth((6 - pa) / 0.3) * _smooth((d - 0.12) / 0.05) * lungmask

    # clavicles (S-shaped, higher and more horizontal on AP films), scapulae (AP), breasts, gastric bubble
    yc = an.clav_y - an.clav_slope * (d - 0.04) + 0.25 * (d - 0.04) * (d - 0.3)
    cth = 0.012 + 0.006 * _smooth((0.12 - d) / 0.08)
    D += 0.13 * _smooth(1 - np.abs(Y - yc) / cth) * _smooth((d - 0.025) / 0.02) * _smooth((0.36 - d) / 0.03)
    if ap:
        scap = (_smooth((d - (an.lat - 0.07 + 0.1 * (Y - 0.2))) / 0.02) * _smooth((0.5 - Y) / 0.08)
                * _smooth((Y - 0.15) / 0.05))
        D += 0.07 * scap
    if an.female:
        br = ((d - 0.25) / 0.19) ** 2 + ((Y - an.dome_y[0] - 0.02) / 0.14) ** 2
        D += 0.09 * np.sqrt(np.clip(1 - br, 0, 1)) * _smooth((Y - an.dome_y[0] + 0.15) / 0.1)
    if an.bubble > 0:
        gb = ((dx - 0.14) / (1.6 * an.bubble)) ** 2 + ((Y - an.dome_y[1] - 0.045) / an.bubble) ** 2
        D -= 0.22 * _smooth((1 - gb) / 0.3)

    out["D"][...] = D
    out["lungmask"][...] = lungmask
    out["air"][...] = air
    out["vmark"][...] = vmark


def _row_blocks(S: int):
    step = max(8, 16384 // S)  # ~64 KiB float32 temporaries
    return [slice(r, min(r + step, S)) for r in range(0, S, step)]


def render_radiograph(spec: ImageSpec) -> tuple[np.ndarray, dict]:
    """Render one film. Returns (uint8 array (size, size), {finding: (x, y, w, h) in the 1024 frame})."""
    unknown = set(spec.findings) - set(FINDINGS)
    if unknown:
        raise ValueError(f"unknown finding(s) {sorted(unknown)}")
    S = int(spec.size)
    diff = float(spec.difficulty)
    kappa = 2.0 * (1.0 - diff)                # lesion contrast factor (1 at difficulty 0.5)
    var = 0.5 + diff                          # nuisance variation factor
    px = 1.0 / S
    base = make_anatomy(spec.seed, spec.patient_id, spec.sex, diff)
    ri = rng_for(spec.seed, _TAG_IMAGE, spec.patient_id, spec.follow_up)
    an = image_anatomy(base, spec.view, ri, diff)
    ap = spec.view == "AP"

    # pose: anatomical -> image similarity transform
    ang = float(np.clip(ri.normal(0, 1.2 * var), -4, 4)) * math.pi / 180
    tx, ty = (float(v) for v in np.clip(ri.normal(0, 0.012 * var, 2), -0.04, 0.04))
    sc = float(np.exp(np.clip(ri.normal(0, 0.025 * var), -0.07, 0.07)))
    ca, sa = math.cos(ang), math.sin(ang)
    # exposure / noise draws (all drawn up front so findings never shift the stream)
    d0 = 0.46 + 0.035 * var * ri.standard_normal() + (0.03 if ap else 0.0)
    width = 0.25 * math.exp(0.08 * var * ri.standard_normal()) * (1.1 if ap else 1.0)
    lo = float(np.clip(0.02 + 0.02 * var * ri.standard_normal(), 0.0, 0.1))
    hi = float(np.clip(0.97 - 0.03 * var * abs(ri.standard_normal()), 0.8, 1.0))
    gamma = math.exp(0.08 * var * ri.standard_normal())
    sigma = (0.006 + 0.022 * diff) * (1.3 if ap else 1.0)
    grad_seed, noise_seed = (int(x) for x in ri.integers(2**31, size=2))

    c = (np.arange(S, dtype=np.float32) + 0.5) / S  # pixel centres
    xi, yi = c[None, :], c[:, None]
    # inverse transform: p_anat = c0 + R^T (p_img - c0 - t) / sc
    ax, ay = (xi - 0.5 - tx) / sc, (yi - 0.5 - ty) / sc
    X = (0.5 + ca * ax + sa * ay).astype(np.float32)
    Y = (0.5 - sa * ax + ca * ay).astype(np.float32)

    def to_image(box):
        x0, y0, w, h = box
        xs = np.array([x0, x0 + w, x0, x0 + w]) - 0.5
        ys = np.array([y0, y0, y0 + h, y0 + h]) - 0.5
        ix = 0.5 + tx + sc * (ca * xs - sa * ys)
        iy = 0.5 + ty + sc * (sa * xs + ca * ys)
        return float(ix.min()), float(iy.min()), float(ix.max()), float(iy.max())

    def crop(box):
        ix0, iy0, ix1, iy1 = to_image(box)
        c0, r0 = max(int(math.floor(ix0 * S)) - 1, 0), max(int(math.floor(iy0 * S)) - 1, 0)
        c1, r1 = min(int(math.ceil(ix1 * S)) + 1, S), min(int(math.ceil(iy1 * S)) + 1, S)
        return slice(r0, max(r1, r0)), slice(c0, max(c1, c0))

    # lesion geometry first: Cardiomegaly changes the heart layer
    lesions = []
    for k, f in enumerate(FINDINGS):
        if f in spec.findings:
            lesions.append(make_lesion(f, an, rng_for(spec.seed, _TAG_LESION, spec.patient_id, k),
                                       rng_for(spec.seed, _TAG_LESION_IMAGE, spec.patient_id, spec.follow_up, k)))
    by_name = {les.finding: les for les in lesions}
    hbox = by_name["Cardiomegaly"].box if "Cardiomegaly" in by_name else an.heart_box()

    # anatomy layers, by blocks of rows
    rt = np.random.default_rng(an.texture_seed)
    vessel_terms = [(float(rt.uniform(7, 22)), float(rt.uniform(-5, 5)), float(rt.uniform(0, 2 * np.pi)),
                     float(rt.uniform(0, 2 * np.pi))) for _ in range(7)]
    tex = smooth_noise(rt, c, c, 10)
    layers = {name: np.empty((S, S), np.float32) for name in ("D", "lungmask", "air", "vmark")}
    for rows in _row_blocks(S):
        _anatomy_rows(an, X[rows], Y[rows], hbox, px, vessel_terms, tex[rows],
                      {name: arr[rows] for name, arr in layers.items()})
    D, lungmask, air, vmark = layers["D"], layers["lungmask"], layers["air"], layers["vmark"]

    # effusion: fluid replaces basal air below a meniscus that is highest along the lateral wall
    if "Effusion" in by_name:
        les = by_name["Effusion"]
        rs, cs = crop(les.box)
        u, v, win = _box_local(X[rs, cs], Y[rs, cs], les.box)
        if les.side == -1:
            q = 1 - np.abs(2 * u - 1)     # relative distance from the nearer lateral wall
        else:
            q = u if les.side == 0 else (1 - u)
        q = np.clip(q, 0, 1)
        ym = 0.03 + 1.0 * q ** les.shape["meniscus"]
        fluid = _smooth((v - ym) / 0.1) * win
        air[rs, cs] *= 1 - min(1.0, _LESION_CONTRAST["Effusion"] * kappa) * fluid
        D[rs, cs] += 0.06 * kappa * fluid  # the fluid layer also covers the diaphragm

    # pneumothorax: peripheral air without markings, bounded by the visceral pleural line
    if "Pneumothorax" in by_name:
        les = by_name["Pneumothorax"]
        rs, cs = crop(les.box)
        Xc, Yc = X[rs, cs], Y[rs, cs]
        u, v, win = _box_local(Xc, Yc, les.box)
        # the pneumothorax is the rim of the lung along the chest wall (lateral and apical) inside the box;
        # its inner border is the visceral pleural line, parallel to the wall
        rim = les.shape["rim"] * min(les.box[2], les.box[3])
        depth = an.lung_inside(Xc, Yc, side=les.side, outer_only=True)
        lm = lungmask[rs, cs]
        zone = _smooth((rim - depth) / (0.15 * rim)) * win * lm
        k = min(1.0, _LESION_CONTRAST["Pneumothorax"] * kappa * 1.6)
        vmark[rs, cs] *= 1 - k * zone
        air[rs, cs] += (lm - air[rs, cs]) * k * zone + 0.07 * kappa * zone
        lw = max(0.003, 0.9 * px)
        D[rs, cs] += 0.09 * kappa * _smooth(1 - np.abs(depth - rim) / lw) * win * lm

    # parenchymal lesions: density added mostly where there is lung
    for les in lesions:
        if les.finding in ("Cardiomegaly", "Effusion", "Pneumothorax"):
            continue
        rs, cs = crop(les.box)
        if rs.stop <= rs.start or cs.stop <= cs.start:
            continue
        prof = _lesion_profile(les, X[rs, cs], Y[rs, cs], px, c[rs], c[cs])
        D[rs, cs] += _LESION_CONTRAST[les.finding] * kappa * prof * (0.15 + 0.85 * lungmask[rs, cs])

    # exposure: smooth non-uniformity, film-like sigmoid, gamma, quantum noise
    rg = np.random.default_rng(grad_seed)
    grad = 0.05 * var * smooth_noise(rg, c, c, 3) + 0.04 * var * float(rg.standard_normal()) * (xi - 0.5)
    rn = np.random.default_rng(noise_seed)
    out = np.empty((S, S), np.uint8)
    for rows in _row_blocks(S):
        dens = D[rows] - an.air * air[rows] + vmark[rows] + grad[rows]
        img = np.tanh((dens - d0) / (2 * width)) * 0.5 + 0.5
        img = lo + (hi - lo) * np.clip(img, 0, 1) ** gamma
        img += sigma * rn.standard_normal(img.shape, dtype=np.float32)
        out[rows] = np.clip(img * 255.0 + 0.5, 0, 255)

    boxes = {}
    for les in lesions:
        ix0, iy0, ix1, iy1 = to_image(les.box)
        ix0, iy0 = max(ix0, 0.0), max(iy0, 0.0)
        ix1, iy1 = min(ix1, 1.0), min(iy1, 1.0)
        boxes[les.finding] = (ix0 * BOX_FRAME, iy0 * BOX_FRAME, (ix1 - ix0) * BOX_FRAME, (iy1 - iy0) * BOX_FRAME)
    return out, boxes
