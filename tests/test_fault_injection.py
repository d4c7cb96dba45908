"""Fault injection (slow): the whole run SIGKILLed at many points of every stage, then rerun with the same
command, ends byte-identical to an uninterrupted run; and two runs from scratch are byte-identical.

One uninterrupted run of a shrunk tiny config is prepared once (module fixture). Each kill point copies it,
forces the stage that owns the kill point (and so everything downstream) with ``--forcerun``, and arms one kill
point of the atomic writers (xraypipe.fault_injection): Snakemake and all its jobs die by SIGKILL at that moment.
The recovery is what a user does: ``snakemake --unlock`` (Snakemake's own lock survives a kill) and the same
command again (profiles/default sets rerun-incomplete; a complete checkpoint left by the kill is resumed from).
Then every metric, table, prediction, model, cache and figure file is compared byte for byte with the prepared
run, and no temporary may be left anywhere in results/.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from workflow_copy import BIN, env, load_tiny_config, make_workflow_copy, run
from xraypipe.fault_injection import KILL_AT_ENV, KILL_GROUP_ENV

pytestmark = pytest.mark.slow

SNAKEMAKE = str(BIN / "snakemake")
TARGET = "all"
# What a run writes that is not a result: logs and timings, and the run records of the engines' locks.
NOT_RESULTS = ("results/logs/", "results/benchmarks/", "results/.writer")
# Files whose bytes legitimately differ between two identical runs, and why.
NOT_BYTE_STABLE = {
    "history.csv": "per-epoch wall time (column seconds)",
}

D = "nih_synthetic"
# (kill point, rule forced to rerun). Phases: start / torn (temporary cut to half) / rename / after (xraypipe.atomic).
# One point per (stage, phase) at most where a stage is costly to rerun (CI time): every phase is covered elsewhere.
KILL_POINTS = [
    (f"torn:results/raw/{D}", "prepare_raw"),
    (f"after:results/splits/{D}.csv", "make_splits"),  # the summary not yet written
    (f"torn:results/cache/{D}/val.npy", "build_cache"),  # the cache cut off mid-write
    (f"torn:results/cache/{D}/pixel_stats.npz", "pixel_stats"),
    (f"after:results/checkpoints/{D}/resnet18/last.pt#1", "train"),  # resumes from epoch 1
    (f"torn:results/checkpoints/{D}/resnet18/last.pt#2", "train"),  # a checkpoint cut off mid-write
    (f"torn:results/models/{D}/resnet18/model.pt", "train"),
    (f"after:results/models/{D}/small_cnn/model.pt", "train"),  # history.csv not yet written
    (f"torn:results/predictions/{D}/resnet18/test.csv", "predict"),
    (f"torn:results/metrics/{D}/resnet18.json", "evaluate"),
    (f"after:results/metrics/{D}/small_cnn.json", "evaluate"),  # thresholds.json not yet written
    (f"torn:results/localization/{D}/resnet18/heatmaps.npz", "localize"),
    (f"torn:results/detectors/{D}/model.pt", "train_detector"),
    (f"rename:results/localization/{D}/resnet18/detector/summary.csv", "detect"),
    ("torn:results/tables/auroc.csv", "auroc_table"),  # a table cut off mid-write
    ("after:results/tables/auroc.csv", "auroc_table"),  # auroc.md not yet written
    ("torn:results/tables/iobb.md", "iobb_table"),
    ("torn:results/tables/classification.csv", "classification_table"),
    ("rename:results/tables/study_level.md", "study_table"),
    (f"torn:results/figures/label_distribution_{D}.png", "label_distribution_figure"),
    (f"after:results/figures/training_{D}.png", "training_curves_figure"),
    (f"torn:results/figures/confusion_{D}_small_cnn.png", "confusion_figure"),
    (f"torn:results/figures/roc_{D}.png", "roc_figure"),
    (f"rename:results/figures/gradcam_{D}_resnet18.png", "gradcam_figure"),
    ("torn:results/config.json", "config_to_json"),
]


def shrunk_tiny_config() -> dict:
    """The tiny config with every stage kept and every size cut: the suite reruns a stage and its downstream
    once per kill point."""
    cfg = load_tiny_config()
    ds = cfg["datasets"][D]
    ds["synthetic"].update(n_patients=120, image_size=64)  # 129 training images: a last batch of one
    ds["preprocess"]["image_size"] = 32
    cfg["variants"]["resnet18"]["epochs"] = 3
    cfg["variants"]["small_cnn"]["epochs"] = 2
    cfg["evaluation"]["bootstrap_samples"] = 50
    return cfg


def result_files(wf: Path) -> dict[str, Path]:
    root = wf / "results"
    files = {}
    for path in root.rglob("*"):
        rel = path.relative_to(wf).as_posix()
        if path.is_file() and not path.is_symlink() and not rel.startswith(NOT_RESULTS):
            files[rel] = path
    return files


def differing_files(a: Path, b: Path) -> list[str]:
    fa, fb = result_files(a), result_files(b)
    names = sorted(set(fa) | set(fb))
    return [n for n in names if n not in fa or n not in fb or not filecmp.cmp(fa[n], fb[n], shallow=False)]


def unexplained(diffs: list[str], a: Path, b: Path) -> list[str]:
    """The differing files not explained by NOT_BYTE_STABLE: a history.csv must match once its wall-time column is
    dropped."""
    import pandas as pd

    left = []
    for d in diffs:
        if Path(d).name == "history.csv" and (a / d).exists() and (b / d).exists():
            one, two = (pd.read_csv(root / d).drop(columns="seconds") for root in (a, b))
            if one.equals(two):
                continue
        left.append(d)
    return left


def leftover_temporaries(wf: Path) -> list[str]:
    return sorted(p.relative_to(wf).as_posix() for p in (wf / "results").rglob(".*.tmp-*"))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The uninterrupted run every kill point is compared with."""
    wf = make_workflow_copy(tmp_path_factory.mktemp("fault") / "prepared", shrunk_tiny_config())
    run([SNAKEMAKE, "--cores", "2", TARGET], wf, timeout=1200)
    return wf


