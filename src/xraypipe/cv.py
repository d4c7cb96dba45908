"""Patient-wise k-fold cross-validation of a variant (config ``cross_validation``).

- ``assign_folds``: the pooled train + val images of a dataset's cache (the test split is never used) are
  split into k folds by patient (every patient's images in one fold), seeded, and stratified by label with
  scikit-learn's ``StratifiedGroupKFold`` (single-label: the label; multi-label: each image's rarest positive
  label, or "no finding"); with a stratum too small for k folds it falls back to ``GroupKFold`` (shuffled).
  The workflow writes one assignment per dataset x variant (results/cv/<dataset>/<variant>/folds.csv, so the CV
  stages vanish with an empty variant list); they are identical for every variant, which are hence compared
  on the same folds.
- ``train_fold``: fold k trains a fresh model (the variant's own seed, so every fold starts from the same
  initial weights and folds differ only by their data) on the other folds' images, minus an inner validation
  split of their patients (``cross_validation.inner_val_fraction``) on which it selects its best epoch, so
  fold k is read only to score the chosen model (selecting on the scored fold would make every fold's figure
  optimistic). Images are read straight from the train.npy/val.npy memory maps through a row selection
  (``xraypipe.data.CacheRows``), never copied. It writes the model, the history and the held-out metrics.
- ``cv_table``: one row per dataset x fold and a mean ± sd row per dataset (one table per variant).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from xraypipe.atomic import write_csv, write_json, write_text
from xraypipe.config import ConfigError

POOLED_SPLITS = ("train", "val")
FOLD_COLUMNS = ["image_id", "patient_id", "split", "cache_row", "fold"]
NO_FINDING = "no finding"


class FoldError(ConfigError):
    """The cross-validation folds cannot be made or read (names the file and the problem); a ConfigError so that
    scripts report it as one ``error:`` line (e.g. more folds than patients)."""


def check_fold_ids(folds, source: str = "cross_validation.folds") -> int:
    """k for a fold list, which must be exactly 0, 1, ..., k-1 with k >= 2 (the list DVC's matrix expands)."""
    folds = list(folds)
    if len(folds) < 2:
        raise FoldError(f"{source}: needs at least 2 folds, got {folds}")
    if folds != list(range(len(folds))):
        raise FoldError(f"{source}: must list the fold numbers 0..k-1 in order (k = {len(folds)}: "
                        f"{list(range(len(folds)))}), got {folds}")
    return len(folds)


def stratum_labels(frame: pd.DataFrame, pathologies) -> np.ndarray:
    """One stratum per image: its label if single-label; else its rarest positive label (by frequency among
    these images), or "no finding". Only certain positives (1) count; uncertain (-1) and blank (NaN) do not."""
    pathologies = list(pathologies)
    labels = frame[pathologies].to_numpy(dtype=float)
    positive = labels == 1.0
    if len(pathologies) == 1:
        return np.where(positive[:, 0], pathologies[0], NO_FINDING).astype(object)
    counts = positive.sum(axis=0)
    order = np.argsort(counts, kind="stable")  # rarest first
    strata = np.full(len(frame), NO_FINDING, dtype=object)
    for j in order[::-1]:  # most common first, so the rarest positive label is written last and wins
        strata[positive[:, j]] = pathologies[j]
    return strata


def assign_folds(index: pd.DataFrame, pathologies, k: int, seed: int = 0, source: str = "index.csv") -> pd.DataFrame:
    """The fold (0..k-1) of every train/val image of a cache index, grouped by patient.

    Returns ``FOLD_COLUMNS`` ordered by (split, cache_row). Deterministic for a given index, k and seed.
    """
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    missing = [c for c in ("image_id", "patient_id", "split", "cache_row", *pathologies) if c not in index.columns]
    if missing:
        raise FoldError(f"{source}: missing column(s) {missing}")
    pool = index[index["split"].isin(POOLED_SPLITS)].copy()
    pool = pool.sort_values(["split", "cache_row"], kind="stable").reset_index(drop=True)
    if pool["patient_id"].isna().any():
        row = pool[pool["patient_id"].isna()].iloc[0]
        raise FoldError(f"{source}: image {row['image_id']!r} has no patient_id (folds are grouped by patient)")
    patients = pool["patient_id"].astype(str).to_numpy()
    n_patients = len(set(patients))
    if k < 2:
        raise FoldError(f"{source}: cross-validation needs k >= 2 folds, got {k}")
    if n_patients < k:
        raise FoldError(f"{source}: {n_patients} train/val patients, fewer than the {k} folds asked for "
                        "(cross_validation.folds)")
    # Shuffle patients (not images) with the seed, so the fold of a patient does not depend on the ids' order.
    rng = np.random.default_rng(seed)
    unique = np.array(sorted(set(patients)))
    rank = dict(zip(unique[rng.permutation(len(unique))], range(len(unique))))
    order = np.argsort([rank[p] for p in patients], kind="stable")
    groups = patients[order]
    strata = stratum_labels(pool, pathologies)[order]
    # StratifiedGroupKFold warns (and balances badly) when a stratum has fewer members than folds.
    _, counts = np.unique(strata, return_counts=True)
    if counts.min() >= k:
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(len(groups)), strata, groups)
        method = "stratified"
    else:
        splitter = GroupKFold(n_splits=k, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(len(groups)), groups=groups)
        method = "grouped"
    fold = np.full(len(pool), -1, dtype=int)
    for f, (_, held_out) in enumerate(splits):
        fold[order[held_out]] = f
    out = pool[["image_id", "patient_id", "split", "cache_row"]].copy()
    out["fold"] = fold
    check_folds(out, k, source=source)
    out.attrs["method"] = method
    return out


