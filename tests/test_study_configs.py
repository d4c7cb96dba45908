"""The ready configurations in config/ (one per seed study): each validates as written (merged over config.yaml,
as `snakemake --configfile` merges it) and runs, shrunk, on the synthetic twin of its dataset."""

import copy
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from workflow_copy import BIN, make_workflow_copy, run
from xraypipe.config import validate_config

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ["nih_chexnet", "chexpert", "chexpert_encodings", "mura", "chestxray8", "kermany", "nih_localization"]
TWIN = {  # reader -> small twin parameters
    "nih": {"n_patients": 40, "follow_ups": [1, 2], "image_size": 64},
    "chexpert": {"n_patients": 40, "n_valid_patients": 12, "image_size": 64, "uncertain_fraction": 0.3},
    "mura": {"n_patients": 40, "n_valid_patients": 12, "image_size": 64},
    "kermany": {"n_patients": 40, "image_size": 64},
}


def merged(study: str) -> dict:
    def merge(base, over):
        out = copy.deepcopy(base)
        for k, v in over.items():
            out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
        return out

    base = yaml.safe_load((ROOT / "config.yaml").read_text())
    return merge(base, yaml.safe_load((ROOT / "config" / f"{study}.yaml").read_text()))


@pytest.mark.parametrize("study", STUDIES)
def test_study_config_is_valid(study):
    cfg = validate_config(merged(study), source=f"config/{study}.yaml")
    assert cfg["experiment"]["variants"]


def test_chestxray8_config_is_the_study_as_reported():
    cfg = validate_config(merged("chestxray8"), source="config/chestxray8.yaml")
    from xraypipe.datasets.nih import PATHOLOGIES

    assert cfg["datasets"]["nih14"]["pathologies"] is None and len(PATHOLOGIES) == 14  # the reader's 14 labels
    assert cfg["datasets"]["nih14"]["split"]["unit"] == "patient"
    assert cfg["datasets"]["nih14_image_split"]["split"]["unit"] == "image"
    variants = cfg["variants"]
    for name in ("vgg_like_1ch", "simple_cnn_2conv"):
        v = variants[name]
        assert (v["optimizer"], v["init"], v["normalization"], v["augment"], v["loss"]) == \
            ("adam", "xavier", "mean_image", False, "wcel"), name
        assert v["model_args"]["dropout"] == 0.0 and v["schedule"]["milestones"] == [60] and v["lr"] == 1e-3
    probes = {name: variants[name] for name in ("resnet18_probe_wcel", "resnet18_probe_bce")}
    assert {v["loss"] for v in probes.values()} == {"wcel", "bce"}
    assert all((v["regime"], v["lr"], v["optimizer"]) == ("frozen", 1e-4, "adam") for v in probes.values())


def test_nih_localization_config_is_the_study_as_reported():
    cfg = validate_config(merged("nih_localization"), source="config/nih_localization.yaml")
    from xraypipe.datasets.nih import BOXED_FINDINGS

    ds = cfg["datasets"]["nih_boxed9"]
    assert ds["pathologies"] == [*BOXED_FINDINGS, "No Finding"]  # 9 outputs
    assert ds["sample"]["max_per_class"] == 5000 and ds["preprocess"]["image_size"] == 1024
    v = cfg["variants"]["resnet18_study"]
    assert (v["model"], v["batch_size"], v["early_stopping_patience"], v["selection_metric"]) == \
        ("resnet18", 4, 20, "val_loss")
    assert cfg["evaluation"]["threshold_method"] == "youden"


