"""prepare_raw -> make_splits -> build_cache through Snakemake, in a scratch copy, for every twin format,
plus one dataset with source: download served by a local HTTP server (a dropped connection included)."""

import hashlib
import zipfile

import numpy as np
import pandas as pd
import pytest
import yaml

from http_server import LocalServer
from workflow_copy import BIN, ROOT, make_workflow_copy, run
from xraypipe import datasets

pytestmark = pytest.mark.slow


def test_every_twin_through_snakemake(tmp_path):
    cfg = yaml.safe_load((ROOT / "config" / "twins.yaml").read_text())
    # a Kermany twin zipped like the Mendeley release, served on 127.0.0.1; the connection drops half-way once
    src = tmp_path / "kermany_release"
    datasets.READERS.get("kermany").generate(src, {"seed": 9, "n_patients": 16, "val_images": 0, "image_size": 64})
    archive = tmp_path / "ChestXRay2017.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(src.rglob("*")):
            zf.write(p, p.relative_to(src).as_posix())
    with LocalServer() as srv:
        url = srv.add("/public-files/ChestXRay2017.zip", archive.read_bytes(), behaviour="drop_once")
        cfg["datasets"]["kermany_download"] = {
            "reader": "kermany", "source": "download", "pathologies": ["Pneumonia"], "preprocess": {"image_size": 32},
            "download": {"dir": str(tmp_path / "downloads"), "files": [
                {"url": url, "name": "ChestXRay2017.zip", "md5": hashlib.md5(archive.read_bytes()).hexdigest()}]}}
        cfg["experiment"]["datasets"].append("kermany_download")
        wf = make_workflow_copy(tmp_path / "wf", cfg)
        names = cfg["experiment"]["datasets"]
        targets = [f"results/cache/{d}/index.csv" for d in names]
        run([str(BIN / "snakemake"), "--cores", "2", *targets], wf, timeout=600)
        assert any(r is not None for p, r in srv.requests if p.endswith("ChestXRay2017.zip"))  # resumed
    for d in names:
        manifest = pd.read_csv(wf / f"results/splits/{d}.csv", dtype={"patient_id": str})
        index = pd.read_csv(wf / f"results/cache/{d}/index.csv", dtype={"patient_id": str})
        assert len(index) == len(manifest) > 0
        assert set(manifest["split"]) == {"train", "val", "test"}, d
        assert manifest.groupby("patient_id")["split"].nunique().max() == 1, d
        size = cfg["datasets"][d]["preprocess"]["image_size"]
        for split in ("train", "val", "test"):
            arr = np.load(wf / f"results/cache/{d}/{split}.npy", mmap_mode="r")
            assert arr.shape == ((index["split"] == split).sum(), size, size) and arr.dtype == np.uint8
            assert arr.std() > 5, (d, split)  # real pixels, not zeros
        assert (wf / f"results/cache/{d}/skipped.csv").exists()
    chex = pd.read_csv(wf / "results/splits/chexpert_twin.csv")
    assert set(chex["view"]) <= {"AP", "PA"} and (chex[["Atelectasis", "Edema"]] == -1).any().any()
    assert "study_id" in chex.columns
    mura = pd.read_csv(wf / "results/splits/mura_twin.csv")
    assert "XR_SHOULDER" not in set(mura["body_part"]) and mura["study_id"].notna().all()
    pm = pd.read_csv(wf / "results/splits/pneumoniamnist_twin.csv")
    assert (pm.loc[pm["official_split"] == "val", "split"] == "val").all()
    # the downloaded twin reads exactly like the twin itself
    down = pd.read_csv(wf / "results/splits/kermany_download.csv", dtype={"patient_id": str})
    direct = datasets.READERS.get("kermany").read(src, pathologies=["Pneumonia"])
    assert sorted(down["image_id"]) == sorted(direct["image_id"])
    assert not list((tmp_path / "downloads").rglob("*.part"))
    # a second run is a no-op
    proc = run([str(BIN / "snakemake"), "-n", "--cores", "1", *targets], wf, timeout=300)
    assert "Nothing to be done" in proc.stdout + proc.stderr