def check_folds(folds: pd.DataFrame, k: int, source: str = "folds.csv") -> None:
    """Every fold 0..k-1 non-empty, every image in exactly one fold, no patient in two folds."""
    if (folds["fold"] < 0).any() or (folds["fold"] >= k).any():
        raise FoldError(f"{source}: fold numbers outside 0..{k - 1}")
    empty = sorted(set(range(k)) - set(folds["fold"].tolist()))
    if empty:
        raise FoldError(f"{source}: fold(s) {empty} hold no images")
    if folds.duplicated(["split", "cache_row"]).any():
        r = folds[folds.duplicated(["split", "cache_row"])].iloc[0]
        raise FoldError(f"{source}: image split {r['split']!r} cache_row {r['cache_row']} listed twice")
    per_patient = folds.groupby("patient_id")["fold"].nunique()
    if (per_patient > 1).any():
        raise FoldError(f"{source}: patient {per_patient[per_patient > 1].index[0]!r} is in more than one fold")


def write_folds(cache_dir, pathologies, k: int, seed: int, out_csv) -> pd.DataFrame:
    from xraypipe.preprocess import load_cache_index

    source = str(Path(cache_dir) / "index.csv")
    folds = assign_folds(load_cache_index(cache_dir), pathologies, k, seed, source=source)
    write_csv(out_csv, folds)
    sizes = folds.groupby("fold").agg(images=("image_id", "size"), patients=("patient_id", "nunique"))
    print(f"{k} patient-grouped folds ({folds.attrs.get('method')}, seed {seed}) of {len(folds)} train/val images "
          f"of {folds['patient_id'].nunique()} patients:\n{sizes.to_string()}", flush=True)
    return folds


