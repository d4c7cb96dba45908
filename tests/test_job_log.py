"""Job logs: timestamped lines, progress as lines, the changed configuration keys, the closing account."""

import io
import json
import re
import subprocess
import sys

import pytest

from xraypipe import cli
from xraypipe.job_log import (LineProgress, TimestampedStream, log_params_changes, params_changes, stage_account,
                              timestamp, write_params_record)
from workflow_copy import BIN, load_tiny_config, make_workflow_copy, run

STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ")


class FakeClock:
    def __init__(self, now=1_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


def test_each_line_gets_the_time_it_was_completed_and_redraws_become_lines():
    inner, clock = io.StringIO(), FakeClock()
    stream = TimestampedStream(inner, clock=clock)
    stream.write("epoch 1: 10%")
    clock.now += 5
    stream.write("\repoch 1: 50%\r")
    stream.write("epoch 1: 100%\ndone, ")
    assert inner.getvalue().splitlines() == [f"{timestamp(clock.now)} epoch 1: 10%",
                                             f"{timestamp(clock.now)} epoch 1: 50%",
                                             f"{timestamp(clock.now)} epoch 1: 100%"]
    clock.now += 60
    stream.flush()  # an unfinished line is written at the end, with the time it was flushed
    assert inner.getvalue().splitlines()[-1] == f"{timestamp(clock.now)} done, "
    assert "\r" not in inner.getvalue() and not stream.isatty()


def test_progress_in_a_log_is_one_line_per_period_and_one_at_the_end():
    out, clock = io.StringIO(), FakeClock(0.0)
    bar = LineProgress(total=100, desc="epoch 3", unit="batch", every_seconds=30, stream=out, clock=clock)
    for _ in range(100):
        clock.now += 1  # one batch a second: a line after 30, 60 and 90 batches
        bar.update(1)
    bar.set_postfix(loss="0.3120")
    bar.close()
    bar.close()  # closing twice writes nothing more
    lines = out.getvalue().splitlines()
    assert lines == ["epoch 3: 30/100 batch (30%) after 30.0 s, 1.0 batch/s",
                     "epoch 3: 60/100 batch (60%) after 60.0 s, 1.0 batch/s",
                     "epoch 3: 90/100 batch (90%) after 90.0 s, 1.0 batch/s",
                     "epoch 3: 100/100 batch (100%) done in 100.0 s, 1.0 batch/s, loss=0.3120"]


def test_progress_wraps_an_iterable_like_tqdm():
    out, clock = io.StringIO(), FakeClock(0.0)
    items = []
    for item in LineProgress(range(5), desc="cache", unit="img", every_seconds=1e9, stream=out, clock=clock):
        items.append(item)
    assert items == list(range(5))
    assert out.getvalue() == ""  # no period passed and never closed: nothing written mid-way


def test_params_changes_name_each_changed_added_and_removed_key():
    before = {"variants": {"resnet18": {"lr": 0.001, "epochs": 10, "flip": True}}, "training": {"seed": 0}}
    after = {"variants": {"resnet18": {"lr": 0.0001, "epochs": 10, "batch_size": 16}}, "training": {"seed": 0}}
    assert params_changes(before, after) == ["variants.resnet18.batch_size: (not set) -> 16",
                                             "variants.resnet18.flip: true -> (not set)",
                                             "variants.resnet18.lr: 0.001 -> 0.0001"]
    assert params_changes(after, after) == []
    assert params_changes(None, after) == []
    long = {"a": "x" * 200}
    assert len(params_changes({"a": 1}, long)[0]) < 80  # a long value is cut short


def test_the_log_names_changed_keys_against_the_last_successful_run(tmp_path, capsys):
    record = tmp_path / "job.log.params.json"
    log_params_changes(record, {"split": {"seed": 0}})
    assert "no record of an earlier run" in capsys.readouterr().out
    write_params_record(record, {"split": {"seed": 0}})
    log_params_changes(record, {"split": {"seed": 0}})
    assert "unchanged" in capsys.readouterr().out
    log_params_changes(record, {"split": {"seed": 3}})
    assert capsys.readouterr().out.splitlines() == ["configuration changed since this job's last run (1 keys):",
                                                    "  split.seed: 0 -> 3"]
    record.write_text('{"split": ')  # cut short by a kill: treated as no record
    log_params_changes(record, {"split": {"seed": 3}})
    assert "no record of an earlier run" in capsys.readouterr().out


def test_stage_account_names_what_was_read_and_written_with_sizes(tmp_path, monkeypatch):
    manifest, summary = tmp_path / "m.csv", tmp_path / "m.summary.csv"
    manifest.write_bytes(b"x" * 2048)
    summary.write_text("a\n")
    raw = tmp_path / "raw"
    raw.mkdir()
    args = type("Args", (), {"raw": str(raw), "manifest": str(manifest), "summary": str(summary)})()
    monkeypatch.setattr(sys, "argv", ["scripts/make_splits.py", "--dataset", "d"])
    lines = stage_account("splits", args, 12.345)
    assert lines == [f"read: {raw}", f"wrote: {manifest} (2.0 KiB)", f"wrote: {summary} (2 B)",
                     "stage make_splits finished in 12.3 s"]
    monkeypatch.setattr(sys, "argv", ["somewhere/else.py"])  # not a stage's script: the time only
    assert stage_account("splits", args, 1.0) == ["stage splits finished in 1.0 s"]


def test_numbers_in_log_lines_are_rounded():
    assert cli.rounded(0.7196749817152732) == "0.7197"
    assert cli.rounded(None) == "n/a" and cli.rounded(float("nan")) == "n/a"


def test_a_stage_script_logs_timestamped_lines_and_its_error_line_is_plain(tmp_path, project_root):
    """A real stage script with its output going to a file, as under Snakemake and DVC."""
    proc = subprocess.run([sys.executable, str(project_root / "scripts" / "make_splits.py"), "--config",
                           str(tmp_path / "missing.yaml"), "--dataset", "d", "--raw", "r", "--manifest", "m",
                           "--summary", "s"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and "missing.yaml" in proc.stderr.splitlines()[0]


@pytest.fixture(scope="module")
def splits_workflow(tmp_path_factory):
    cfg = load_tiny_config()
    cfg["experiment"]["variants"] = ["small_cnn"]
    cfg["datasets"]["nih_synthetic"]["synthetic"].update(n_patients=40, image_size=32)
    work = make_workflow_copy(tmp_path_factory.mktemp("joblog") / "wf", cfg)
    run([str(BIN / "snakemake"), "--cores", "1", "results/splits/nih_synthetic.csv"], work)
    return work


def test_a_job_log_is_timestamped_lines_ending_with_the_account(splits_workflow):
    log = (splits_workflow / "results/logs/make_splits/nih_synthetic.log").read_text()
    lines = [line for line in log.splitlines() if not line.startswith("WARNING")]
    assert lines and all(STAMP.match(line) for line in lines), log
    assert "\r" not in log
    assert any(re.search(r"wrote: results/splits/nih_synthetic\.csv \(\d", line) for line in lines), log
    assert re.search(r"stage make_splits finished in \d+\.\d s$", lines[-1]), log


def test_a_changed_key_gives_a_short_reason_and_the_log_names_the_key(splits_workflow):
    import yaml

    cfg_path = splits_workflow / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["datasets"]["nih_synthetic"]["split"]["seed"] = 7
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    dry = run([str(BIN / "snakemake"), "-n", "--cores", "1", "results/splits/nih_synthetic.csv"], splits_workflow)
    console = dry.stdout + dry.stderr
    assert "make_splits" in console and "config sha256" in console, console
    assert len(console) < 6000, console  # no JSON dump of the configuration in the reason
    assert '"pathologies"' not in console, console
    run([str(BIN / "snakemake"), "--cores", "1", "results/splits/nih_synthetic.csv"], splits_workflow)
    log = (splits_workflow / "results/logs/make_splits/nih_synthetic.log").read_text()
    assert "configuration changed since this job's last run (1 keys):" in log, log
    assert "datasets.nih_synthetic.split.seed: 0 -> 7" in log, log
    record = json.loads((splits_workflow / "results/logs/make_splits/nih_synthetic.log.params.json").read_text())
    assert record["datasets"]["nih_synthetic"]["split"]["seed"] == 7
