"""The data stages (raw dataset, manifest with splits, cache): what their scripts call after parsing arguments.

Training and prediction live in xraypipe.train and xraypipe.inference, so these stages do not depend on that code."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pandas as pd

from xraypipe import datasets
from xraypipe.atomic import atomic_dir, write_csv
from xraypipe.datasets.contract import DatasetFormatError, manifest_pathologies, read_manifest, validate_manifest
from xraypipe.splits import (assign_splits, check_patient_leakage, patients_in_several_splits, sample_per_class,
                             split_summary)


def prepare_raw(dataset_cfg: dict, out_dir: str | Path, threads: int = 1) -> dict:
    """Materialise the dataset's raw layout at ``out_dir``: generate the synthetic twin (in ``threads`` processes
    where its generator renders in parallel), download (and safely extract) the release files listed under
    ``download``, extract a local archive, or link a local copy."""
    reader = datasets.READERS.get(dataset_cfg["reader"])
    out_dir = Path(out_dir)
    if dataset_cfg["source"] == "synthetic":
        if reader.generate is None:
            raise DatasetFormatError(f"reader {reader.name!r} has no synthetic generator")
        return reader.generate(out_dir, dataset_cfg.get("synthetic") or {}, threads=threads)
    if dataset_cfg["source"] == "download":
        from xraypipe.acquire import prepare_download

        return prepare_download(dataset_cfg, out_dir)
    root = Path(dataset_cfg["root"]).expanduser().resolve()
    if root.is_file():
        from xraypipe.acquire import extract_local_archive
        from xraypipe.download import is_archive

        if is_archive(root):
            return extract_local_archive(root, out_dir)
        # a single data file (e.g. a MedMNIST .npz, itself a zip the reader opens as is): linked, not extracted
        with atomic_dir(out_dir) as tmp:
            os.symlink(root, tmp / root.name)
        return {"linked_from": str(root)}
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist (datasets.*.root in config)")
    # Link, not copy: real datasets are tens of GB. Each top-level entry becomes a symlink.
    with atomic_dir(out_dir) as tmp:
        for entry in sorted(root.iterdir()):
            os.symlink(entry, tmp / entry.name)
    return {"linked_from": str(root)}


def in_user_paths(message: str, raw_dir: str | Path, dataset_cfg: dict) -> str:
    """``message`` with paths inside ``results/raw/<dataset>`` written as the user's own files: a linked local
    folder's entries by their real path, an extracted archive's members as ``<archive> (member ...)``."""
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        return message
    for entry in sorted(raw_dir.iterdir(), key=lambda e: -len(e.name)):  # longest names first
        if entry.is_symlink():
            message = message.replace(str(entry), os.path.realpath(entry))
    root = dataset_cfg.get("root")
    if dataset_cfg.get("source") == "local" and root:
        root = Path(root).expanduser().resolve()
        if root.is_dir():
            message = message.replace(str(raw_dir), str(root))
        elif root.is_file() and str(raw_dir) in message:
            message = message.replace(f"{raw_dir}/", "").replace(str(raw_dir), ".")
            message = f"{root} (extracted into {raw_dir}): {message}"
    return message


def make_splits(dataset_cfg: dict, raw_dir: str | Path, manifest_out, summary_out) -> pd.DataFrame:
    reader = datasets.READERS.get(dataset_cfg["reader"])
    pathologies = dataset_cfg.get("pathologies") or list(reader.pathologies)
    options = {key: dataset_cfg[key] for key in reader.options if dataset_cfg.get(key) is not None}
    try:
        manifest = reader.read(raw_dir, pathologies=pathologies, views=dataset_cfg.get("views"),
                               missing_images=dataset_cfg["missing_images"], **options)
        validate_manifest(manifest, pathologies, source=str(raw_dir), allow_uncertain=reader.has_uncertain)
    except DatasetFormatError as exc:
        raise DatasetFormatError(in_user_paths(str(exc), raw_dir, dataset_cfg)) from None
    if manifest.empty:
        raise DatasetFormatError(f"{raw_dir}: no images left after filtering (views={dataset_cfg.get('views')})")
    split_cfg = dataset_cfg["split"]
    manifest = assign_splits(manifest, use_official=split_cfg["use_official"],
                             val_fraction=split_cfg["val_fraction"],
                             test_fraction=split_cfg["test_fraction"], seed=split_cfg["seed"], unit=split_cfg["unit"])
    if split_cfg["unit"] == "image":
        warn_image_level_split(manifest, str(manifest_out))
    sample = dataset_cfg["sample"]
    if sample["max_per_class"]:
        before = manifest["split"].value_counts().to_dict()
        manifest = sample_per_class(manifest, pathologies, max_per_class=int(sample["max_per_class"]),
                                    seed=int(sample["seed"]), splits=tuple(sample["splits"]))
        after = manifest["split"].value_counts().to_dict()
        print("per-class sample (at most %d positives per label): " % int(sample["max_per_class"])
              + ", ".join(f"{s} {before.get(s, 0)} -> {after.get(s, 0)} images" for s in ("train", "val", "test")),
              flush=True)
    write_csv(manifest_out, manifest)
    write_csv(summary_out, split_summary(manifest, pathologies, unit=split_cfg["unit"]))
    print(split_sizes_line(manifest), flush=True)
    return manifest


def split_sizes_line(manifest: pd.DataFrame) -> str:
    """One log line: images and patients per split, train/val/test first (e.g. "splits: train 40 images / 18
    patients, val 10 / 5, test 20 / 9")."""
    order = [s for s in ("train", "val", "test") if s in set(manifest["split"])]
    order += sorted(set(manifest["split"]) - set(order))
    groups = manifest.groupby("split")
    images, patients = groups.size(), groups["patient_id"].nunique()
    parts = [f"{s} {images[s]} images / {patients[s]} patients" if i == 0 else f"{s} {images[s]} / {patients[s]}"
             for i, s in enumerate(order)]
    return "splits: " + ", ".join(parts)


def warn_image_level_split(manifest: pd.DataFrame, source: str) -> None:
    shared = patients_in_several_splits(manifest)
    print(f"WARNING: {source}: split.unit is 'image' (the ChestX-ray8 study's random image-level split): "
          f"{shared} of {manifest['patient_id'].nunique()} patients have images in more than one split, so this "
          "dataset's test figures are optimistic. Use it only to reproduce that study or to measure the leak "
          "beside a patient-wise split.", file=sys.stderr, flush=True)


def build_cache(dataset_cfg: dict, manifest_path, out_dir, threads: int = 1) -> pd.DataFrame:
    from xraypipe.preprocess import build_cache as _build

    manifest = read_manifest(manifest_path)
    patient_wise = dataset_cfg["split"]["unit"] == "patient"
    if patient_wise:
        check_patient_leakage(manifest, source=str(manifest_path))
    else:
        warn_image_level_split(manifest, str(manifest_path))
    pre = dataset_cfg["preprocess"]
    return _build(manifest, out_dir, image_size=pre["image_size"], resize=pre["resize"],
                  threads=threads, unreadable=pre["unreadable"], patient_wise=patient_wise)