def read_folds(path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: fold assignment not found (run the cv_folds rule for it first)")
    folds = pd.read_csv(path, dtype={"image_id": str, "patient_id": str, "split": str})
    missing = [c for c in FOLD_COLUMNS if c not in folds.columns]
    if missing:
        raise FoldError(f"{path}: missing column(s) {missing}")
    return folds


def fold_selections(folds: pd.DataFrame, fold: int, source: str = "folds.csv"):
    """(training rows, held-out rows) of ``fold``: DataFrames with split and cache_row."""
    k = int(folds["fold"].max()) + 1
    if not 0 <= fold < k:
        raise FoldError(f"{source}: fold {fold} does not exist (folds 0..{k - 1})")
    held = folds["fold"] == fold
    return folds.loc[~held, ["split", "cache_row"]], folds.loc[held, ["split", "cache_row"]]


def inner_validation_split(train_folds: pd.DataFrame, fraction: float, seed, source: str = "folds.csv"):
    """(inner training rows, inner validation rows) of the training folds' images: ``fraction`` of their patients
    (at least one, never all), drawn with ``seed``, form the validation split that picks the best epoch."""
    patients = np.array(sorted(train_folds["patient_id"].astype(str).unique()))
    if len(patients) < 2:
        raise FoldError(f"{source}: the training folds hold {len(patients)} patient(s); an inner validation split "
                        "needs at least 2")
    n_val = min(max(int(round(fraction * len(patients))), 1), len(patients) - 1)
    chosen = set(np.random.default_rng(seed).permutation(patients)[:n_val])
    inner = train_folds["patient_id"].astype(str).isin(chosen).to_numpy()
    return train_folds.loc[~inner], train_folds.loc[inner]


def train_fold(*, variant: dict, training: dict, cache_dir, folds_csv, fold: int, model_out, history_out,
               metrics_out, checkpoint, inner_val_fraction: float, seed: int, threads: int = 1,
               progress: bool = True) -> dict:
    """Train ``variant`` from a fresh model on every fold but ``fold`` (less an inner validation split of their
    patients, ``inner_validation_split`` seeded by (``seed``, ``fold``), which picks the best epoch), then score
    the chosen model on ``fold``, which nothing read before: write the model, history and the held-out metrics
    (mean and per-label AUROC)."""
    from xraypipe.preprocess import load_cache_index
    from xraypipe.datasets.contract import manifest_pathologies
    from xraypipe.train import train_variant

    folds = read_folds(folds_csv)
    check_folds(folds, int(folds["fold"].max()) + 1, source=str(folds_csv))
    index = load_cache_index(cache_dir)
    pathologies = manifest_pathologies(index)
    _, held_rows = fold_selections(folds, fold, source=str(folds_csv))
    fit, inner_val = inner_validation_split(folds.loc[folds["fold"] != fold], inner_val_fraction, [seed, fold],
                                            source=str(folds_csv))
    last = train_variant(cache_dir=cache_dir, pathologies=pathologies, variant=variant, training=training,
                         model_out=model_out, history_out=history_out, checkpoint_path=checkpoint, threads=threads,
                         progress=progress, train_rows=fit[["split", "cache_row"]],
                         val_rows=inner_val[["split", "cache_row"]])
    if not last:  # a torchrun process other than rank 0
        return {}
    metrics = held_out_metrics(model_out, cache_dir, held_rows, pathologies, training["device"])
    k = int(folds["fold"].max()) + 1
    held = folds.loc[folds["fold"] == fold]
    history = pd.read_csv(history_out)
    metrics.update({
        "fold": int(fold), "k": k, "seed": int(variant["seed"]),
        "n_train_images": len(fit), "n_train_patients": int(fit["patient_id"].nunique()),
        "n_inner_val_images": len(inner_val), "n_inner_val_patients": int(inner_val["patient_id"].nunique()),
        "n_val_images": len(held), "n_val_patients": int(held["patient_id"].nunique()),
        "epochs_run": int(history["epoch"].max()),  # the last epoch trained (early stopping may end sooner)
        "model_selection": "best epoch on an inner patient-wise validation split of the training folds",
    })
    write_json(metrics_out, metrics)
    print(f"fold {fold}/{k}: held-out mean AUROC {metrics['mean_auroc']:.4f} (best epoch {metrics['best_epoch']})",
          flush=True)
    return metrics


def held_out_metrics(model_path, cache_dir, rows: pd.DataFrame, pathologies, device_preference: str = "auto") -> dict:
    """Mean and per-label AUROC of the trained model (its best epoch; the top-k ensemble if it has one) on the
    held-out rows; only certain labels count (uncertain and blank are unknown, as in evaluation)."""
    from xraypipe.data import CacheBatches
    from xraypipe.encodings import eval_labels
    from xraypipe.metrics import auroc
    from xraypipe.inference import load_trained_model, predict_batches, select_device

    device = select_device(device_preference)
    model, meta = load_trained_model(model_path, device)
    batches = CacheBatches(cache_dir, rows, pathologies, batch_size=128, normalization=meta.get("normalization"))
    probs, _, _ = predict_batches(model, batches, device)
    labels = eval_labels(batches.index[list(pathologies)].to_numpy(dtype=float))
    per_label = {p: auroc(labels[:, j], probs[:, j]) for j, p in enumerate(pathologies)}
    finite = [v for v in per_label.values() if np.isfinite(v)]
    return {"mean_auroc": float(np.mean(finite)) if finite else float("nan"), "auroc": per_label,
            "best_epoch": int(meta["best_epoch"]), "best_val_mean_auroc": float(meta["best_val_mean_auroc"])}


# ---------------------------------------------------------------------------------------------- table
def cv_table(metric_files: dict[tuple[str, str, int], str | Path]) -> pd.DataFrame:
    """Rows per (dataset, variant): one per fold, then ``mean`` and ``sd`` rows (sample sd, ddof=1) of every
    numeric column over the folds. ``metric_files`` maps (dataset, variant, fold) -> metrics.json."""
    from xraypipe.metrics import mean_sd

    rows = []
    for (dataset, variant, fold), path in metric_files.items():
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: fold metrics not found (run the train_fold rule for it first)")
        m = json.loads(path.read_text())
        if int(m["fold"]) != int(fold):
            raise FoldError(f"{path}: holds fold {m['fold']}, expected fold {fold}")
        row = {"dataset": dataset, "variant": variant, "fold": str(fold), "n_train_images": m["n_train_images"],
               "n_train_patients": m["n_train_patients"], "n_inner_val_images": m["n_inner_val_images"],
               "n_inner_val_patients": m["n_inner_val_patients"], "n_val_images": m["n_val_images"],
               "n_val_patients": m["n_val_patients"], "best_epoch": m["best_epoch"], "mean_auroc": m["mean_auroc"]}
        row.update({label: value for label, value in m["auroc"].items()})
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    value_columns = [c for c in frame.columns if c not in ("dataset", "variant", "fold")]
    out = []
    for (dataset, variant), part in frame.groupby(["dataset", "variant"], sort=False):
        out.append(part)
        stats = {c: mean_sd(part[c].to_numpy(dtype=float)) for c in value_columns}
        out.append(pd.DataFrame([{"dataset": dataset, "variant": variant, "fold": "mean",
                                  **{c: s[0] for c, s in stats.items()}},
                                 {"dataset": dataset, "variant": variant, "fold": "sd",
                                  **{c: s[1] for c, s in stats.items()}}]))
    return pd.concat(out, ignore_index=True)


def cv_markdown(table: pd.DataFrame, caption: str) -> str:
    """Fold rows as values; the summary as one "mean ± sd" row per dataset x variant (sizes to one decimal)."""
    from xraypipe.tables import _fmt

    counts = ["n_train_images", "n_train_patients", "n_inner_val_images", "n_inner_val_patients", "n_val_images",
              "n_val_patients", "best_epoch"]
    labels = [c for c in table.columns if c not in ("dataset", "variant", "fold", *counts, "mean_auroc")]
    header = ["dataset", "variant", "fold", "train images (patients)", "epoch-selection images (patients)",
              "held-out images (patients)", "best epoch", "mean AUROC", *labels]
    lines = [caption, "", "| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] * 3 + ["---:"] * (len(header) - 3)) + "|"]
    for (dataset, variant), part in table.groupby(["dataset", "variant"], sort=False):
        for _, r in part[~part["fold"].isin(["mean", "sd"])].iterrows():
            lines.append("| " + " | ".join([
                str(dataset), str(variant), str(r["fold"]),
                f"{int(r['n_train_images'])} ({int(r['n_train_patients'])})",
                f"{int(r['n_inner_val_images'])} ({int(r['n_inner_val_patients'])})",
                f"{int(r['n_val_images'])} ({int(r['n_val_patients'])})", str(int(r["best_epoch"])),
                *[_fmt(r[c]) for c in ["mean_auroc", *labels]]]) + " |")
        mean = part[part["fold"] == "mean"].iloc[0]
        sd = part[part["fold"] == "sd"].iloc[0]
        n_folds = int((~part["fold"].isin(["mean", "sd"])).sum())
        lines.append("| " + " | ".join([
            str(dataset), str(variant), f"**mean ± sd ({n_folds} folds)**",
            f"{mean['n_train_images']:.1f} ({mean['n_train_patients']:.1f})",
            f"{mean['n_inner_val_images']:.1f} ({mean['n_inner_val_patients']:.1f})",
            f"{mean['n_val_images']:.1f} ({mean['n_val_patients']:.1f})", f"{mean['best_epoch']:.1f}",
            *[f"**{_fmt(mean[c])} ± {_fmt(sd[c])}**" for c in ["mean_auroc", *labels]]]) + " |")
    return "\n".join(lines) + "\n"


def write_cv_table(metric_files: dict, csv_out, md_out, html_out=None) -> pd.DataFrame:
    from xraypipe.tables import write_html_table

    table = cv_table(metric_files)
    if table.empty:
        raise FoldError("no fold metrics to tabulate (cross_validation.variants is empty?)")
    k = table.loc[~table["fold"].isin(["mean", "sd"]), "fold"].nunique()
    caption = (f"Patient-wise {k}-fold cross-validation of the pooled train + val images (test split untouched): "
               "AUROC on each held-out fold of the model whose epoch an inner patient-wise split of the training "
               "folds chose; mean ± sample sd over the folds.")
    write_csv(csv_out, table)
    write_text(md_out, cv_markdown(table, caption))
    if html_out:
        write_html_table(html_out, table, caption)
    return table
