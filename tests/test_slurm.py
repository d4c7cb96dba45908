"""The tiny experiment through the Slurm profile on a REAL one-node Slurm cluster (slurmctld + slurmd + munged
started by the test on localhost), with one training job cancelled mid-run by Slurm (scancel) and resumed from
its checkpoint by Snakemake's retry.

Needs Debian's slurmctld, slurmd, slurm-client and munge (`make system-deps` installs them when run as root) and
root (the daemons). Skips without them, except under CI (env CI set), where it fails instead.
Run alone: `.venv/bin/pytest -s tests/test_slurm.py` (prints the Slurm job table).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from slurm_cluster import APT_PACKAGES, SlurmCluster, missing_binaries
from workflow_copy import BIN, env, load_tiny_config, make_workflow_copy

pytestmark = pytest.mark.slow

SNAKEMAKE_TIMEOUT = 1800  # s; a hung snakemake is SIGKILLed (with its process group) after this
KILLED_VARIANT = "resnet18"


def _unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {reason} (run `make system-deps` as root)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def cluster():
    missing = missing_binaries()
    if missing:
        _unavailable(f"Slurm is not installed (missing {', '.join(missing)}; apt: {' '.join(APT_PACKAGES)})")
    if os.geteuid() != 0:
        _unavailable("starting slurmctld/slurmd/munged for the test needs root")
    c = SlurmCluster()
    try:
        c.start()
        yield c
    finally:
        c.stop()
        c.cleanup()


def fit_workflow_profile_to_this_node(wf: Path) -> None:
    """The workflow copy's profiles/slurm with the GPU request dropped and memory/threads fitted to this node."""
    path = wf / "profiles/slurm/config.yaml"
    profile = yaml.safe_load(path.read_text())
    train = profile["set-resources"]["train"]
    assert train["gpu"] >= 1 and train["cpus_per_gpu"] >= 1 and train["mem_mb"] and train["runtime"]
    assert profile["retries"] >= 1 and profile["rerun-incomplete"] is True
    assert "executor" not in profile  # the site profile's
    for key in ("gpu", "gpu_model", "cpus_per_gpu"):
        train.pop(key, None)  # no GPU: a CPU job with cpus-per-task = threads
    for resources in [profile["default-resources"], *profile["set-resources"].values()]:
        resources["mem_mb"] = min(resources.get("mem_mb", 1000), 1000)
    profile["set-threads"] = {rule: 1 for rule in profile.get("set-threads", {})}
    path.write_text(yaml.safe_dump(profile, sort_keys=False))


def write_site_profile(wf: Path, dest: Path) -> Path:
    """This cluster's site profile: the example one (profiles/site-slurm-example), polling sooner."""
    site = yaml.safe_load((wf / "profiles/site-slurm-example/config.yaml").read_text())
    assert site["executor"] == "slurm" and site["slurm-status-command"] == "squeue"
    site["slurm-init-seconds-before-status-checks"] = 5
    dest.mkdir(parents=True)
    (dest / "config.yaml").write_text(yaml.safe_dump(site, sort_keys=False))
    return dest


def squeue_jobs(cluster) -> pd.DataFrame:
    out = cluster.run(["squeue", "--states=all", "--noheader", "--format=%i|%T|%k|%j"]).stdout
    rows = [line.split("|", 3) for line in out.splitlines() if line.strip()]
    frame = pd.DataFrame(rows, columns=["job_id", "state", "comment", "name"])
    frame["rule"] = frame["comment"].str.extract(r"^rule_(\w+?)(?:_wildcards_|$)", expand=False)
    return frame.sort_values("job_id", key=lambda s: s.astype(int)).reset_index(drop=True)


def cancel_training_after_first_checkpoint(cluster, wf: Path, proc: subprocess.Popen, timeout: float = 900) -> str:
    """Wait for the variant's first per-epoch checkpoint, then scancel its Slurm job (SIGTERM, then SIGKILL)."""
    checkpoint = wf / f"results/checkpoints/nih_synthetic/{KILLED_VARIANT}/last.pt"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if checkpoint.exists():
            jobs = squeue_jobs(cluster)
            mine = jobs[(jobs["rule"] == "train") & jobs["comment"].str.contains(KILLED_VARIANT)
                        & (jobs["state"] == "RUNNING")]
            assert len(mine) == 1, jobs.to_string()
            job_id = mine["job_id"].iloc[0]
            cluster.run(["scancel", job_id])
            return job_id
        time.sleep(0.5)
    raise AssertionError(f"no checkpoint {checkpoint} appeared (snakemake exit code {proc.poll()})")


