"""The workflow end to end on the tiny config, under Snakemake and under DVC (marked slow: minutes)."""

import json

import pandas as pd
import pytest
import yaml

from workflow_copy import BIN, init_git_dvc, load_tiny_config, make_workflow_copy, run

SNAKEMAKE = str(BIN / "snakemake")
DVC = str(BIN / "dvc")


def _job_counts(stdout: str) -> dict:
    counts = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] != "total":
            counts[parts[0]] = int(parts[1])
    return counts


@pytest.mark.slow
def test_snakemake_tiny_run_learns_and_is_incremental(tmp_path):
    wf = make_workflow_copy(tmp_path / "wf", load_tiny_config())
    run([SNAKEMAKE, "--cores", "2", "results/tables/auroc.csv"], wf, timeout=1500)

    table = pd.read_csv(wf / "results/tables/auroc.csv")
    assert sorted(table.loc[table["kind"] == "measured", "variant"]) == ["resnet18", "small_cnn"]  # + published rows (issue 5)
    resnet = table.set_index("variant").loc["resnet18"]
    # clearly above chance on the held-out synthetic test patients, with the whole CI above 0.5
    assert resnet["mean_auroc"] > 0.68, table.to_string()
    assert resnet["mean_ci_low"] > 0.6, table.to_string()
    assert resnet["mean_ci_low"] <= resnet["mean_auroc"] <= resnet["mean_ci_high"]
    md = (wf / "results/tables/auroc.md").read_text()
    assert "| nih_synthetic | resnet18 |" in md

    metrics = json.loads((wf / "results/metrics/nih_synthetic/resnet18.json").read_text())
    assert metrics["bootstrap_unit"] == "patient" and metrics["n_boot"] == 200
    predictions = pd.read_csv(wf / "results/predictions/nih_synthetic/resnet18/test.csv")
    manifest = pd.read_csv(wf / "results/splits/nih_synthetic.csv")
    assert len(predictions) == (manifest["split"] == "test").sum() == metrics["n_images"]
    history = pd.read_csv(wf / "results/models/nih_synthetic/resnet18/history.csv")
    assert history["epoch"].tolist() == list(range(1, 11))
    log = (wf / "results/logs/train/nih_synthetic/resnet18.log").read_text()
    assert "epoch 10/10" in log and "val_mean_auroc" in log  # progress bar and epoch lines in the rule log
    assert not list((wf / "results").rglob(".*.tmp-*"))  # no temp leftovers
    assert not (wf / "results/checkpoints/nih_synthetic/resnet18/last.pt").exists()

    # a second run is a no-op
    again = run([SNAKEMAKE, "-n", "--cores", "2", "results/tables/auroc.csv"], wf)
    assert "Nothing to be done" in again.stdout + again.stderr

    # changing one variant's setting re-runs only that variant's jobs
    cfg = yaml.safe_load((wf / "config.yaml").read_text())
    cfg["variants"]["small_cnn"]["lr"] = 0.001
    (wf / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    plan = run([SNAKEMAKE, "results/tables/auroc.csv", "-n", "--cores", "2", "--quiet", "rules"], wf)
    assert _job_counts(plan.stdout) == {"train": 1, "predict": 2, "evaluate": 1, "auroc_table": 1}, plan.stdout


@pytest.mark.slow
def test_dvc_repro_tiny_in_a_git_repository(tmp_path):
    cfg = load_tiny_config()
    cfg["datasets"]["nih_synthetic"]["synthetic"]["n_patients"] = 40
    cfg["variants"]["resnet18"]["epochs"] = 2
    cfg["variants"]["small_cnn"]["epochs"] = 1
    wf = make_workflow_copy(tmp_path / "repo", cfg)
    init_git_dvc(wf)
    run([DVC, "repro"], wf, timeout=1500)
    table = pd.read_csv(wf / "results/tables/auroc.csv")
    assert sorted(table.loc[table["kind"] == "measured", "variant"]) == ["resnet18", "small_cnn"]  # + published rows (issue 5)
    assert (wf / "dvc.lock").exists()
    status = run([DVC, "status"], wf)
    assert "up to date" in status.stdout, status.stdout
    shown = run([DVC, "metrics", "show", "--json"], wf)
    assert "mean_auroc" in shown.stdout
    # the lock records the config params each stage used
    lock = yaml.safe_load((wf / "dvc.lock").read_text())
    # (train tracks its variant's keys in its own params file; config_to_json depends on config.yaml as a file, so
    # that `dvc exp show` shows each key once, from results/params/)
    train_params = lock["stages"]["train@nih_synthetic-resnet18"]["params"]
    assert "variants.resnet18" in train_params["results/params/variants/resnet18.json"]
    assert "training.device" in train_params["results/params/training.json"]
    config_stage = lock["stages"]["config_to_json"]
    assert "config.yaml" in {dep["path"] for dep in config_stage["deps"]} and "params" not in config_stage
