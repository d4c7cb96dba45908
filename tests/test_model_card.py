"""Model files describe themselves (dataset, variant, config hash, code version, labels, input size, transform; plain
values that load with weights_only=True), older files without those keys still load, and the model_card stage
writes a card with the exact validation/test figures and CIs, the thresholds and the intended use."""

import hashlib
import json
import shutil
import subprocess

import pytest
import torch

from config_sections import validated_section
from test_train_resume import PATHOLOGIES, TRAINING, VARIANT, make_cache
from workflow_copy import load_tiny_config
from xraypipe import __version__
from xraypipe.config import validate_config
from xraypipe.evaluation import evaluate
from xraypipe.inference import load_trained_model, predict_split
from xraypipe.model_card import model_card_text, write_model_card
from xraypipe.model_files import load_torch_file, save_torch_file
from xraypipe.provenance import code_version, config_hash
from xraypipe.train import model_identity, train_variant
from xraypipe.workflow import STAGE, STAGE_PARAMS, all_targets, stage_params, stage_params_json

NEW_KEYS = ("dataset", "variant_name", "config_hash", "code_version", "labels", "input_size", "transform")


def _stage_config():
    """What scripts/train.py receives for dataset toyset x variant toy: the train stage's keys of a validated config."""
    cfg = load_tiny_config()
    cfg["datasets"] = {"toyset": {"reader": "nih", "source": "synthetic", "preprocess": {"image_size": 16,
                                                                                         "resize": "crop"}}}
    cfg["variants"] = {"toy": {k: VARIANT[k] for k in ("model", "epochs", "batch_size", "lr", "seed", "model_args",
                                                       "weights", "augment")}}
    cfg["experiment"] = {"datasets": ["toyset"], "variants": ["toy"]}
    full = validate_config(cfg, source="test")
    return full, stage_params(full, "train", dataset="toyset", variant="toy")


def _train(root, tag, cache, stage_config, epochs=2):
    out = root / tag
    variant = dict(stage_config["variants"]["toy"], epochs=epochs)
    train_variant(cache_dir=cache, pathologies=PATHOLOGIES, variant=variant, training=TRAINING,
                  model_out=out / "model.pt", history_out=out / "history.csv",
                  checkpoint_path=out / "last.pt", threads=1, progress=False,
                  identity=model_identity("toyset", "toy", stage_config))
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("card")
    cache = make_cache(root / "cache", n=(96, 40, 40))  # 16 px
    full, stage_config = _stage_config()
    return root, cache, full, stage_config, _train(root, "toy", cache, stage_config)