def test_chexpert_config_is_the_study_as_reported():
    cfg = validate_config(merged("chexpert"), source="config/chexpert.yaml")
    ds = cfg["datasets"]["chexpert_224"]
    assert (ds["preprocess"]["image_size"], ds["preprocess"]["resize"]) == (224, "crop") and len(ds["pathologies"]) == 5
    arms = {name: cfg["variants"][name] for name in cfg["experiment"]["variants"]}
    for v in arms.values():
        assert (v["model"], v["weights"], v["optimizer"], v["lr"], v["batch_size"], v["encoding"], v["blank"]) == \
            ("densenet121", "IMAGENET1K_V1", "adam", 0.0002, 32, "u_ones", "negative")
        assert v["augment"] and v["augment_args"]["flip"] == 0.5 and v["augment_args"]["max_rotate_deg"] == 0
    assert {name: (v["regime"], v["epochs"], v["normalization"]) for name, v in arms.items()} == {
        "finetune_all": ("full", 5, "imagenet"), "linear_probe": ("frozen", 3, "unit"),
        "probe_then_finetune": ("staged", 6, "unit")}
    assert arms["probe_then_finetune"]["staged_head_epochs"] == 3


def test_chexpert_encodings_config_is_the_papers_protocol():
    cfg = validate_config(merged("chexpert_encodings"), source="config/chexpert_encodings.yaml")
    ds = cfg["datasets"]["chexpert"]
    assert ds["views"] is None and ds["preprocess"]["image_size"] == 320  # frontal and lateral, 320 px
    assert cfg["evaluation"]["study_aggregate"] == "max"
    arms = {name: cfg["variants"][name] for name in cfg["experiment"]["variants"]}
    assert {v["encoding"] for v in arms.values()} == {"u_ignore", "u_zeros", "u_ones", "u_selftrained", "u_multiclass"}
    for v in arms.values():
        assert (v["model"], v["lr"], v["batch_size"], v["epochs"], v["blank"]) == ("densenet121", 1e-4, 16, 3,
                                                                                   "negative")
        # 30 checkpoints: every 4,800 batches, the 10 best of each of the 3 epochs
        assert (v["checkpoint_every_batches"], v["ensemble_top_k"], v["ensemble_per_epoch"]) == (4800, 10, True)
    assert cfg["reproduction"]["studies"] == ["chexpert_encodings"]


def test_mura_config_is_the_study_as_reported():
    cfg = validate_config(merged("mura"), source="config/mura.yaml")
    assert cfg["datasets"]["mura"]["preprocess"]["image_size"] == 512
    variants = {name: cfg["variants"][name] for name in cfg["experiment"]["variants"]}
    assert set(variants) == {"dense_baseline", "conv2", "conv3", "conv4", "densenet169"}
    # the study's input sizes: 512 px for the dense baseline and Conv2, 224 px for Conv3 and Conv4
    sizes = {name: v["model_args"].get("input_size", 512) for name, v in variants.items()}
    assert sizes == {"dense_baseline": 512, "conv2": 512, "conv3": 224, "conv4": 224, "densenet169": 224}
    for name, v in variants.items():
        assert (v["batch_size"], v["optimizer"], v["loss"]) == (8, "adam", "class_weighted_bce"), name
    for name in ("dense_baseline", "conv2", "conv3", "conv4"):
        assert variants[name]["model"] == name and variants[name]["normalization"] == "per_pixel"
        assert variants[name]["epochs"] == (10 if name == "conv4" else 25)
    assert cfg["evaluation"]["fixed_thresholds"] == [0.5] and cfg["evaluation"]["study_column"] == "study_id"


def test_pediatric_pneumonia_grid_is_the_study_as_reported():
    cfg = merged("kermany")
    grid = yaml.safe_load((ROOT / "config" / "kermany_study_grid.yaml").read_text())["experiment"]
    cfg = validate_config({**cfg, "experiment": grid}, source="config/kermany_study_grid.yaml")
    assert cfg["datasets"]["kermany_224"]["preprocess"]["image_size"] == 224
    arms = {name: cfg["variants"][name] for name in grid["variants"]}
    assert {(v["weights"] is not None, v["lr"], v["batch_size"]) for v in arms.values()} == {
        (w, lr, b) for w in (True, False) for lr in (1e-3, 1e-4) for b in (16, 64)}  # the full 2 x 2 x 2 grid
    for v in arms.values():
        assert (v["model"], v["optimizer"], v["epochs"], v["regime"], v["loss"]) == \
            ("vgg16_partial", "adam", 6, "full", "fixed_weighted_bce")
        assert v["loss_args"] == {"pos_weight": 0.4, "neg_weight": 1.0}
        # the extra augmented NORMAL copies, and no on-the-fly augmentation
        assert v["minority_copies"] == {"copies": 1, "of": "negative", "flip_probability": 0.5,
                                        "max_rotate_deg": 20, "brightness": [1.2, 1.5]} and v["augment"] is False
        assert v["model_args"] == {"vgg_layers": 10, "separable": [256, 512], "convs_per_block": 3,
                                   "hidden": [1024, 512], "dropout": [0.7, 0.5], "pooling": "flatten"}