@pytest.mark.timeout(SNAKEMAKE_TIMEOUT + 900)  # above our own SIGKILL deadline (pyproject's default is 900 s)
def test_tiny_experiment_runs_through_slurm_and_a_cancelled_training_job_resumes(cluster, tmp_path):
    wf = make_workflow_copy(tmp_path / "wf", load_tiny_config())
    fit_workflow_profile_to_this_node(wf)
    site = write_site_profile(wf, tmp_path / "site-profile")
    log_path = tmp_path / "snakemake.log"
    with open(log_path, "w") as log:
        # the README's command: the workflow's resources from its workflow profile, the cluster from the site's
        proc = subprocess.Popen([str(BIN / "snakemake"), "--workflow-profile", "profiles/slurm", "--profile", str(site),
                                 "results/tables/auroc.csv"],
                                cwd=wf, env=cluster.env(env()), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            cancelled = cancel_training_after_first_checkpoint(cluster, wf, proc)
            try:
                proc.wait(timeout=SNAKEMAKE_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # hung: kill snakemake and everything it started
                proc.wait(timeout=30)
                raise AssertionError(f"snakemake hung for {SNAKEMAKE_TIMEOUT} s and was killed")
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
            for job_id in squeue_jobs(cluster).query("state in ['PENDING', 'RUNNING']")["job_id"]:
                cluster.run(["scancel", job_id], check=False)
    output = log_path.read_text()
    jobs = squeue_jobs(cluster)
    print(f"\nSlurm jobs (squeue --states=all):\n{jobs[['job_id', 'state', 'rule', 'comment']].to_string()}")
    assert proc.returncode == 0, f"{output[-6000:]}\n{cluster.logs()}"
    assert f"Using profiles {site} and workflow specific profile profiles/slurm" in output, output[:3000]

    # the table was produced, from both variants
    table = pd.read_csv(wf / "results/tables/auroc.csv").set_index("variant")
    assert table.loc[["resnet18", "small_cnn"], "mean_auroc"].between(0, 1).all(), table.to_string()

    # every non-local job went through sbatch: one Slurm job each, all COMPLETED but the cancelled one;
    # the table rule is a localrule and ran on the submitting host
    by_state = jobs.groupby("state")["job_id"].apply(list).to_dict()
    assert by_state.get("CANCELLED") == [cancelled], jobs.to_string()
    completed = jobs[jobs["state"] == "COMPLETED"]
    assert completed["rule"].value_counts().to_dict() == {
        # pixel_stats: every train job reads the per-pixel statistics (as under DVC), whatever its normalization
        "predict": 4, "train": 2, "evaluate": 2, "make_splits": 1, "build_cache": 1, "pixel_stats": 1}, jobs.to_string()
    assert set(jobs["state"]) == {"COMPLETED", "CANCELLED"}, jobs.to_string()
    assert not {"auroc_table", "prepare_raw"} & set(jobs["rule"])  # localrules: ran on the submitting host
    assert (wf / "results/logs/prepare_raw/nih_synthetic.log").exists()
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", output)
    assert sorted(submitted, key=int) == jobs["job_id"].tolist(), output[-4000:]

    # Slurm's own job logs (kept by the profile), one per Slurm job
    slurm_logs = sorted((wf / ".snakemake/slurm_logs").rglob("*.log"))
    assert {p.stem for p in slurm_logs} >= set(completed["job_id"]), slurm_logs

    # the retried training job resumed from the checkpoint the cancelled one had written
    train_log = (wf / f"results/logs/train/nih_synthetic/{KILLED_VARIANT}.log").read_text()
    resumed = re.search(r"resuming from \S+ after epoch (\d+)", train_log)
    assert resumed and int(resumed[1]) >= 1, train_log[-3000:]
    print(f"cancelled job {cancelled}; the retry logged: {resumed[0]}")
    epochs = load_tiny_config()["variants"][KILLED_VARIANT]["epochs"]
    assert f"epoch 1/{epochs}" not in train_log  # the retry did not start over
    history = pd.read_csv(wf / f"results/models/nih_synthetic/{KILLED_VARIANT}/history.csv")
    assert history["epoch"].tolist() == list(range(1, epochs + 1))
    assert not (wf / f"results/checkpoints/nih_synthetic/{KILLED_VARIANT}/last.pt").exists()
