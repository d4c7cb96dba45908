"""One experiment definition: Snakemake and DVC must define the same outputs and track the same params."""

import re

import pytest

from workflow_copy import BIN, load_tiny_config, make_workflow_copy, run
from xraypipe.config import validate_config
from xraypipe.workflow import PATHS, STAGE_PARAMS

# Snakemake rule <-> DVC stage name, and the STAGE_PARAMS key of each.
STAGES = {"prepare_raw": "raw", "make_splits": "splits", "build_cache": "cache", "train": "train",
          "predict": "predict", "evaluate": "evaluate", "auroc_table": "table",
          # issue 5
          "localize": "localize", "classification_table": "table", "iobb_table": "table",
          "study_table": "study_table", "roc_figure": "figures", "label_distribution_figure": "figures",
          "training_curves_figure": "figures", "confusion_figure": "figures", "gradcam_figure": "figures",
          # issue 8: the detector
          "train_detector": "train_detector", "detect": "detect",
          # issue 8: k-fold cross-validation
          "cv_folds": "cv_folds", "train_fold": "train_fold", "cv_table": "cv_table",
          # issue 8: per-pixel standardisation statistics
          "pixel_stats": "pixel_stats"}
PER_DATASET = ("prepare_raw", "make_splits", "build_cache", "roc_figure", "label_distribution_figure",
               "training_curves_figure", "train_detector", "pixel_stats")
PER_VARIANT = ("cv_table",)  # matrix over cross_validation.variants only


@pytest.fixture(scope="module")
def two_by_two(tmp_path_factory):
    """A config crossing two datasets with three variants, so the matrix expansion is really exercised."""
    cfg = load_tiny_config()
    cfg["datasets"]["nih_other"] = dict(cfg["datasets"]["nih_synthetic"], synthetic={"seed": 5, "n_patients": 20})
    cfg["variants"]["resnet18_lr"] = dict(cfg["variants"]["resnet18"], lr=0.01)
    cfg["experiment"] = {"datasets": ["nih_synthetic", "nih_other"], "variants": ["resnet18", "small_cnn", "resnet18_lr"]}
    # issue 8: two cross-validated variants (one of them not in experiment.variants) x 3 folds
    cfg["variants"]["small_cnn_cv"] = dict(cfg["variants"]["small_cnn"], lr=0.004)
    cfg["cross_validation"] = {"variants": ["small_cnn", "small_cnn_cv"], "folds": [0, 1, 2], "seed": 0}
    return make_workflow_copy(tmp_path_factory.mktemp("wf"), cfg), validate_config(cfg)


def snakemake_outputs(workdir) -> set[str]:
    proc = run([str(BIN / "snakemake"), "--summary", "--cores", "1"], workdir, timeout=300)
    files = set()
    for line in proc.stdout.splitlines()[1:]:
        name = line.split("\t")[0].strip()
        if name.startswith("results/"):
            files.add(name.rstrip("/"))
    return files


def dvc_stages(workdir):
    from dvc.repo import Repo

    with Repo(str(workdir), uninitialized=True) as repo:
        return [(s.name, {o.def_path for o in s.outs}, [(p.def_path, list(p.params)) for p in s.deps if hasattr(p, "params")])
                for s in repo.index.stages]


def test_snakemake_and_dvc_define_the_same_outputs(two_by_two):
    workdir, cfg = two_by_two
    sm = snakemake_outputs(workdir)
    dvc = set().union(*(outs for _, outs, _ in dvc_stages(workdir)))
    assert sm == dvc, f"only in Snakemake: {sorted(sm - dvc)}\nonly in DVC: {sorted(dvc - sm)}"
    # 2 datasets x 3 variants: 6 models, 12 prediction files, 6 metrics, one table
    assert len([f for f in sm if f.startswith("results/models/") and f.endswith("model.pt")]) == 6
    assert len([f for f in sm if f.startswith("results/predictions/")]) == 12
    assert PATHS["auroc_table"] in sm
    # issue 8: 2 datasets x 2 cross-validated variants x 3 folds, one fold assignment per dataset x variant
    assert len([f for f in sm if f.startswith("results/cv/") and f.endswith("metrics.json")]) == 12
    assert len([f for f in sm if f.startswith("results/cv/") and f.endswith("folds.csv")]) == 4
    assert {PATHS["cv_table"].format(variant=v) for v in ("small_cnn", "small_cnn_cv")} <= sm


