"""One writer per results/: a Snakemake run and a DVC run never write the same results at once
(xraypipe.writer_lock). The holder is named; a claim whose engine process has ended is taken over."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from workflow_copy import BIN, env, init_git_dvc, load_tiny_config, make_workflow_copy, run
from xraypipe.writer_lock import CLAIM_NAME, ResultsBusyError, _proc_start, claim_results


@pytest.fixture
def live_process():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    yield proc
    proc.kill()
    proc.wait()


def engine_run(engine, pid):
    host = socket.gethostname()
    return {"engine": engine, "run": f"{engine}:{host}:{pid}", "host": host, "pid": pid, "start": _proc_start(pid)}


def test_claims_of_other_engines_conflict_and_name_the_holder(tmp_path, live_process):
    results = tmp_path / "results"
    holder = engine_run("snakemake", live_process.pid)
    claim_results(results, holder)
    claim_results(results, holder)  # the run's own jobs share the claim
    with pytest.raises(ResultsBusyError, match=rf"being written by a snakemake run \(pid {live_process.pid} on"):
        claim_results(results, engine_run("dvc", os.getpid()))
    with pytest.raises(ResultsBusyError):
        claim_results(results, engine_run("manual", os.getpid()))
    claim_results(results, engine_run("snakemake", os.getpid()))  # Snakemake serialises its own runs itself
    assert json.loads((results / CLAIM_NAME).read_text())["pid"] == os.getpid()


def test_a_claim_whose_engine_has_ended_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    claim_results(tmp_path / "results", engine_run("dvc", dead.pid))
    taken = claim_results(tmp_path / "results", engine_run("snakemake", os.getpid()))
    assert taken["engine"] == "snakemake"
    # a reused pid (same number, another start time) is not the holder either
    stale = {**engine_run("dvc", os.getpid()), "start": "1"}
    (tmp_path / "results" / CLAIM_NAME).write_text(json.dumps(stale))
    assert claim_results(tmp_path / "results", engine_run("snakemake", os.getpid()))["engine"] == "snakemake"


def test_a_stage_script_under_dvc_stops_while_snakemake_holds_results(tmp_path, live_process, project_root):
    work = make_workflow_copy(tmp_path / "wf", load_tiny_config())
    claim_results(work / "results", engine_run("snakemake", live_process.pid))
    (work / "results" / "config.json").write_text('{"theirs": 1}\n')
    e = {**env(), "DVC_ROOT": str(work)}
    e.pop("XRAYPIPE_RUN", None)
    proc = subprocess.run([sys.executable, "scripts/config_to_json.py", "--config", "config.yaml",
                           "--out", "results/config.json"], cwd=work, env=e, capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.startswith("error: results/ is being written by a snakemake run")
    assert "Traceback" not in proc.stderr
    assert (work / "results" / "config.json").read_text() == '{"theirs": 1}\n'  # the running record is intact


def test_snakemake_refuses_to_start_while_a_dvc_run_holds_results(tmp_path, live_process):
    work = make_workflow_copy(tmp_path / "wf", load_tiny_config())
    claim_results(work / "results", engine_run("dvc", live_process.pid))
    proc = run([str(BIN / "snakemake"), "--cores", "1", "results/config.json"], work, check=False)
    assert proc.returncode != 0
    assert "results/ is being written by a dvc run" in proc.stdout + proc.stderr
    assert not (work / "results" / "config.json").exists()


@pytest.mark.slow
def test_dvc_repro_during_a_snakemake_run_stops_before_touching_results(tmp_path):
    """The reported case: `dvc repro` started while Snakemake trains. DVC must stop at once; results/config.json
    and the raw data stay those of the running experiment."""
    cfg = load_tiny_config()
    cfg["variants"]["resnet18"]["epochs"] = 30  # long enough to be caught mid-run
    work = make_workflow_copy(tmp_path / "wf", cfg)
    init_git_dvc(work)
    snake = subprocess.Popen([str(BIN / "snakemake"), "--cores", "2", "results/config.json",
                              "results/tables/auroc.csv"], cwd=work,
                             env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 600
        log = work / "results/logs/train/nih_synthetic/resnet18.log"
        while time.time() < deadline and not (log.exists() and "epoch 1" in log.read_text()):
            assert snake.poll() is None, snake.stdout.read()[-3000:]
            time.sleep(2)
        record = (work / "results/config.json").read_bytes()
        raw = sorted(p.name for p in (work / "results/raw/nih_synthetic").iterdir())
        (work / "config.yaml").write_text((work / "config.yaml").read_text().replace("seed: 1", "seed: 2", 1))
        started = time.time()
        proc = run([str(BIN / "dvc"), "repro"], work, check=False, timeout=120)
        assert proc.returncode != 0 and time.time() - started < 60
        assert "lock" in (proc.stdout + proc.stderr).lower()
        assert (work / "results/config.json").read_bytes() == record
        assert sorted(p.name for p in (work / "results/raw/nih_synthetic").iterdir()) == raw
        assert snake.poll() is None  # the Snakemake run goes on
    finally:
        snake.kill()
        snake.wait()