def command(forcerun: str) -> list[str]:
    """The run of one kill point: the stage that owns it and everything downstream redone. The rerun after the kill
    is the same command, as a user would type it again (with a plain rerun, Snakemake would leave a file that the
    killed run had deleted before rewriting it missing whenever the files made from it are still present)."""
    return [SNAKEMAKE, "--cores", "2", "--forcerun", forcerun, TARGET]


def run_killed(wf: Path, kill_at: str, forcerun: str) -> subprocess.CompletedProcess:
    """The run, forcing ``forcerun``, with one kill point armed; it must die by SIGKILL (whole process group)."""
    e = env()
    e[KILL_AT_ENV] = kill_at
    # the shell becomes the leader of a new process group (start_new_session) and execs Snakemake: its pid is the
    # group every job of the run inherits
    cmd = f'export {KILL_GROUP_ENV}=$$; exec {" ".join(command(forcerun))}'
    proc = subprocess.run(["bash", "-c", cmd], cwd=wf, env=e, capture_output=True, text=True, timeout=900,
                          start_new_session=True)
    return proc


def test_two_runs_from_scratch_are_byte_identical(prepared, tmp_path):
    again = make_workflow_copy(tmp_path / "again", shrunk_tiny_config())
    run([SNAKEMAKE, "--cores", "2", TARGET], again, timeout=1200)
    diffs = differing_files(prepared, again)
    print(f"from scratch twice: {len(result_files(prepared))} result files, {len(diffs)} differ: {diffs}")
    assert not unexplained(diffs, prepared, again), unexplained(diffs, prepared, again)
    models = [n for n in result_files(prepared) if n.endswith(".pt")]
    assert len(models) >= 3 and not any(m in diffs for m in models)  # two classifiers and the detector


@pytest.mark.parametrize("kill_at,forcerun", KILL_POINTS, ids=[k for k, _ in KILL_POINTS])
def test_killed_run_reruns_to_identical_results(prepared, tmp_path, kill_at, forcerun):
    wf = tmp_path / "wf"
    shutil.copytree(prepared, wf, symlinks=True)
    killed = run_killed(wf, kill_at, forcerun)
    assert killed.returncode == -signal.SIGKILL, (
        f"the kill point {kill_at} was not reached (exit {killed.returncode}):\n{killed.stderr[-3000:]}")

    run([SNAKEMAKE, "--unlock"], wf)
    run(command(forcerun), wf, timeout=900)  # the same command again
    if kill_at.startswith("after:") and "/checkpoints/" in kill_at:  # a complete checkpoint: training resumes
        variant = kill_at.split("/")[-2]
        assert "resuming from" in (wf / f"results/logs/train/{D}/{variant}.log").read_text()

    assert leftover_temporaries(wf) == []
    diffs = differing_files(prepared, wf)
    print(f"kill at {kill_at}: rerun to completion; {len(result_files(wf))} result files, "
          f"{len(unexplained(diffs, prepared, wf))} differ beyond wall-time columns")
    assert not unexplained(diffs, prepared, wf), f"after a kill at {kill_at}: {unexplained(diffs, prepared, wf)}"
    assert not [p for p in (wf / "results").rglob("last.pt*")], "a checkpoint outlived the finished training"


def test_kill_points_refuse_a_malformed_setting(monkeypatch, tmp_path):
    from xraypipe.atomic import write_text

    monkeypatch.setenv(KILL_AT_ENV, "midway:results/*")
    with pytest.raises(ValueError, match="phase one of start, torn, rename, after"):
        write_text(tmp_path / "a.txt", "x")
    monkeypatch.delenv(KILL_AT_ENV)
    write_text(tmp_path / "a.txt", "x")
    assert (tmp_path / "a.txt").read_text() == "x" and os.listdir(tmp_path) == ["a.txt"]


def test_plain_rerun_redoes_a_job_killed_after_writing_one_of_its_files(prepared, tmp_path):
    """auroc.csv written, auroc.md not, when the run dies: Snakemake marks auroc.csv incomplete, and the plain
    command (no --forcerun) redoes the job instead of refusing (profiles/default: rerun-incomplete)."""
    wf = tmp_path / "wf"
    shutil.copytree(prepared, wf, symlinks=True)
    assert run_killed(wf, "after:results/tables/auroc.csv", "auroc_table").returncode == -signal.SIGKILL
    assert not (wf / "results/tables/auroc.md").exists()
    run([SNAKEMAKE, "--unlock"], wf)
    rerun = run([SNAKEMAKE, "--cores", "2", TARGET], wf)
    assert "auroc_table" in rerun.stdout + rerun.stderr
    assert not unexplained(differing_files(prepared, wf), prepared, wf)
