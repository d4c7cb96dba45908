"""Patient-wise k-fold cross-validation (issue 8): folds, the row-selection loader, fresh models per fold,
the k-fold table, config errors, and a tiny Snakemake run of the cv rules."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from config_sections import validated_section
from test_train_resume import validated_variant
from workflow_copy import BIN, load_tiny_config, make_workflow_copy, run

from xraypipe.config import ConfigError, validate_config
from xraypipe.cv import (
    FoldError,
    assign_folds,
    check_fold_ids,
    check_folds,
    cv_table,
    fold_selections,
    read_folds,
    train_fold,
    write_cv_table,
    write_folds,
)
from xraypipe.data import GRAY_MEAN, GRAY_STD, CacheBatches, CacheRows
from xraypipe.workflow import PATHS

PATHOLOGIES = ["Mass", "Effusion"]
VARIANT = validated_variant({"model": "small_cnn", "epochs": 2, "batch_size": 16, "optimizer": "adam", "lr": 0.003,
                             "weight_decay": 0.0, "loss": "bce", "augment": True, "seed": 3,
                             "model_args": {"widths": [8, 16]}, "weights": None})
TRAINING = validated_section("training", device="cpu", amp=True, channels_last=True)


def make_cache(path, n_patients=40, size=16, seed=0):
    """A learnable toy cache of patients with 1-3 images each, in train, val and test; 'Mass' brightens the
    centre, 'Effusion' the bottom rows. Every image's pixels are distinct (a row mix-up cannot go unnoticed)."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True)
    rows, images = [], {"train": [], "val": [], "test": []}
    for p in range(n_patients):
        split = "test" if p % 5 == 4 else ("val" if p % 5 == 3 else "train")
        for i in range(int(rng.integers(1, 4))):
            labels = rng.integers(0, 2, 2).astype(float)
            image = rng.normal(100, 20, (size, size))
            image[6:10, 6:10] += labels[0] * 60
            image[-4:, :] += labels[1] * 60
            rows.append({"cache_row": len(images[split]), "image_id": f"p{p}_{i}.png", "path": "",
                         "patient_id": f"p{p:03d}", "follow_up": i, "view": "PA", "sex": "F", "age": 40,
                         "official_split": "", "split": split, "Mass": labels[0], "Effusion": labels[1]})
            images[split].append(np.clip(image, 0, 255).astype(np.uint8))
    for split, arrays in images.items():
        np.save(path / f"{split}.npy", np.stack(arrays))
    rows[1]["Effusion"] = np.nan  # unknown labels are masked in training and ignored in the metrics
    pd.DataFrame(rows).to_csv(path / "index.csv", index=False)
    return path


def index_of(cache):
    return pd.read_csv(cache / "index.csv", dtype={"patient_id": str, "image_id": str})