def test_every_snakemake_param_is_tracked_by_dvc(two_by_two):
    workdir, cfg = two_by_two
    stages = dvc_stages(workdir)
    seen = set()
    for name, _outs, params in stages:
        rule = name.split("@")[0]
        seen.add(rule)
        if rule == "config_to_json":  # the whole of config.yaml, written to the params file of every other stage
            assert params == [("config.yaml", [])], params
            continue
        assert all(file == PATHS["config_json"] for file, _ in params), (name, params)
        key = STAGES[rule]
        tracked = [p for file, keys in params for p in keys]
        m = re.match(r"[^@]+@(?P<rest>.*)", name)
        names = {}
        if m:
            parts = m["rest"].split("-")
            if rule in PER_DATASET:
                names = {"dataset": parts[0]}
            elif rule in PER_VARIANT:
                names = {"variant": parts[0]}
            else:
                names = {"dataset": parts[0], "variant": parts[1]}
        for dotted in STAGE_PARAMS[key]:
            wanted = dotted.format(**names)
            assert any(wanted == t or wanted.startswith(t + ".") for t in tracked), (name, wanted, tracked)
    assert seen == set(STAGES) | {"config_to_json"}


def test_dry_run_lists_every_job(two_by_two):
    workdir, _ = two_by_two
    proc = run([str(BIN / "snakemake"), "-n", "--cores", "1", "--quiet", "rules"], workdir, timeout=300)
    counts = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    assert counts["prepare_raw"] == 2 and counts["train"] == 6 and counts["predict"] == 12 and counts["auroc_table"] == 1
    assert counts["cv_folds"] == 4 and counts["train_fold"] == 12 and counts["cv_table"] == 2  # issue 8


def test_invalid_config_stops_before_any_job(tmp_path):
    cfg = load_tiny_config()
    cfg["variants"]["resnet18"]["batchsize"] = 8
    wf = make_workflow_copy(tmp_path / "bad", cfg)
    proc = run([str(BIN / "snakemake"), "-n", "--cores", "1"], wf, check=False, timeout=300)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "variants.resnet18.batchsize" in out and "did you mean 'batch_size'" in out
    assert not (wf / "results").exists()


@pytest.mark.parametrize("config_name", ["config.yaml", "config/tiny.yaml"])
def test_dvc_params_exist_in_the_shipped_configs(two_by_two, project_root, config_name):
    """DVC fails on a params key that the config file does not spell out (schema defaults do not count; its
    params file, results/config.json, is the config as written), so dvc.yaml may only track keys every shipped
    config has: whole sections rather than optional leaves."""
    import yaml

    raw = yaml.safe_load((project_root / config_name).read_text())
    workdir, _ = two_by_two
    for name, _outs, params in dvc_stages(workdir):
        for file, keys in params:
            if file != PATHS["config_json"]:  # config_to_json tracks the whole of config.yaml
                continue
            for key in keys:
                parts = key.split(".")
                if parts[0] in ("datasets", "variants") and len(parts) > 1:
                    parts[1] = next(iter(raw[parts[0]]))  # the stage's own dataset/variant: any defined one
                node = raw
                for part in parts:
                    assert isinstance(node, dict) and part in node, f"{config_name}: {name} tracks missing {key}"
                    node = node[part]


def test_cross_validation_off_defines_no_cv_outputs_and_dvc_still_works(tmp_path, project_root):
    """The default (cross_validation.variants: []) expands DVC's cv matrices to nothing, like Snakemake's rule all,
    and `dvc status` works; config.yaml and config/tiny.yaml spell out the keys dvc.yaml's matrices read."""
    import yaml
    from workflow_copy import init_git_dvc

    for name in ("config.yaml", "config/tiny.yaml"):
        raw = yaml.safe_load((project_root / name).read_text())
        assert isinstance(raw["cross_validation"]["variants"], list), name
        assert raw["cross_validation"]["folds"] == list(range(len(raw["cross_validation"]["folds"]))), name
    cfg = load_tiny_config()
    assert cfg["cross_validation"]["variants"] == []
    wf = make_workflow_copy(tmp_path / "wf", cfg)
    sm = snakemake_outputs(wf)
    stages = dvc_stages(wf)
    dvc = set().union(*(outs for _, outs, _ in stages))
    assert sm == dvc, f"only in Snakemake: {sorted(sm - dvc)}\nonly in DVC: {sorted(dvc - sm)}"
    assert not [f for f in sm if f.startswith("results/cv") or "cross_validation" in f]
    assert not [name for name, _, _ in stages if name.split("@")[0] in ("cv_folds", "train_fold", "cv_table")]
    init_git_dvc(wf)
    status = run([str(BIN / "dvc"), "status"], wf, timeout=300)
    assert "train_fold" not in status.stdout and "cv_" not in status.stdout
