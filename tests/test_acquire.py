"""prepare_raw for every source: each twin archived, served on 127.0.0.1, downloaded, verified, extracted, read;
local archives; the cache stage on array sources (MedMNIST) and its skip policy for unreadable images."""

import hashlib
import shutil
import tarfile
import zipfile

import numpy as np
import pandas as pd
import pytest

from http_server import LocalServer
from xraypipe import datasets, stages
from xraypipe.config import ConfigError, validate_config
from xraypipe.datasets import DatasetFormatError
from xraypipe.download import DownloadError
from xraypipe.preprocess import ImageDecodeError, build_cache, load_cache_index, load_cache_split
from xraypipe.splits import assign_splits
from config_sections import validated_dataset
from workflow_copy import load_tiny_config


def _zip_dir(src, archive):
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(src.rglob("*")):
            zf.write(p, p.relative_to(src).as_posix())


def _tar_dir(src, archive, members):
    with tarfile.open(archive, "w:gz") as tar:
        for m in members:
            tar.add(src / m, arcname=m)


def md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def _manifest(reader, root):
    m = datasets.READERS.get(reader).read(root)
    return m.drop(columns=["path"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Every twin generated, packed like its release, and served by a local HTTP server."""
    work = tmp_path_factory.mktemp("served")
    twins = {}
    with LocalServer() as srv:
        for reader, params in (("nih", {"n_patients": 12}), ("chexpert", {"n_patients": 6, "n_valid_patients": 3}),
                               ("mura", {"n_patients": 8, "n_valid_patients": 3}), ("kermany", {"n_patients": 10}),
                               ("pneumoniamnist", {"n_train": 10, "n_val": 4, "n_test": 5})):
            raw = work / f"{reader}_twin"
            datasets.READERS.get(reader).generate(raw, params)
            files = []
            if reader == "nih":  # image archives (two, like images_001..012) + metadata files
                images = sorted(p.relative_to(raw).as_posix() for p in (raw / "images").iterdir())
                half = len(images) // 2
                for k, chunk in enumerate((images[:half], images[half:]), start=1):
                    arc = work / f"images_{k:03d}.tar.gz"
                    _tar_dir(raw, arc, chunk)
                    behaviour = "drop_once" if k == 2 else "ok"  # one archive drops the connection half-way
                    files.append({"url": srv.add(f"/nih/box{k}.gz", arc.read_bytes(), behaviour),
                                  "name": arc.name, "md5": md5(arc)})
                for meta in ("Data_Entry_2017_v2020.csv", "BBox_List_2017.csv", "train_val_list.txt", "test_list.txt"):
                    files.append({"url": srv.add(f"/nih/{meta}", (raw / meta).read_bytes()), "md5": md5(raw / meta)})
            elif reader == "pneumoniamnist":
                npz = raw / "pneumoniamnist.npz"
                files.append({"url": srv.add("/zenodo/pneumoniamnist.npz?download=1", npz.read_bytes()),
                              "name": "pneumoniamnist.npz", "md5": md5(npz)})
            else:
                arc = work / f"{reader}.zip"
                _zip_dir(raw, arc)
                files.append({"url": srv.add(f"/{reader}.zip", arc.read_bytes()), "sha256":
                              hashlib.sha256(arc.read_bytes()).hexdigest()})
            twins[reader] = (raw, files)
        yield srv, twins, work


@pytest.mark.parametrize("reader", ["nih", "chexpert", "mura", "kermany", "pneumoniamnist"])
def test_download_source_reproduces_the_twin(served, reader, tmp_path):
    srv, twins, _ = served
    raw, files = twins[reader]
    cfg = validated_dataset({"reader": reader, "source": "download", "download": {"dir": str(tmp_path / "dl"),
                                                                                   "files": files}})
    out = tmp_path / "results" / "raw" / "ds"
    summary = stages.prepare_raw(cfg, out)
    assert summary["files"]
    assert not list((tmp_path / "dl").rglob("*.part"))
    pd.testing.assert_frame_equal(_manifest(reader, out), _manifest(reader, raw))
    if reader == "nih":  # the archive served with a dropped connection was resumed with a Range request
        ranges = [r for p, r in srv.requests if p == "/nih/box2.gz"]
        assert any(r is not None for r in ranges)


def test_wrong_checksum_stops_prepare_raw_and_leaves_no_output(served, tmp_path):
    _, twins, _ = served
    raw, files = twins["kermany"]
    bad = [dict(files[0], sha256="0" * 64)]
    cfg = validated_dataset({"reader": "kermany", "source": "download", "download": {"dir": str(tmp_path / "dl"),
                                                                                      "files": bad}})
    with pytest.raises(DownloadError, match=r"kermany\.zip.*wrong sha256 checksum"):
        stages.prepare_raw(cfg, tmp_path / "raw" / "k")
    assert not (tmp_path / "raw" / "k").exists()
    assert not list((tmp_path / "dl").rglob("*"))  or all(p.is_dir() for p in (tmp_path / "dl").rglob("*"))


def test_file_without_url_is_a_clear_error(tmp_path):
    cfg = validated_dataset({"reader": "nih", "source": "download", "download": {
        "dir": str(tmp_path), "files": [{"url": None, "name": "Data_Entry_2017_v2020.csv"}]}})
    with pytest.raises(DatasetFormatError, match=r"Data_Entry_2017_v2020\.csv\) has no url"):
        stages.prepare_raw(cfg, tmp_path / "raw" / "nih")


def test_local_archive_and_file_url(served, tmp_path):
    _, twins, work = served
    raw, _ = twins["mura"]
    # source: local with root an archive (a registration-gated download the user already has)
    out = tmp_path / "a"
    stages.prepare_raw({"reader": "mura", "source": "local", "root": str(work / "mura.zip")}, out)
    pd.testing.assert_frame_equal(_manifest("mura", out), _manifest("mura", raw))
    # source: download with a file:// URL (verified in place, not copied to the download dir)
    out = tmp_path / "b"
    cfg = validated_dataset({"reader": "mura", "source": "download", "download": {
        "dir": str(tmp_path / "dl"), "files": [{"url": (work / "mura.zip").as_uri(), "md5": md5(work / "mura.zip")}]}})
    stages.prepare_raw(cfg, out)
    pd.testing.assert_frame_equal(_manifest("mura", out), _manifest("mura", raw))
    with pytest.raises(FileNotFoundError, match="nope.zip"):
        stages.prepare_raw(validated_dataset({**cfg, "download": {"files": [{"url": str(work / "nope.zip")}]}}),
                           tmp_path / "c")


def test_config_accepts_download_and_body_parts_and_rejects_misuse():
    cfg = load_tiny_config()
    cfg["datasets"]["m"] = {"reader": "mura", "source": "download", "body_parts": ["XR_WRIST"],
                            "download": {"files": [{"url": "https://example.invalid/MURA-v1.1.zip"}]}}
    validate_config(cfg)
    cfg["datasets"]["m"]["body_parts"] = ["XR_KNEE"]
    with pytest.raises(ConfigError, match=r"datasets\.m\.body_parts"):
        validate_config(cfg)
    cfg["datasets"]["m"] = {"reader": "kermany", "source": "download", "body_parts": ["XR_WRIST"],
                            "download": {"files": [{"url": "x.zip", "md5": "zz"}]}}
    with pytest.raises(ConfigError, match=r"md5"):
        validate_config(cfg)
    cfg["datasets"]["m"]["download"]["files"][0].pop("md5")
    with pytest.raises(ConfigError, match=r"datasets\.m\.body_parts: not supported by reader 'kermany'"):
        validate_config(cfg)
    cfg["datasets"]["m"] = {"reader": "kermany", "source": "download"}
    with pytest.raises(ConfigError, match=r"datasets\.m\.download\.files: required"):
        validate_config(cfg)


# ------------------------------------------------------------------------------------------- cache stage
def test_cache_reads_npz_arrays_exactly(shared_data, tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "pneumoniamnist.npz").symlink_to(shared_data / "pneumoniamnist" / "pneumoniamnist_trainval.npz")
    m = assign_splits(datasets.READERS.get("pneumoniamnist").read(tmp_path / "raw"))
    index = build_cache(m, tmp_path / "cache", image_size=28, progress=False)
    with np.load(shared_data / "pneumoniamnist" / "pneumoniamnist_trainval.npz") as d:
        arrays = {k: d[k] for k in ("train_images", "val_images")}
    for split in ("train", "val", "test"):
        arr = load_cache_split(tmp_path / "cache", split)
        rows = index[index["split"] == split].sort_values("cache_row")
        src = np.stack([arrays[k][i] for k, i in zip(rows["array_key"], rows["array_index"])])
        np.testing.assert_array_equal(arr, src)  # 28 px -> 28 px: bit-exact copy
    assert set(load_cache_index(tmp_path / "cache")["array_key"]) == {"train_images", "val_images"}
    assert pd.read_csv(tmp_path / "cache" / "skipped.csv").empty
    bigger = build_cache(m.head(50), tmp_path / "c64", image_size=64, progress=False)
    assert load_cache_split(tmp_path / "c64", "train").shape[1:] == (64, 64) and len(bigger) == 50


def test_unreadable_images_error_by_default_or_are_skipped_with_a_report(served, tmp_path):
    _, twins, _ = served
    raw = tmp_path / "k"
    shutil.copytree(twins["kermany"][0], raw)
    m = assign_splits(datasets.READERS.get("kermany").read(raw), val_fraction=0.3)
    broken = m.iloc[3]
    with open(broken["path"], "r+b") as f:
        f.truncate(40)  # a truncated JPEG
    with pytest.raises(ImageDecodeError, match=broken["path"].replace("/", ".")):
        build_cache(m, tmp_path / "strict", image_size=32, progress=False)
    index = build_cache(m, tmp_path / "lenient", image_size=32, progress=False, unreadable="skip")
    skipped = pd.read_csv(tmp_path / "lenient" / "skipped.csv")
    assert list(skipped["image_id"]) == [broken["image_id"]] and "cannot decode" in skipped["error"].iloc[0]
    assert len(index) == len(m) - 1 and broken["image_id"] not in set(index["image_id"])
    split = broken["split"]
    arr = load_cache_split(tmp_path / "lenient", split)
    rows = index[index["split"] == split]
    assert len(arr) == len(rows) and list(rows["cache_row"]) == list(range(len(rows)))
    # the rows kept are exactly the strict decode of the same images
    ref = build_cache(m[m["image_id"] != broken["image_id"]], tmp_path / "ref", image_size=32, progress=False)
    np.testing.assert_array_equal(arr, load_cache_split(tmp_path / "ref", split))
    assert list(ref["image_id"]) == list(index["image_id"])