def synthetic_index(n_patients=300, seed=0, rare_share=0.04):
    """An index of many patients (1-4 images), one common and one rare label, for the fold statistics."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        split = "val" if p % 5 == 0 else ("test" if p % 7 == 0 else "train")
        for i in range(int(rng.integers(1, 5))):
            rows.append({"image_id": f"p{p}_{i}", "patient_id": f"p{p}", "split": split,
                         "Common": float(rng.random() < 0.3), "Rare": float(rng.random() < rare_share)})
    index = pd.DataFrame(rows)
    index["cache_row"] = index.groupby("split").cumcount()
    return index


# ---------------------------------------------------------------------------------------------- folds
def test_folds_cover_every_train_val_patient_once_and_are_deterministic():
    index = synthetic_index()
    folds = assign_folds(index, ["Common", "Rare"], 5, seed=0)
    pool = index[index["split"].isin(["train", "val"])]
    # every train/val image exactly once, no test image
    assert len(folds) == len(pool)
    assert set(zip(folds["split"], folds["cache_row"])) == set(zip(pool["split"], pool["cache_row"]))
    assert not folds.duplicated(["split", "cache_row"]).any() and "test" not in set(folds["split"])
    # patient-disjoint: one fold per patient; every patient of train/val appears
    assert (folds.groupby("patient_id")["fold"].nunique() == 1).all()
    assert set(folds["patient_id"]) == set(pool["patient_id"])
    assert sorted(folds["fold"].unique()) == [0, 1, 2, 3, 4]
    # the image ids travel with their (split, cache_row)
    merged = folds.merge(index, on=["split", "cache_row"], suffixes=("", "_index"))
    assert (merged["image_id"] == merged["image_id_index"]).all()
    # balanced sizes: each fold holds about a fifth of the images
    sizes = folds["fold"].value_counts()
    assert sizes.max() - sizes.min() <= 0.1 * len(folds), sizes
    # deterministic for a seed, different for another
    again = assign_folds(index.sample(frac=1, random_state=1), ["Common", "Rare"], 5, seed=0)
    pd.testing.assert_frame_equal(folds.reset_index(drop=True), again.reset_index(drop=True))
    other = assign_folds(index, ["Common", "Rare"], 5, seed=1)
    assert not (other["fold"].to_numpy() == folds["fold"].to_numpy()).all()


def test_folds_are_stratified_by_label():
    index = synthetic_index(n_patients=400, seed=2)
    for labels in (["Common"], ["Common", "Rare"]):
        folds = assign_folds(index, labels, 5, seed=0)
        assert folds.attrs["method"] == "stratified"
        merged = folds.merge(index[["split", "cache_row", "Common", "Rare"]], on=["split", "cache_row"])
        share = merged.groupby("fold")["Common"].mean()
        overall = merged["Common"].mean()
        assert (share - overall).abs().max() < 0.03, share
    # multi-label: the rare label (stratum of its images) is spread over every fold
    rare = merged.groupby("fold")["Rare"].sum()
    assert (rare >= 0.5 * merged["Rare"].sum() / 5).all(), rare
    # patient-grouped stratification beats chance: plain grouped folds of the same patients are less even
    from sklearn.model_selection import GroupKFold

    pool = index[index["split"].isin(["train", "val"])].reset_index(drop=True)
    plain = np.zeros(len(pool), int)
    for f, (_, held) in enumerate(GroupKFold(5, shuffle=True, random_state=0).split(pool, groups=pool["patient_id"])):
        plain[held] = f
    plain_spread = pool.groupby(plain)["Rare"].sum().std()
    assert rare.std() <= plain_spread + 1e-9


def test_folds_fall_back_to_grouped_when_a_stratum_is_too_small():
    index = synthetic_index(n_patients=60, seed=3, rare_share=0.0)
    index.loc[index.index[0], "Rare"] = 1.0  # a single rare positive cannot be spread over 5 folds
    folds = assign_folds(index, ["Common", "Rare"], 5, seed=0)
    assert folds.attrs["method"] == "grouped"
    assert (folds.groupby("patient_id")["fold"].nunique() == 1).all() and folds["fold"].nunique() == 5


def test_fold_errors_name_the_problem(tmp_path):
    index = synthetic_index(n_patients=6)
    n = index[index["split"].isin(["train", "val"])]["patient_id"].nunique()
    with pytest.raises(FoldError, match=f"{n} train/val patients, fewer than the {n + 1} folds"):
        assign_folds(index, ["Common"], n + 1, source="results/cache/x/index.csv")
    with pytest.raises(FoldError, match="k >= 2"):
        assign_folds(index, ["Common"], 1)
    with pytest.raises(FoldError, match="at least 2 folds"):
        check_fold_ids([0])
    with pytest.raises(FoldError, match=r"0..k-1"):
        check_fold_ids([1, 2])
    folds = assign_folds(synthetic_index(), ["Common"], 3)
    with pytest.raises(FoldError, match="fold 3 does not exist"):
        fold_selections(folds, 3)
    many = folds["patient_id"].value_counts().index[0]  # a patient with several images
    bad = folds.copy()
    first = bad.index[bad["patient_id"] == many][0]
    bad.loc[first, "fold"] = (bad.loc[first, "fold"] + 1) % 3
    with pytest.raises(FoldError, match=f"patient {many!r} is in more than one fold"):
        check_folds(bad, 3)
    path = tmp_path / "folds.csv"
    folds.drop(columns="fold").to_csv(path, index=False)
    with pytest.raises(FoldError, match=r"folds.csv: missing column\(s\) \['fold'\]"):
        read_folds(path)
    with pytest.raises(FileNotFoundError, match="cv_folds rule"):
        read_folds(tmp_path / "absent.csv")


def test_config_validation_of_cross_validation():
    cfg = load_tiny_config()
    ok = validate_config({**cfg, "cross_validation": {"variants": ["small_cnn"]}})
    assert ok["cross_validation"] == {"variants": ["small_cnn"], "folds": [0, 1, 2, 3, 4], "seed": 0,
                                      "inner_val_fraction": 0.15}
    assert validate_config({k: v for k, v in cfg.items() if k != "cross_validation"})["cross_validation"]["variants"] == []
    cases = [({"folds": [0]}, "cross_validation.folds: [0] is too short"),
             ({"folds": [0, 2]}, "cross_validation.folds: must be the fold numbers 0..k-1"),
             ({"folds": [0, 0]}, "cross_validation.folds"),
             ({"variants": ["small_cn"]}, ("cross_validation.variants[0]: 'small_cn' is not defined under variants: "
                                           "(did you mean 'small_cnn'?)")),
             ({"k": 5}, "unknown key 'cross_validation.k'")]
    for section, message in cases:
        with pytest.raises(ConfigError) as err:
            validate_config({**cfg, "cross_validation": section})
        assert message in str(err.value), (section, str(err.value))


# ---------------------------------------------------------------------------------------------- loader
def test_row_selection_reads_exactly_the_selected_images_and_labels(tmp_path):
    cache = make_cache(tmp_path / "cache")
    index = index_of(cache)
    direct = {s: np.load(cache / f"{s}.npy") for s in ("train", "val", "test")}
    folds = assign_folds(index, PATHOLOGIES, 3, seed=0)
    train_rows, held_rows = fold_selections(folds, 1)
    for rows in (train_rows, held_rows, held_rows.iloc[::-1]):
        batches = CacheBatches(cache, rows, PATHOLOGIES, batch_size=7)
        # index: exactly the selected rows, ordered by (split, cache_row), with their own labels
        expected = rows.sort_values(["split", "cache_row"]).reset_index(drop=True)
        assert batches.index[["split", "cache_row"]].astype({"cache_row": int}).equals(expected.astype({"cache_row": int}))
        seen = []
        for x, y, m, pos in batches:
            got = np.rint((x[:, 0].numpy() * GRAY_STD + GRAY_MEAN) * 255).astype(np.uint8)
            for k, p in enumerate(pos):
                split, row = batches.index.loc[p, ["split", "cache_row"]]
                np.testing.assert_array_equal(got[k], direct[split][row])
                truth = index[(index["split"] == split) & (index["cache_row"] == row)][PATHOLOGIES].to_numpy()[0]
                known = ~np.isnan(truth)
                np.testing.assert_array_equal(y[k].numpy()[known], truth[known])
                np.testing.assert_array_equal(m[k].numpy(), known.astype(np.float32))
            seen.extend(pos.tolist())
        assert sorted(seen) == list(range(len(rows)))
    # a shuffled, augmented epoch still visits every selected row once
    shuffled = CacheBatches(cache, train_rows, PATHOLOGIES, batch_size=5, shuffle=True, augment=True, seed=1)
    assert sorted(np.concatenate([r for *_, r in shuffled]).tolist()) == list(range(len(train_rows)))
    # the view itself: any order, ints, slices, duplicates
    view = CacheRows(cache, ["val", "train", "val", "test"], [2, 0, 0, 1])
    assert view.shape == (4, 16, 16) and len(view) == 4
    np.testing.assert_array_equal(view[[3, 0, 0, 1]], np.stack([direct["test"][1], direct["val"][2],
                                                                direct["val"][2], direct["train"][0]]))
    np.testing.assert_array_equal(view[2], direct["val"][0])
    np.testing.assert_array_equal(view[1:3], np.stack([direct["train"][0], direct["val"][0]]))


def test_row_selection_errors_name_the_row(tmp_path):
    cache = make_cache(tmp_path / "cache")
    n_val = len(np.load(cache / "val.npy"))
    with pytest.raises(ValueError, match=f"no row with split 'val' and cache_row {n_val}"):
        CacheBatches(cache, pd.DataFrame({"split": ["val"], "cache_row": [n_val]}), PATHOLOGIES, batch_size=4)
    with pytest.raises(ValueError, match="names split 'train' cache_row 0 twice"):
        CacheBatches(cache, pd.DataFrame({"split": ["train", "train"], "cache_row": [0, 0]}), PATHOLOGIES,
                     batch_size=4)
    with pytest.raises(ValueError, match=r"val.npy: cache_row 999 out of range"):
        CacheRows(cache, ["val"], [999])


# ---------------------------------------------------------------------------------------------- training
def test_each_fold_trains_a_fresh_model_and_scores_its_held_out_fold(tmp_path, monkeypatch, capsys):
    from sklearn.metrics import roc_auc_score

    import xraypipe.train as train_module
    from xraypipe.models import build_model
    from xraypipe.inference import load_trained_model

    cache = make_cache(tmp_path / "cache")
    folds_csv = tmp_path / "folds.csv"
    folds = write_folds(cache, PATHOLOGIES, 3, seed=0, out_csv=folds_csv)
    initial = []
    real_build = train_module.build_model

    def recording_build(*args, **kwargs):
        model = real_build(*args, **kwargs)
        if "weights" in kwargs:  # the training run's build (loading a trained model for scoring passes none)
            initial.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return model

    monkeypatch.setattr(train_module, "build_model", recording_build)

    seen = []  # the rows each training run read (training and model selection)
    real_train_variant = train_module.train_variant

    def recording_train_variant(**kwargs):
        seen.append((kwargs["train_rows"].copy(), kwargs["val_rows"].copy()))
        return real_train_variant(**kwargs)

    monkeypatch.setattr(train_module, "train_variant", recording_train_variant)

    def run_fold(fold, checkpoint=None):
        out = tmp_path / f"fold{fold}"
        return train_fold(variant=VARIANT, training=TRAINING, cache_dir=cache, folds_csv=folds_csv, fold=fold,
                          model_out=out / "model.pt", history_out=out / "history.csv",
                          metrics_out=out / "metrics.json", checkpoint=checkpoint or out / "last.pt",
                          inner_val_fraction=0.25, seed=0, progress=False), out

    m0, out0 = run_fold(0)
    # fold 1 finds a checkpoint left by fold 0 (say, a shared path after a crash): it must not resume from it
    leftover = tmp_path / "shared" / "last.pt"
    leftover.parent.mkdir()
    torch.save({"fingerprint": json.loads(json.dumps(torch.load(out0 / "model.pt", weights_only=False)
                                                     ["metadata"]["fingerprint"])), "model": {}}, leftover)
    m1, out1 = run_fold(1, checkpoint=leftover)
    assert "ignoring" in capsys.readouterr().out
    assert not leftover.exists()  # the finished run removed its (fresh) checkpoint

    # both folds started from the freshly built model of the variant's seed, not from a previous fold's weights
    torch.manual_seed(VARIANT["seed"])
    fresh = build_model("small_cnn", num_classes=2, in_channels=1, widths=[8, 16]).state_dict()
    assert len(initial) == 2
    for state in initial:
        assert state.keys() == fresh.keys()
        assert all(torch.equal(state[k], fresh[k]) for k in fresh)
    trained0 = torch.load(out0 / "model.pt", weights_only=False)["state_dict"]
    assert not all(torch.equal(trained0[k], fresh[k]) for k in fresh)  # training did move the weights

    # the metrics: sizes from folds.csv, AUROC recomputed independently (sklearn) on the held-out images
    index = index_of(cache)
    direct = {s: np.load(cache / f"{s}.npy") for s in ("train", "val")}
    for fold, metrics, out in ((0, m0, out0), (1, m1, out1)):
        saved = json.loads((out / "metrics.json").read_text())
        assert saved["fold"] == fold and saved["k"] == 3
        held = folds[folds["fold"] == fold]
        assert saved["n_val_images"] == len(held) and saved["n_val_patients"] == held["patient_id"].nunique()
        # training and model selection read the other folds only: an inner split of their patients picks the epoch
        fit, inner = seen[fold]
        key = lambda frame: set(zip(frame["split"], frame["cache_row"]))  # noqa: E731
        others = folds[folds["fold"] != fold]
        assert key(fit) | key(inner) == key(others) and not key(fit) & key(inner)
        assert not (key(fit) | key(inner)) & key(held), "the scored fold was read before scoring"
        inner_patients = others.merge(inner, on=["split", "cache_row"])["patient_id"]
        assert inner_patients.nunique() == round(0.25 * others["patient_id"].nunique())
        assert not set(inner_patients) & set(others.merge(fit, on=["split", "cache_row"])["patient_id"])
        assert saved["n_train_images"] == len(fit) and saved["n_inner_val_images"] == len(inner)
        assert saved["n_train_images"] + saved["n_inner_val_images"] == len(folds) - len(held)
        history = pd.read_csv(out / "history.csv")
        assert len(history) == VARIANT["epochs"] == saved["epochs_run"]
        assert saved["best_epoch"] == int(history["val_mean_auroc"].idxmax()) + 1
        model, _ = load_trained_model(out / "model.pt")
        held = held.sort_values(["split", "cache_row"])
        x = np.stack([direct[s][r] for s, r in zip(held["split"], held["cache_row"])]).astype(np.float32)
        x = torch.from_numpy((x / 255.0 - GRAY_MEAN) / GRAY_STD).unsqueeze(1)
        with torch.no_grad():
            probs = torch.sigmoid(model(x)).numpy()
        labels = held.merge(index, on=["split", "cache_row"])[PATHOLOGIES].to_numpy()
        expected = {}
        for j, p in enumerate(PATHOLOGIES):
            known = ~np.isnan(labels[:, j])
            expected[p] = roc_auc_score(labels[known, j], probs[known, j])
            assert saved["auroc"][p] == pytest.approx(expected[p], abs=1e-6)
        assert saved["mean_auroc"] == pytest.approx(np.mean(list(expected.values())), abs=1e-6)
        # the history's validation AUROC is the inner split's, not the scored fold's
        assert saved["best_val_mean_auroc"] == pytest.approx(history["val_mean_auroc"].max(), abs=1e-6)
        assert saved["mean_auroc"] != pytest.approx(saved["best_val_mean_auroc"], abs=1e-9)
        assert metrics["mean_auroc"] == saved["mean_auroc"]


# ---------------------------------------------------------------------------------------------- table
def test_cv_table_mean_and_sd_match_numpy(tmp_path):
    rng = np.random.default_rng(4)
    files = {}
    for dataset in ("a", "b"):
        for fold in range(4):
            path = tmp_path / dataset / f"fold{fold}.json"
            path.parent.mkdir(exist_ok=True)
            path.write_text(json.dumps({
                "fold": fold, "k": 4, "n_train_images": int(rng.integers(50, 60)), "n_train_patients": 20,
                "n_inner_val_images": int(rng.integers(8, 12)), "n_inner_val_patients": 3,
                "n_val_images": int(rng.integers(10, 20)), "n_val_patients": 6, "best_epoch": int(rng.integers(1, 5)),
                "mean_auroc": float(rng.random()), "auroc": {"Mass": float(rng.random()),
                                                             "Effusion": float("nan") if fold == 2 else float(rng.random())}}))
            files[(dataset, "small_cnn", fold)] = path
    csv, md, html = tmp_path / "t.csv", tmp_path / "t.md", tmp_path / "t.html"
    table = write_cv_table(files, csv, md, html)
    assert len(table) == 2 * (4 + 2)
    for dataset in ("a", "b"):
        part = table[table["dataset"] == dataset]
        per_fold = part[~part["fold"].isin(["mean", "sd"])]
        assert per_fold["fold"].tolist() == ["0", "1", "2", "3"]
        values = np.array([json.loads(files[(dataset, "small_cnn", f)].read_text())["mean_auroc"] for f in range(4)])
        mean, sd = part.set_index("fold").loc[["mean", "sd"], "mean_auroc"]
        assert mean == pytest.approx(values.mean()) and sd == pytest.approx(values.std(ddof=1))
        eff = np.array([json.loads(files[(dataset, "small_cnn", f)].read_text())["auroc"]["Effusion"] for f in range(4)])
        assert part.set_index("fold").loc["mean", "Effusion"] == pytest.approx(np.nanmean(eff))  # NaN fold left out
        assert part.set_index("fold").loc["sd", "Effusion"] == pytest.approx(np.nanstd(eff, ddof=1))
        assert part.set_index("fold").loc["mean", "n_val_images"] == pytest.approx(per_fold["n_val_images"].mean())
    written = pd.read_csv(csv, dtype={"fold": str})
    assert written["fold"].tolist() == table["fold"].tolist()
    text = md.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| a |") and "mean ± sd" in line)
    assert f"**{table.iloc[4]['mean_auroc']:.3f} ± {table.iloc[5]['mean_auroc']:.3f}**" in row
    assert "4-fold" in text and "<table" in html.read_text()
    header = next(line for line in text.splitlines() if line.startswith("| dataset |"))
    assert "epoch-selection images (patients)" in header and "n_inner_val" not in header  # a count, not a label
    with pytest.raises(FoldError, match="holds fold 1, expected fold 0"):
        cv_table({("a", "v", 0): files[("a", "small_cnn", 1)]})
    with pytest.raises(FileNotFoundError, match="train_fold rule"):
        cv_table({("a", "v", 0): tmp_path / "missing.json"})


# ---------------------------------------------------------------------------------------------- workflow
def cv_config(folds=(0, 1, 2)):
    cfg = load_tiny_config()
    ds = cfg["datasets"]["nih_synthetic"]
    ds["synthetic"] = {**ds["synthetic"], "n_patients": 40, "image_size": 32, "follow_ups": [1, 2]}
    ds["preprocess"] = {"image_size": 16}
    cfg["variants"]["small_cnn"].update(epochs=1, batch_size=16, model_args={"widths": [8, 16]})
    cfg["cross_validation"] = {"variants": ["small_cnn"], "folds": list(folds), "seed": 0}
    return cfg


@pytest.mark.slow  # about a minute: raw -> splits -> cache -> 3 folds -> table
def test_snakemake_runs_the_cross_validation(tmp_path):
    wf = make_workflow_copy(tmp_path / "wf", cv_config())
    target = PATHS["cv_table"].format(variant="small_cnn")
    # rule all asks for the table; the dry run lists the three fold jobs and one fold assignment
    dry = run([str(BIN / "snakemake"), "-n", "--cores", "1", "--quiet", "rules"], wf, timeout=300)
    counts = {p[0]: int(p[1]) for p in (line.split() for line in dry.stdout.splitlines())
              if len(p) == 2 and p[1].isdigit()}
    assert counts["train_fold"] == 3 and counts["cv_folds"] == 1 and counts["cv_table"] == 1
    run([str(BIN / "snakemake"), "--cores", "2", target], wf, timeout=600)
    table = pd.read_csv(wf / target, dtype={"fold": str})
    assert table["fold"].tolist() == ["0", "1", "2", "mean", "sd"]
    folds = pd.read_csv(wf / PATHS["cv_folds"].format(dataset="nih_synthetic", variant="small_cnn"),
                        dtype={"patient_id": str})
    index = pd.read_csv(wf / "results/cache/nih_synthetic/index.csv", dtype={"patient_id": str})
    assert len(folds) == int(index["split"].isin(["train", "val"]).sum())
    per_fold = table[~table["fold"].isin(["mean", "sd"])]
    assert per_fold["n_val_images"].tolist() == folds["fold"].value_counts().sort_index().tolist()
    assert (per_fold["n_val_images"] + per_fold["n_train_images"] + per_fold["n_inner_val_images"] == len(folds)).all()
    assert table.set_index("fold").loc["mean", "mean_auroc"] == pytest.approx(per_fold["mean_auroc"].mean())
    assert (wf / PATHS["cv_markdown"].format(variant="small_cnn")).read_text().count("mean ± sd") == 1
    # nothing else was trained: the k-fold runs do not touch the main train/predict outputs
    assert not (wf / "results/models").exists()
    # a fold's parameters are its variant's: changing another variant reruns no fold
    cfg = cv_config()
    cfg["variants"]["resnet18"]["lr"] = 0.5
    (wf / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    again = run([str(BIN / "snakemake"), target, "-n", "--cores", "1", "--quiet", "rules"], wf, timeout=300)
    assert "train_fold" not in again.stdout
    # more folds than patients: one clear error line from the cv_folds job
    cfg = cv_config(folds=list(range(60)))
    (wf / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = run([str(BIN / "snakemake"), "--cores", "1", PATHS["cv_folds"].format(dataset="nih_synthetic",
                                                                                   variant="small_cnn")],
               wf, check=False, timeout=300)
    assert proc.returncode != 0
    log = (wf / "results/logs/cv_folds/nih_synthetic/small_cnn.log").read_text()
    assert "error:" in log and "fewer than the 60 folds asked for (cross_validation.folds)" in log


def test_held_out_metrics_use_the_models_input_normalization(tmp_path):
    """A per-pixel standardised variant is scored on its held-out fold with its own statistics: the held-out AUROCs
    equal those of the model applied by hand to (u / 255 - mean image) / std image (a fixed-normalisation read
    would differ)."""
    from sklearn.metrics import roc_auc_score

    from xraypipe.inference import load_trained_model
    from xraypipe.standardize import PIXEL_STATS_NAME, STD_FLOOR, load_pixel_stats, write_pixel_stats

    cache = make_cache(tmp_path / "cache", seed=5)
    write_pixel_stats(cache, cache / PIXEL_STATS_NAME)
    folds_csv = tmp_path / "folds.csv"
    write_folds(cache, PATHOLOGIES, 3, seed=0, out_csv=folds_csv)
    out = tmp_path / "fold2"
    metrics = train_fold(variant={**VARIANT, "normalization": "per_pixel"}, training=TRAINING, cache_dir=cache,
                         folds_csv=folds_csv, fold=2, model_out=out / "model.pt", history_out=out / "history.csv",
                         metrics_out=out / "metrics.json", checkpoint=out / "last.pt", inner_val_fraction=0.25,
                         seed=0, progress=False)
    stats = load_pixel_stats(cache / PIXEL_STATS_NAME)
    folds = pd.read_csv(folds_csv, dtype={"patient_id": str})
    held = folds[folds["fold"] == 2].sort_values(["split", "cache_row"])
    direct = {s: np.load(cache / f"{s}.npy") for s in ("train", "val")}
    x = np.stack([direct[s][r] for s, r in zip(held["split"], held["cache_row"])]).astype(np.float64) / 255.0
    x = (x - stats["mean"]) / np.maximum(stats["std"], STD_FLOOR)
    model, _ = load_trained_model(out / "model.pt")
    with torch.no_grad():
        probs = torch.sigmoid(model(torch.from_numpy(x.astype(np.float32)).unsqueeze(1))).numpy()
    labels = held.merge(index_of(cache), on=["split", "cache_row"])[PATHOLOGIES].to_numpy()
    for j, p in enumerate(PATHOLOGIES):
        known = ~np.isnan(labels[:, j])
        assert metrics["auroc"][p] == pytest.approx(roc_auc_score(labels[known, j], probs[known, j]), abs=1e-5)
    assert torch.load(out / "model.pt", weights_only=False)["metadata"]["normalization"]["method"] == "per_pixel"
