"""Tests of the synthetic NIH ChestX-ray14 twin (xraypipe.synthetic)."""

from __future__ import annotations

import csv
import hashlib
import os
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xraypipe.synthetic import nih, phantom
from xraypipe.synthetic.nih import (BBOX_HEADER, DATA_ENTRY_HEADER, DEFAULT_PARAMS, FINDINGS, build_records,
                                    generate_nih_synthetic, resolve_params)
from xraypipe.synthetic.phantom import NIH_BOX_SIZE_STATS, ImageSpec, render_radiograph

SMALL = {"seed": 3, "n_patients": 40, "image_size": 64, "box_fraction": 1.0, "rgba_fraction": 0.1,
         "prevalence": {"Infiltration": 0.3, "Effusion": 0.25}}
NAME = re.compile(r"^\d{8}_\d{3}\.png$")


def _hashes(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _entries(root: Path) -> list[list[str]]:
    with open(root / "Data_Entry_2017_v2020.csv", newline="") as fh:
        return list(csv.reader(fh))[1:]


def _boxes(root: Path) -> list[list[str]]:
    with open(root / "BBox_List_2017.csv", newline="") as fh:
        return list(csv.reader(fh))[1:]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("nih") / "raw"
    summary = generate_nih_synthetic(out, SMALL)
    return out, summary


# ------------------------------------------------------------------------------------------ layout
def test_same_params_give_identical_files_and_other_seed_differs(tmp_path):
    params = {"seed": 11, "n_patients": 6, "image_size": 64}
    generate_nih_synthetic(tmp_path / "a", params)
    generate_nih_synthetic(tmp_path / "b", params)
    generate_nih_synthetic(tmp_path / "c", {**params, "seed": 12})
    a, b, c = (_hashes(tmp_path / k) for k in "abc")
    assert a and a == b
    assert a != c
    shared_images = [k for k in a if k.startswith("images/") and k in c]
    assert any(a[k] != c[k] for k in shared_images)


def test_rendering_in_two_processes_writes_the_same_files(tmp_path, monkeypatch):
    """prepare_raw renders the twin with preprocess_threads processes: byte-identical to one process."""
    from xraypipe import stages
    from xraypipe.datasets import READERS

    params = {"seed": 5, "n_patients": 20, "image_size": 48}
    generate_nih_synthetic(tmp_path / "one", params, threads=1)
    monkeypatch.setitem(_PIDS, "log", tmp_path / "pids.txt")
    monkeypatch.setattr(nih, "_render_and_save", _render_logging_pid)
    stages.prepare_raw({"reader": "nih", "source": "synthetic", "synthetic": params}, tmp_path / "two", threads=2)
    assert _hashes(tmp_path / "one") == _hashes(tmp_path / "two")
    pids = set((tmp_path / "pids.txt").read_text().split())
    assert 1 <= len(pids) <= 2 and str(os.getpid()) not in pids  # forked workers rendered, not this process
    assert READERS.get("nih").generate is not None


_PIDS: dict = {}
_REAL_RENDER = nih._render_and_save


def _render_logging_pid(rec):
    with open(_PIDS["log"], "a") as fh:
        fh.write(f"{os.getpid()}\n")
    return _REAL_RENDER(rec)


def test_headers_are_exactly_the_real_ones(dataset):
    root, _ = dataset
    assert (root / "Data_Entry_2017_v2020.csv").read_text().splitlines()[0] == (
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
        "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")
    assert (root / "BBox_List_2017.csv").read_text().splitlines()[0] == "Image Index,Finding Label,Bbox [x,y,w,h]"
    assert DATA_ENTRY_HEADER.count(",") == 10 and BBOX_HEADER.count(",") == 5
    rows = _entries(root)
    assert rows and all(len(r) == 11 for r in rows)
    assert all(len(r) == 6 for r in _boxes(root))


def test_file_names_and_image_modes(dataset):
    root, summary = dataset
    names = sorted(p.name for p in (root / "images").iterdir())
    assert names == sorted(r[0] for r in _entries(root))
    assert len(names) == summary["n_images"]
    assert all(NAME.match(n) for n in names)
    modes = defaultdict(int)
    for n in names:
        with Image.open(root / "images" / n) as im:
            assert im.format == "PNG" and im.size == (64, 64)
            modes[im.mode] += 1
            if im.mode == "RGBA":
                a = np.asarray(im)
                assert (a[..., 3] == 255).all() and (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()
    assert set(modes) == {"L", "RGBA"}, modes


def test_metadata_is_realistic(dataset):
    root, _ = dataset
    rows = _entries(root)
    by_patient = defaultdict(list)
    for name, labels, fu, pid, age, sex, view, w, h, sx, sy in rows:
        assert name == f"{int(pid):08d}_{int(fu):03d}.png"
        parts = labels.split("|")
        assert labels == "No Finding" or (parts == sorted(parts) and set(parts) <= set(FINDINGS)), labels
        assert view in ("PA", "AP") and sex in ("M", "F")
        assert 2000 <= int(w) <= 3100 and 2000 <= int(h) <= 3100
        assert sx == sy and 0.139 <= float(sx) <= 0.168
        by_patient[int(pid)].append((int(fu), int(age), sex))
    assert sum(len(v) > 1 for v in by_patient.values()) >= 5  # several patients with follow-ups
    assert max(len(v) for v in by_patient.values()) >= 3
    for visits in by_patient.values():
        visits.sort()
        assert [v[0] for v in visits] == list(range(len(visits)))
        ages = [v[1] for v in visits]
        assert ages == sorted(ages)
        assert len({v[2] for v in visits}) == 1
    assert any(v[-1][1] > v[0][1] for v in by_patient.values())
    assert {r[6] for r in rows} == {"PA", "AP"}


def test_official_lists_split_by_patient_and_cover_everything(dataset):
    root, summary = dataset
    train = (root / "train_val_list.txt").read_text().split()
    test = (root / "test_list.txt").read_text().split()
    assert train and test
    assert sorted(train + test) == sorted(r[0] for r in _entries(root))
    pid = lambda n: n.split("_")[0]  # noqa: E731
    assert not {pid(n) for n in train} & {pid(n) for n in test}
    assert len({pid(n) for n in test}) == summary["n_test_patients"] == round(0.25 * 40)


def test_boxes_are_in_frame_spelled_like_the_real_file_and_match_labels(dataset):
    root, summary = dataset
    labels = {r[0]: set(r[1].split("|")) for r in _entries(root)}
    boxes = _boxes(root)
    assert len(boxes) == summary["n_boxes"] > 0
    # box_fraction 1.0: every positive finding has exactly one box
    assert len(boxes) == sum(summary["counts"].values())
    seen = set()
    for name, finding, *xywh in boxes:
        x, y, w, h = map(float, xywh)
        assert finding != "Infiltration"
        finding = "Infiltration" if finding == "Infiltrate" else finding
        assert finding in labels[name]
        assert (name, finding) not in seen
        seen.add((name, finding))
        assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 1024.0 + 1e-6 and y + h <= 1024.0 + 1e-6
    assert "Infiltrate" in {b[1] for b in boxes}


def test_summary_counts_match_the_files(dataset):
    root, summary = dataset
    rows = _entries(root)
    for f in FINDINGS:
        assert summary["counts"][f] == sum(f in r[1].split("|") for r in rows)
    assert summary["n_patients"] == 40 == len({r[3] for r in rows})


# ------------------------------------------------------------------------------------------ labels
@pytest.fixture(scope="module")
def many_records():
    return build_records({"seed": 5, "n_patients": 2500})


def _matrix(records):
    return np.array([[f in r.findings for f in FINDINGS] for r in records])


def test_prevalence_is_close_to_requested(many_records):
    m = _matrix(many_records)
    assert len(m) > 4000
    for k, f in enumerate(FINDINGS):
        want = DEFAULT_PARAMS["prevalence"][f]
        assert abs(m[:, k].mean() - want) < max(0.02, 0.2 * want), (f, m[:, k].mean(), want)
    # a partial override changes only that finding
    m2 = _matrix(build_records({"seed": 5, "n_patients": 1500, "prevalence": {"Mass": 0.3}}))
    assert abs(m2[:, FINDINGS.index("Mass")].mean() - 0.3) < 0.04
    assert abs(m2[:, FINDINGS.index("Nodule")].mean() - 0.08) < 0.02
    assert not _matrix(build_records({"n_patients": 300, "prevalence": {"Pneumonia": 0.0}}))[:, 6].any()


def test_findings_co_occur_and_persist(many_records):
    m = _matrix(many_records)
    i = {f: k for k, f in enumerate(FINDINGS)}

    def cond(a, b):  # P(a | b) / P(a)
        return m[m[:, i[b]], i[a]].mean() / m[:, i[a]].mean()

    assert cond("Effusion", "Cardiomegaly") > 1.5
    assert cond("Pneumonia", "Infiltration") > 1.5
    assert cond("Atelectasis", "Effusion") > 1.3
    # the specific links beat the background correlation that the shared severity gives every pair
    assert cond("Effusion", "Cardiomegaly") > 1.25 * cond("Pneumothorax", "Cardiomegaly")
    assert cond("Pneumonia", "Infiltration") > 1.25 * cond("Pneumothorax", "Infiltration")
    assert cond("Atelectasis", "Effusion") > 1.25 * cond("Mass", "Effusion")
    # persistence: a finding on one film makes it much more likely on the patient's next film
    prev = {}
    stay, base = defaultdict(list), m.mean(axis=0)
    for r, row in zip(many_records, m):
        if r.follow_up > 0:
            for k in np.flatnonzero(prev[r.patient_id]):
                stay[k].append(row[k])
        prev[r.patient_id] = row
    for f in ("Cardiomegaly", "Nodule", "Effusion"):
        assert np.mean(stay[i[f]]) > 2.5 * base[i[f]], f
    # patient-level severity: some patients carry many findings
    assert (m.sum(axis=1) >= 3).mean() > 0.01


# ------------------------------------------------------------------------------------------ boxes
def test_box_size_constant_matches_the_real_box_file(shared_data):
    path = shared_data / "nih" / "BBox_List_2017.csv"
    if not path.exists():
        pytest.skip(f"{path} not present")
    sizes = defaultdict(list)
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        assert next(reader)[:3] == ["Image Index", "Finding Label", "Bbox [x"]
        for row in reader:
            sizes[row[1]].append((float(row[4]), float(row[5])))
    assert {"Infiltrate"} <= set(sizes) and "Infiltration" not in sizes
    for finding, stats in NIH_BOX_SIZE_STATS.items():
        wh = np.array(sizes["Infiltrate" if finding == "Infiltration" else finding])
        w_mean, w_sd, h_mean, h_sd, w_min, w_max, h_min, h_max = stats
        np.testing.assert_allclose([w_mean, w_sd, h_mean, h_sd], [wh[:, 0].mean(), wh[:, 0].std(ddof=1),
                                   wh[:, 1].mean(), wh[:, 1].std(ddof=1)], atol=2.0, err_msg=finding)
        np.testing.assert_allclose([w_min, w_max, h_min, h_max], [wh[:, 0].min(), wh[:, 0].max(),
                                   wh[:, 1].min(), wh[:, 1].max()], atol=2.0, err_msg=finding)


def test_sampled_box_sizes_follow_the_real_statistics():
    rng = np.random.default_rng(0)
    for finding, (w_mean, w_sd, h_mean, h_sd, *_) in NIH_BOX_SIZE_STATS.items():
        wh = np.array([phantom.sample_box_size(finding, rng) for _ in range(3000)])
        assert abs(wh[:, 0].mean() - w_mean) < 0.1 * w_mean, finding
        assert abs(wh[:, 1].mean() - h_mean) < 0.1 * h_mean, finding
        assert 0.6 * w_sd < wh[:, 0].std() < 1.3 * w_sd, finding


def test_cardiomegaly_means_a_large_cardiothoracic_ratio():
    ratios = {True: [], False: []}
    for pid in range(1, 30):
        spec = ImageSpec(seed=0, patient_id=pid, follow_up=0, sex="M", view="PA", findings=(), size=64)
        an = phantom.make_anatomy(0, pid, "M", 0.5)
        normal = an.heart_box()[2] / an.thoracic_width
        les = phantom.make_lesion("Cardiomegaly", an, phantom.rng_for(0, 1, pid), phantom.rng_for(0, 2, pid))
        ratios[False].append(normal)
        ratios[True].append(les.box[2] / an.thoracic_width)
        assert spec.findings == ()
    assert max(ratios[False]) <= 0.53 and np.mean(ratios[False]) < 0.49
    assert min(ratios[True]) > 0.55


@pytest.mark.parametrize("finding", FINDINGS)
def test_a_lesion_changes_the_pixels_inside_its_box_only(finding):
    size = 128
    checked = 0
    for pid in (3, 8, 21):
        view = "AP" if pid == 8 else "PA"
        with_f, boxes = render_radiograph(ImageSpec(7, pid, 1, "F", view, (finding,), size, 0.5))
        without, none = render_radiograph(ImageSpec(7, pid, 1, "F", view, (), size, 0.5))
        assert none == {} and set(boxes) == {finding}
        diff = np.abs(with_f.astype(int) - without.astype(int))
        x, y, w, h = (v * size / 1024 for v in boxes[finding])
        inside = np.zeros_like(diff, dtype=bool)
        inside[int(y):int(np.ceil(y + h)), int(x):int(np.ceil(x + w))] = True
        assert diff[inside].mean() > 1.0, (finding, pid, diff[inside].mean())
        assert diff[inside].mean() > 10 * diff[~inside].mean()
        # nothing changes more than a pixel away from the box: the box encloses the lesion
        grown = np.zeros_like(inside)
        grown[max(int(y) - 1, 0):int(np.ceil(y + h)) + 1, max(int(x) - 1, 0):int(np.ceil(x + w)) + 1] = True
        assert not diff[~grown].any(), finding
        # ... and is not much larger than it
        rows, cols = np.nonzero(diff)
        assert np.ptp(rows) + 1 >= 0.5 * h and np.ptp(cols) + 1 >= 0.5 * w, finding
        checked += 1
    assert checked == 3


def test_lesion_contrast_falls_with_difficulty():
    def contrast(difficulty):
        a, b = render_radiograph(ImageSpec(1, 4, 0, "M", "PA", ("Mass",), 128, difficulty))
        z, _ = render_radiograph(ImageSpec(1, 4, 0, "M", "PA", (), 128, difficulty))
        x, y, w, h = (int(v * 128 / 1024) for v in b["Mass"])
        return np.abs(a.astype(int) - z.astype(int))[y:y + h + 1, x:x + w + 1].mean()
    assert contrast(0.1) > contrast(0.5) > contrast(0.9)


@pytest.mark.parametrize("size", [64, 1024])
def test_extreme_image_sizes_render(size):
    img, boxes = render_radiograph(ImageSpec(0, 1, 0, "M", "AP", ("Nodule", "Effusion"), size, 0.5))
    assert img.shape == (size, size) and img.dtype == np.uint8
    assert 40 < img.mean() < 220 and img.std() > 20
    assert set(boxes) == {"Nodule", "Effusion"}


# ------------------------------------------------------------------------------------------ params / atomicity
def test_unknown_parameter_raises_naming_it(tmp_path):
    with pytest.raises(ValueError, match="bogus_knob"):
        generate_nih_synthetic(tmp_path / "x", {"bogus_knob": 1})
    with pytest.raises(ValueError, match="Hernia"):
        resolve_params({"prevalence": {"Hernia": 0.1}})
    with pytest.raises(ValueError, match="difficulty"):
        resolve_params({"difficulty": 1.5})
    with pytest.raises(ValueError, match="follow_ups"):
        resolve_params({"follow_ups": [3, 1]})
    assert not (tmp_path / "x").exists()
    merged = resolve_params({"prevalence": {"Mass": 0.2}})
    assert merged["prevalence"]["Mass"] == 0.2 and merged["prevalence"]["Nodule"] == 0.08
    assert DEFAULT_PARAMS["prevalence"]["Mass"] == 0.07  # defaults untouched


def test_failure_mid_generation_leaves_nothing_behind(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = nih.render_radiograph

    def flaky(spec):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("renderer exploded")
        return real(spec)

    monkeypatch.setattr(nih, "render_radiograph", flaky)
    with pytest.raises(RuntimeError, match="exploded"):
        generate_nih_synthetic(tmp_path / "out", {"n_patients": 5, "image_size": 64})
    assert calls["n"] == 4
    assert list(tmp_path.iterdir()) == []

    # an existing output survives a failed regeneration untouched, and is replaced by a successful one
    monkeypatch.setattr(nih, "render_radiograph", real)
    generate_nih_synthetic(tmp_path / "out", {"n_patients": 2, "image_size": 64, "seed": 1})
    before = _hashes(tmp_path / "out")
    calls["n"] = 0
    monkeypatch.setattr(nih, "render_radiograph", flaky)
    with pytest.raises(RuntimeError):
        generate_nih_synthetic(tmp_path / "out", {"n_patients": 5, "image_size": 64})
    assert _hashes(tmp_path / "out") == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    monkeypatch.setattr(nih, "render_radiograph", real)
    generate_nih_synthetic(tmp_path / "out", {"n_patients": 3, "image_size": 64, "seed": 2})
    assert _hashes(tmp_path / "out") != before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