@pytest.mark.slow
def test_pediatric_pneumonia_grid_arms_run_shrunk_on_the_twin(tmp_path):
    cfg = merged("kermany")
    cfg["experiment"] = {"datasets": ["kermany_224"], "variants": ["study_vgg_lr1e4_b16", "study_random_lr1e3_b64"]}
    ds = cfg["datasets"]["kermany_224"]
    ds.update(source="synthetic", synthetic=TWIN["kermany"], root=None, download=None)
    ds["preprocess"] = {**ds["preprocess"], "image_size": 32}
    ds["split"] = {**ds["split"], "val_fraction": 0.25}
    for name in cfg["experiment"]["variants"]:
        var = cfg["variants"][name]
        var.update(epochs=1, batch_size=8)
        var["model_args"] = {**var["model_args"], "flatten_grid": 2, "hidden": [16, 8]}  # small dense layers
        if var.get("weights"):
            var["weights"] = _local_weights(tmp_path, var["model"])
    cfg["evaluation"] = {**cfg.get("evaluation", {}), "bootstrap_samples": 20}
    cfg["training"] = {**cfg.get("training", {}), "threads": 1}
    wf = make_workflow_copy(tmp_path / "wf", cfg)
    targets = [f"results/metrics/kermany_224/{v}.json" for v in cfg["experiment"]["variants"]]
    run([str(BIN / "snakemake"), "--cores", "2", *targets], wf, timeout=1200)
    for target in targets:
        assert (wf / target).stat().st_size > 0