def _plain(obj) -> bool:
    if isinstance(obj, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return all(_plain(v) for v in obj)
    return obj is None or isinstance(obj, (str, bool, int, float))


def test_the_model_file_describes_itself_in_plain_values(trained, project_root):
    root, cache, full, stage_config, out = trained
    saved = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    meta = saved["metadata"]
    assert all(k in meta for k in NEW_KEYS), sorted(meta)
    assert _plain({k: meta[k] for k in NEW_KEYS})
    assert meta["dataset"] == "toyset" and meta["variant_name"] == "toy"
    assert meta["labels"] == PATHOLOGIES == meta["pathologies"]
    assert meta["input_size"] == [1, 16, 16]
    # the hash of exactly the JSON Snakemake passes to the script (DVC's --config path gives the same dict)
    expected = hashlib.sha256(stage_params_json(full, "train", dataset="toyset", variant="toy").encode()).hexdigest()
    assert meta["config_hash"] == expected == config_hash(stage_config)
    assert meta["transform"]["resize"] == {"mode": "crop", "size": [16, 16]}
    assert meta["transform"]["normalization"] == {"method": "fixed", "mean": 0.5, "std": 0.25}
    assert meta["transform"]["channels"] == 1 and meta["transform"]["scale"] == "u / 255"
    code = meta["code_version"]
    assert code["package"] == "xraypipe" and code["version"] == __version__
    head = subprocess.run(["git", "-C", str(project_root), "rev-parse", "HEAD"], capture_output=True, text=True) \
        if shutil.which("git") else None
    if head is not None and head.returncode == 0:
        assert code["git_commit"] == head.stdout.strip() and isinstance(code["dirty"], bool)
    else:
        assert code["git_commit"] is None
    # a changed variant key changes the hash; the train stage tracks the dataset's resize keys too
    assert config_hash({**stage_config, "variants": {"toy": dict(stage_config["variants"]["toy"], lr=0.5)}}) != expected
    assert "datasets.{dataset}.preprocess.resize" in STAGE_PARAMS["train"] and "dataset" in STAGE["train"].args


def test_the_same_run_writes_the_same_bytes(trained):
    """No time or host in the metadata: a second identical run gives a byte-identical model file."""
    root, cache, _, stage_config, out = trained
    again = _train(root, "again", cache, stage_config)
    assert (again / "model.pt").read_bytes() == (out / "model.pt").read_bytes()


def test_older_model_files_without_the_new_keys_still_load_and_get_a_card(trained, tmp_path):
    root, cache, _, _, out = trained
    saved = load_torch_file(out / "model.pt")
    saved["metadata"] = {k: v for k, v in saved["metadata"].items() if k not in NEW_KEYS}
    save_torch_file(saved, tmp_path / "old.pt")
    model, meta = load_trained_model(tmp_path / "old.pt")
    assert "labels" not in meta and model(torch.zeros(2, 1, 16, 16)).shape == (2, 2)
    predict_split(model_path=tmp_path / "old.pt", cache_dir=cache, split="val", out_csv=tmp_path / "val.csv",
                  device_preference="cpu")
    metrics = {"mean": {"auroc": 0.7, "ci_low": 0.6, "ci_high": 0.8}, "ci_level": 0.95, "bootstrap_unit": "patient"}
    text = model_card_text(meta, metrics, {"method": "youden", "thresholds": {}}, dataset="d", variant="v")
    assert "`v` on `d`" in text and "Mass, Effusion" in text and "1 x 16 x 16" in text
    assert "not recorded" in text  # code version, config hash


def test_code_version_outside_a_git_checkout(tmp_path, monkeypatch):
    package = tmp_path / "copy" / "src" / "xraypipe"
    package.mkdir(parents=True)
    assert code_version(package) == {"package": "xraypipe", "version": __version__, "git_commit": None,
                                     "dirty": None}
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))  # no git at all: still no error
    assert code_version(package)["git_commit"] is None and code_version()["version"] == __version__


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_code_version_of_a_checkout_and_its_dirty_flag(tmp_path):
    repo = tmp_path / "repo"
    package = repo / "src" / "xraypipe"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    def git(*args):
        return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True)

    git("init", "-q")
    assert code_version(package)["git_commit"] is None  # no commit yet
    git("add", "-A")
    git("-c", "user.email=t@example.invalid", "-c", "user.name=t", "commit", "-qm", "x")
    head = git("rev-parse", "HEAD").stdout.strip()
    assert code_version(package) == {"package": "xraypipe", "version": __version__, "git_commit": head, "dirty": False}
    (repo / "untracked.txt").write_text("results, logs")
    assert code_version(package)["dirty"] is False  # untracked files do not count
    (package / "__init__.py").write_text("# edited\n")
    assert code_version(package) == {"package": "xraypipe", "version": __version__, "git_commit": head, "dirty": True}
    # a repository that merely contains some other copy of the package is not its checkout
    other = repo / "venv" / "site-packages" / "xraypipe"
    other.mkdir(parents=True)
    assert code_version(other)["git_commit"] is None


META = {"model": "small_cnn", "model_args": {"widths": [8, 16]}, "pathologies": ["Mass", "Effusion"],
        "in_channels": 1, "image_size": 64, "normalization": {"method": "fixed", "mean": 0.5, "std": 0.25},
        "variant": {"model": "small_cnn", "epochs": 12, "batch_size": 32, "lr": 0.001, "weights": None},
        "best_epoch": 9, "selection_metric": "val_mean_auroc", "best_val_mean_auroc": 0.84567,
        "fingerprint": "f" * 64, "dataset": "nih_synthetic", "variant_name": "small_cnn", "config_hash": "c" * 64,
        "code_version": {"package": "xraypipe", "version": "0.1.0", "git_commit": "a" * 40, "dirty": False},
        "labels": ["Mass", "Effusion"], "input_size": [1, 64, 64],
        "transform": {"decode": "8-bit grayscale", "resize": {"mode": "pad", "size": [64, 64]}, "scale": "u / 255",
                      "normalization": {"method": "fixed", "mean": 0.5, "std": 0.25}, "channels": 1}}
METRICS = {"mean": {"auroc": 0.81234, "ci_low": 0.77111, "ci_high": 0.84999, "n_labels": 2},
           "labels": {"Mass": {"auroc": 0.9, "ci_low": 0.85, "ci_high": 0.95, "n": 100, "n_positive": 17},
                      "Effusion": {"auroc": None, "ci_low": None, "ci_high": None, "n": 100, "n_positive": 2,
                                   "status": "too few positives"}},
           "n_boot": 200, "ci_level": 0.95, "bootstrap_unit": "patient", "n_images": 100, "n_patients": 40,
           "validation_mean_auroc": 0.83, "n_val_images": 80,
           "classification": {"labels": {"Mass": {"sensitivity": 0.7647, "specificity": 0.9036}},
                              "macro": {"f1": 0.61, "sensitivity": 0.7, "specificity": 0.8}}}
