"""DVC experiments, metrics/plots/diff and a remote on the tiny config, in a temporary git repository (slow).

- `dvc exp run -S config.yaml:variants.small_cnn.lr=...` re-runs only the stages that depend on that variant;
- `dvc metrics diff` shows the AUROC change, `dvc plots diff` renders, `dvc diff` lists the changed outputs;
- `dvc push` to a local-directory remote, then a fresh `git clone` + `dvc pull` gets the cache tensors and models
  without recomputing anything.
Run alone with `-s` to see the `dvc metrics diff` output.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re

import pytest
import yaml
from workflow_copy import BIN, init_git_dvc, load_tiny_config, make_workflow_copy, run

from xraypipe.config import validate_config

DVC = str(BIN / "dvc")
TARGET = "auroc_table"  # the classification DAG (raw -> ... -> table); figures etc. are other stages
LR = 0.0005
D = "nih_synthetic"
SUMMARY = "results/metrics_summary.json"  # dvc.yaml's top-level metrics file


def _leaves(tree: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in tree.items():
        out += _leaves(value, f"{prefix}{key}.") if isinstance(value, dict) and value else [f"{prefix}{key}"]
    return out


def _stages(stdout: str) -> tuple[set, set]:
    ran = set(re.findall(r"Running stage '([^']+)'", stdout))
    skipped = set(re.findall(r"Stage '([^']+)' didn't change, skipping", stdout))
    return ran, skipped


def _lock_md5(repo, path: str) -> str:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    for stage in lock["stages"].values():
        for out in stage.get("outs", []):
            if out["path"] == path:
                return out["md5"]
    raise KeyError(path)


@pytest.fixture(scope="module")
def tiny_dvc_repo(tmp_path_factory):
    cfg = load_tiny_config()
    cfg["datasets"][D]["synthetic"]["n_patients"] = 60
    cfg["variants"]["resnet18"]["epochs"] = 2
    cfg["variants"]["small_cnn"]["epochs"] = 2
    cfg["evaluation"]["bootstrap_samples"] = 50
    cfg = validate_config(cfg, source="tiny")  # every key explicit: DVC params must exist in config.yaml
    base = tmp_path_factory.mktemp("dvc")
    repo = make_workflow_copy(base / "repo", cfg)
    init_git_dvc(repo)
    remote = base / "remote"
    run([DVC, "remote", "add", "-d", "localremote", str(remote)], repo)
    first = run([DVC, "repro", TARGET], repo, timeout=1500)
    ran, _ = _stages(first.stdout)
    assert f"train@{D}-resnet18" in ran and f"build_cache@{D}" in ran, first.stdout
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "baseline"], repo)
    pushed = run([DVC, "push", TARGET, "--with-deps"], repo, timeout=600)
    assert any(p.is_file() for p in remote.rglob("*")), pushed.stdout
    return repo, remote


@pytest.mark.slow
def test_exp_run_reruns_only_the_changed_variant_and_diffs_show_it(tiny_dvc_repo, tmp_path):
    repo, _ = tiny_dvc_repo
    exp = run([DVC, "exp", "run", TARGET, "-n", "small-cnn-lr", "-S", f"config.yaml:variants.small_cnn.lr={LR}"],
              repo, timeout=1500)
    ran, skipped = _stages(exp.stdout)
    # config_to_json rewrites the params files (results/params/); of the stages reading it, only those whose
    # tracked keys changed run again
    assert ran == {"config_to_json", f"train@{D}-small_cnn", f"predict@{D}-small_cnn-val",
                   f"predict@{D}-small_cnn-test", f"evaluate@{D}-small_cnn", "auroc_table"}, exp.stdout
    assert {f"prepare_raw@{D}", f"make_splits@{D}", f"build_cache@{D}", f"train@{D}-resnet18",
            f"evaluate@{D}-resnet18"} <= skipped, exp.stdout
    assert yaml.safe_load((repo / "config.yaml").read_text())["variants"]["small_cnn"]["lr"] == LR

    # metrics: the summary (dvc.yaml's one metrics file) shows small_cnn's AUROC changed, resnet18's not
    shown = run([DVC, "metrics", "diff"], repo)
    print("\n$ dvc metrics diff\n" + shown.stdout)
    diff = json.loads(run([DVC, "metrics", "diff", "--json"], repo).stdout)
    assert set(diff) <= {SUMMARY}, diff  # the per-label files are not metrics by default
    small = diff[SUMMARY][f"{D}.small_cnn.mean_auroc"]
    assert small["old"] is not None and small["diff"] != 0, diff
    assert not any(v.get("diff") for k, v in diff[SUMMARY].items() if ".resnet18." in k), diff
    # the per-label details, on request: their own files, still diffable against HEAD (read from the cache)
    per_label = json.loads(run([DVC, "metrics", "diff", "--json", "--targets",
                                f"results/metrics/{D}/small_cnn.json"], repo).stdout)
    assert per_label[f"results/metrics/{D}/small_cnn.json"]["mean_auroc"]["diff"] != 0, per_label
    # the summary is the evaluate stage's figures, rounded
    summary = json.loads((repo / SUMMARY).read_text())
    for variant in ("resnet18", "small_cnn"):
        mean = json.loads((repo / f"results/metrics/{D}/{variant}.json").read_text())["mean"]
        assert summary[D][variant] == {"mean_auroc": round(mean["auroc"], 4), "ci_low": round(mean["ci_low"], 4),
                                       "ci_high": round(mean["ci_high"], 4)}, (summary, mean)

    # params diff names the changed key
    params = run([DVC, "params", "diff"], repo)
    assert "variants.small_cnn.lr" in params.stdout, params.stdout

    # plots: rendered to a directory (HTML + the history data of both revisions)
    out = tmp_path / "plots"
    plots = run([DVC, "plots", "diff", "-o", str(out)], repo)
    html = (out / "index.html").read_text()
    assert "history.csv" in html and "val_mean_auroc" in html, plots.stdout

    # outputs: small_cnn's model and predictions changed, nothing of resnet18 or the cache
    changed = json.loads(run([DVC, "diff", "--json"], repo).stdout)
    modified = {entry["path"] for entry in changed["modified"]}
    assert f"results/models/{D}/small_cnn/model.pt" in modified, changed
    assert f"results/predictions/{D}/small_cnn/test.csv" in modified, changed
    assert not any("resnet18" in p or "/cache/" in p for p in modified), changed
    print("$ dvc diff (modified)\n" + "\n".join(sorted(modified)))

    # the experiment is recorded; `dvc exp show` (baseline, workspace, experiment) stays readable: the summary's 3
    # figures per dataset x variant as metrics, each tracked config key once, with every row's value
    table = run([DVC, "exp", "show", "--no-pager", "--csv"], repo).stdout
    assert "small-cnn-lr" in table
    header, *rows = list(csv.reader(io.StringIO(table)))
    groups = json.loads(run([DVC, "exp", "show", "--no-pager", "--json"], repo).stdout)[0]["data"]
    metrics = [c for f in groups["metrics"].values() for c in _leaves(f["data"])]
    params = [c for f in groups["params"].values() for c in _leaves(f["data"])]
    print(f"\n$ dvc exp show --csv: {len(header)} columns ({len(metrics)} metrics, {len(params)} params, "
          f"{len(groups['deps'])} deps)")
    assert list(groups["metrics"]) == [SUMMARY] and len(metrics) == 3 * 2, groups["metrics"].keys()
    assert len(params) == len(set(params)), sorted(p for p in params if params.count(p) > 1)  # each key once
    assert f"variants.small_cnn.lr" in header  # the key `exp run -S` set, by its own name
    lr = header.index("variants.small_cnn.lr")
    assert {row[lr] for row in rows} == {"0.002", str(LR)}, rows  # read for every revision, not "!"
    # before: 909 columns (434 metric leaves, 355 params of which ~220 twice, 115 deps), then 269 (124 deps: 68 of
    # them code files); the code stage now depends on the two code directories. What remains wide is every tracked
    # key of a fully written config.yaml and the intermediate results: `dvc exp show --only-changed`
    assert len(groups["deps"]) <= 60, sorted(groups["deps"])
    assert [d for d in sorted(groups["deps"]) if d.startswith(("src", "scripts"))] == ["scripts", "src/xraypipe"]
    assert len(metrics) + len(params) <= 160 and len(header) <= 220, len(header)
    only_changed = next(csv.reader(io.StringIO(run([DVC, "exp", "show", "--no-pager", "--csv", "--only-changed"],
                                                   repo).stdout)))
    print(f"$ dvc exp show --only-changed --csv: {len(only_changed)} columns")
    assert "variants.small_cnn.lr" in only_changed and len(only_changed) <= 60, only_changed


@pytest.mark.slow
def test_remote_push_and_pull_into_a_fresh_clone_without_recomputing(tiny_dvc_repo, tmp_path):
    repo, remote = tiny_dvc_repo  # pushed at the baseline commit (the fixture)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    assert not (clone / "results").exists()
    run([DVC, "config", "core.analytics", "false"], clone)
    run([DVC, "pull", TARGET, "--with-deps"], clone, timeout=600)
    for path in (f"results/cache/{D}/train.npy", f"results/cache/{D}/index.csv",
                 f"results/models/{D}/resnet18/model.pt", f"results/models/{D}/small_cnn/model.pt"):
        assert (clone / path).is_file(), path
        assert hashlib.md5((clone / path).read_bytes()).hexdigest() == _lock_md5(clone, path)  # the locked bytes
    assert (clone / "results/tables/auroc.csv").is_file() and (clone / f"results/metrics/{D}/resnet18.json").is_file()
    # Nothing to recompute. `dvc status` can only miss outputs that are never cached (`cache: false` in
    # dvc.yaml: the raw images, by design, the code fingerprints and a few small files); no dependency, parameter or cached output
    # differs, and `dvc repro --allow-missing` runs no stage.
    status = run([DVC, "status", TARGET, "--with-deps", "--json"], clone)
    print(f"\n$ dvc status --json (clone, after dvc pull)\n{status.stdout}")
    uncached = set(re.findall(r"^\s+- (\S+?):\n\s+cache: false", (clone / "dvc.yaml").read_text(), flags=re.MULTILINE))
    patterns = [re.sub(r"\\\$\\\{[^}]*\\\}", ".+", re.escape(u)) for u in uncached]
    for stage, changes in json.loads(status.stdout).items():
        for change in changes:  # only {"changed outs"/"changed deps": {<uncached path>: "deleted"}}
            assert isinstance(change, dict) and set(change) <= {"changed outs", "changed deps"}, (stage, change)
            for paths in change.values():
                assert set(paths.values()) == {"deleted"}, (stage, change)
                # an uncached output may be a directory (results/params): paths under it count as uncached too
                assert all(any(re.fullmatch(pat + r"(/.+)?", p) for pat in patterns) for p in paths), \
                    (stage, paths, uncached)
    again = run([DVC, "repro", TARGET, "--allow-missing"], clone, timeout=600)
    ran, _ = _stages(again.stdout)
    assert not ran, again.stdout
    assert not (clone / "results/raw").exists()  # not even the raw data had to be regenerated