def _local_weights(tmp_path, model_name):
    import torchvision.models as tvm

    tv_name = {"vgg16_partial": "vgg16"}.get(model_name, model_name)
    path = tmp_path / f"{tv_name}.pt"
    if not path.exists():
        torch.save(getattr(tvm, tv_name)(weights=None).state_dict(), path)
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize("study", STUDIES)
def test_study_config_runs_shrunk_on_its_twin(tmp_path, study):
    cfg = merged(study)
    for name in cfg["experiment"]["datasets"]:
        ds = cfg["datasets"][name]
        ds.update(source="synthetic", synthetic=TWIN[ds["reader"]], root=None, download=None)
        if ds.get("sample"):
            ds["sample"] = {**ds["sample"], "max_per_class": 6}  # small enough to sample the twin
        ds["preprocess"] = {**ds.get("preprocess", {}), "image_size": 32}
        ds["split"] = {**ds.get("split", {}), "val_fraction": 0.25}  # an image-level split stays one
    for name in cfg["experiment"]["variants"]:
        var = cfg["variants"][name]
        var.update(epochs=2, batch_size=8, early_stopping_patience=None)
        var["staged_head_epochs"] = 1
        if var.get("weights"):
            var["weights"] = _local_weights(tmp_path, var["model"])  # offline: a locally created weights file
        args = var.get("model_args") or {}
        if "input_size" in args:  # still resampled, to a size a CPU test affords
            var["model_args"] = {**args, "input_size": 48}
        if var["model"] == "dense_baseline":  # the study's 512 x 512 flatten is 134 M weights
            var["model_args"] = {**args, "resize_to": 16}
        if var.get("checkpoint_every_batches"):  # the CheXpert paper's 4,800 batches: a few of the twin's
            var.update(checkpoint_every_batches=2, ensemble_top_k=2)
    cfg["evaluation"] = {**cfg.get("evaluation", {}), "bootstrap_samples": 50}
    cfg["training"] = {**cfg.get("training", {}), "threads": 1}
    targets = [f"results/metrics/{d}/{v}.json" for d in cfg["experiment"]["datasets"]
               for v in cfg["experiment"]["variants"]]
    if study == "nih_localization":  # its localization run too
        cfg["evaluation"]["localization"] = {**cfg["evaluation"].get("localization", {}), "max_images": 10,
                                             "box_split": {"min_train_images": 10}}
        targets += [f"results/localization/{d}/{v}/summary.csv" for d in cfg["experiment"]["datasets"]
                    for v in cfg["experiment"]["variants"]]
    if study == "mura":  # no boxes: the Grad-CAM figure explains the highest-scoring test images
        targets += [f"results/figures/gradcam_mura_{v}.png" for v in ("conv3", "dense_baseline")]
        targets += ["results/tables/reproduction_mura.csv"]  # the study's figures beside ours
    if study == "chexpert_encodings":  # the paper's validation AUROCs beside ours, per study (max over views)
        targets += ["results/tables/reproduction_chexpert_encodings.csv"]
    wf = make_workflow_copy(tmp_path / "wf", cfg)
    run([str(BIN / "snakemake"), "--cores", "2", *targets], wf, timeout=1200)
    for target in targets:
        assert (wf / target).stat().st_size > 0
    if study == "mura":
        import json

        info = json.loads((wf / "results/localization/mura/conv3/info.json").read_text())
        assert info["boxes"] is False and info["n_pairs"] > 0 and info["heatmap"]["layer"].startswith("net.")
        dense = json.loads((wf / "results/localization/mura/dense_baseline/info.json").read_text())
        assert "no convolutional layer" in dense["skipped"]  # a flatten + dense network has no heat map
        table = pd.read_csv(wf / "results/tables/reproduction_mura.csv")
        conv4 = table[(table["variant"] == "conv4") & (table["scope"] != "all")]
        assert len(conv4) == 11 and conv4["published"].notna().all()  # Figures 2 and 3 of the study
        measured = conv4[conv4["ours"].notna()]
        assert len(measured) and measured["ours"].between(0, 1).all()
        assert (measured["ours_ci_low"] <= measured["ours"]).all() and (measured["ours"] <= measured["ours_ci_high"]).all()
    if study == "chexpert_encodings":
        assert set(pd.read_csv(wf / "results/splits/chexpert.csv")["view"]) >= {"LATERAL"}  # every view
        meta = torch.load(wf / "results/models/chexpert/u_ones/model.pt", weights_only=False)["metadata"]
        checkpoints = meta["ensemble_checkpoints"]  # the 2 best of each of the 2 epochs, within-epoch ones among them
        assert len(checkpoints) == 4 and {c["epoch"] for c in checkpoints} == {1, 2}, checkpoints
        assert meta["within_epoch_validation"], meta
        table = pd.read_csv(wf / "results/tables/reproduction_chexpert_encodings.csv")
        assert len(table) == 25 and (table["level"] == "study").all() and table["published"].notna().all()
        measured = table[table["ours"].notna()]  # a label without positives among the twin's few test studies: none
        assert len(measured) >= 15 and measured["ours"].between(0, 1).all(), table
        assert ((measured["ours_ci_low"] <= measured["ours"]) & (measured["ours"] <= measured["ours_ci_high"])).all()
    if study == "nih_localization":
        manifest = pd.read_csv(wf / "results/splits/nih_boxed9.csv")
        sampled = manifest[manifest["split"] != "test"]
        # every kept training image is positive for some label, and the sample is smaller than the twin's splits
        assert (sampled[cfg["datasets"]["nih_boxed9"]["pathologies"]].sum(axis=1) > 0).all()
        summary = pd.read_csv(wf / "results/localization/nih_boxed9/resnet18_study/summary.csv")
        assert summary["localizer"].nunique() == 8
