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
          "training_curves_figure": "figures", "confusion_figure": "figures", "gradcam_figure": "figures"}
PER_DATASET = ("prepare_raw", "make_splits", "build_cache", "roc_figure", "label_distribution_figure",
               "training_curves_figure")


@pytest.fixture(scope="module")
def two_by_two(tmp_path_factory):
    """A config crossing two datasets with three variants, so the matrix expansion is really exercised."""
    cfg = load_tiny_config()
    cfg["datasets"]["nih_other"] = dict(cfg["datasets"]["nih_synthetic"], synthetic={"seed": 5, "n_patients": 20})
    cfg["variants"]["resnet18_lr"] = dict(cfg["variants"]["resnet18"], lr=0.01)
    cfg["experiment"] = {"datasets": ["nih_synthetic", "nih_other"], "variants": ["resnet18", "small_cnn", "resnet18_lr"]}
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
    assert len([f for f in sm if f.endswith("model.pt")]) == 6
    assert len([f for f in sm if f.startswith("results/predictions/")]) == 12
    assert PATHS["auroc_table"] in sm


def test_every_snakemake_param_is_tracked_by_dvc(two_by_two):
    workdir, cfg = two_by_two
    stages = dvc_stages(workdir)
    seen = set()
    for name, _outs, params in stages:
        rule = name.split("@")[0]
        key = STAGES[rule]
        seen.add(rule)
        tracked = [p for file, keys in params for p in keys if file.endswith("config.yaml")]
        m = re.match(r"[^@]+@(?P<rest>.*)", name)
        names = {}
        if m:
            parts = m["rest"].split("-")
            if rule in PER_DATASET:
                names = {"dataset": parts[0]}
            else:
                names = {"dataset": parts[0], "variant": parts[1]}
        for dotted in STAGE_PARAMS[key]:
            wanted = dotted.format(**names)
            assert any(wanted == t or wanted.startswith(t + ".") for t in tracked), (name, wanted, tracked)
    assert seen == set(STAGES)


def test_dry_run_lists_every_job(two_by_two):
    workdir, _ = two_by_two
    proc = run([str(BIN / "snakemake"), "-n", "--cores", "1", "--quiet", "rules"], workdir, timeout=300)
    counts = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    assert counts["prepare_raw"] == 2 and counts["train"] == 6 and counts["predict"] == 12 and counts["auroc_table"] == 1


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
    """DVC fails on a params key that the config file does not spell out (schema defaults do not count), so
    dvc.yaml may only track keys every shipped config has: whole sections rather than optional leaves."""
    import yaml

    raw = yaml.safe_load((project_root / config_name).read_text())
    workdir, _ = two_by_two
    for name, _outs, params in dvc_stages(workdir):
        for file, keys in params:
            if not file.endswith("config.yaml"):
                continue
            for key in keys:
                parts = key.split(".")
                if parts[0] in ("datasets", "variants") and len(parts) > 1:
                    parts[1] = next(iter(raw[parts[0]]))  # the stage's own dataset/variant: any defined one
                node = raw
                for part in parts:
                    assert isinstance(node, dict) and part in node, f"{config_name}: {name} tracks missing {key}"
                    node = node[part]