VAL = {"mean": {"auroc": 0.8345, "ci_low": 0.7901, "ci_high": 0.8702},
       "labels": {"Mass": {"auroc": 0.8811, "ci_low": 0.8213, "ci_high": 0.9308},
                  "Effusion": {"auroc": 0.7880, "ci_low": 0.7001, "ci_high": 0.8612}}}
THRESHOLDS = {"method": "youden", "pathologies": ["Mass", "Effusion"],
              "thresholds": {"Mass": 0.41234, "Effusion": None}}


def test_the_card_has_the_exact_figures_cis_thresholds_and_intended_use():
    import pandas as pd

    summary = pd.DataFrame([{"split": "train", "images": 300, "patients": 120},
                            {"split": "val", "images": 80, "patients": 30},
                            {"split": "test", "images": 100, "patients": 40}])
    text = model_card_text(META, METRICS, THRESHOLDS, val_metrics=VAL, split_summary=summary,
                           dataset_cfg={"reader": "nih", "source": "synthetic"})
    assert "# Model card: `small_cnn` on `nih_synthetic`" in text
    assert "reader `nih`, source `synthetic`" in text
    assert "train 300 images, 120 patients; val 80 images, 30 patients; test 100 images, 40 patients" in text
    assert "Labels (2): Mass, Effusion" in text and "1 x 64 x 64" in text
    assert "`small_cnn` (model_args `{\"widths\": [8, 16]}`), trained from scratch" in text
    assert "squared to 64x64 px by `pad`" in text and "normalization `fixed` (mean 0.5, std 0.25)" in text
    assert "best epoch: 9, selected by `val_mean_auroc` (validation mean AUROC 0.846 at selection)" in text
    assert "| Mean AUROC [95% CI] | 0.835 [0.790, 0.870] | 0.812 [0.771, 0.850] |" in text
    assert "| Mass | 0.881 [0.821, 0.931] | 0.900 [0.850, 0.950] | 17 | 0.4123 | 0.765 | 0.904 |" in text
    assert "| Effusion | 0.788 [0.700, 0.861] | n/a (too few positives) | 2 | n/a | n/a | n/a |" in text
    assert "200 resamples of patients" in text and "by `youden`" in text
    assert "Research only, not for clinical use" in text and "single US hospital" in text
    assert "synthetic twins" in text
    assert f"git commit `{'a' * 40}`, clean" in text and f"`{'c' * 64}`" in text


def test_the_stage_writes_the_card_from_its_files(trained, tmp_path):
    root, cache, full, _, out = trained
    for split in ("val", "test"):
        predict_split(model_path=out / "model.pt", cache_dir=cache, split=split, out_csv=tmp_path / f"{split}.csv",
                      device_preference="cpu")
    evaluation = validated_section("evaluation", bootstrap_samples=30)
    evaluate(tmp_path / "test.csv", tmp_path / "val.csv", evaluation, tmp_path / "metrics.json",
             out / "thresholds.json")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    config = {"datasets": {"toyset": full["datasets"]["toyset"]}, "evaluation": evaluation}
    kwargs = dict(model=out / "model.pt", metrics=tmp_path / "metrics.json", thresholds=out / "thresholds.json",
                  val_predictions=tmp_path / "val.csv", split_summary=tmp_path / "missing.csv", config=config,
                  dataset="toyset", variant="toy")
    text = write_model_card(**kwargs, out=out / "model_card.md")
    assert (out / "model_card.md").read_text() == text
    mean = metrics["mean"]
    assert f"{mean['auroc']:.3f} [{mean['ci_low']:.3f}, {mean['ci_high']:.3f}] |" in text
    assert "Splits: not available" in text and "`toy` on `toyset`" in text and "crop" in text
    write_model_card(**kwargs, out=tmp_path / "again.md")
    assert (tmp_path / "again.md").read_bytes() == (out / "model_card.md").read_bytes()


def test_the_card_is_a_stage_of_both_engines():
    cfg = validate_config(load_tiny_config(), source="test")
    targets = all_targets(cfg)
    for variant in cfg["experiment"]["variants"]:
        assert f"results/models/nih_synthetic/{variant}/model_card.md" in targets
    stage = STAGE["model_card"]
    assert stage.wildcards == ("dataset", "variant") and set(stage.inputs) >= {"model", "metrics", "thresholds"}
