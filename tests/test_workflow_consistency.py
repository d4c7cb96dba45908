"""One stage table (xraypipe.workflow.STAGES) drives both engines: the committed dvc.yaml is what the table
generates, and Snakemake and DVC define the same jobs with the same data dependencies, outputs, params and code
dependencies; a code change re-runs exactly the stages whose code changed, under both."""

import json
import re
import subprocess
import sys

import pytest

from workflow_copy import BIN, ROOT, init_git_dvc, load_tiny_config, make_workflow_copy, run
from xraypipe.code_deps import code_deps
from xraypipe.config import validate_config
from xraypipe.config import params_file
from xraypipe.workflow import (CODE_SCRIPT, CODE_STAGE, PATHS, STAGE, STAGE_PARAMS, STAGES, dvc_yaml,
                               fingerprint_path, stage_scripts)


@pytest.fixture(scope="module")
def two_by_two(tmp_path_factory):
    """A config crossing two datasets with three variants, so the matrix expansion is really exercised."""
    cfg = load_tiny_config()
    cfg["datasets"]["nih_other"] = dict(cfg["datasets"]["nih_synthetic"], synthetic={"seed": 5, "n_patients": 20})
    cfg["variants"]["resnet18_lr"] = dict(cfg["variants"]["resnet18"], lr=0.01)
    cfg["experiment"] = {"datasets": ["nih_synthetic", "nih_other"], "variants": ["resnet18", "small_cnn", "resnet18_lr"]}
    # two cross-validated variants (one of them not in experiment.variants) x 3 folds
    cfg["variants"]["small_cnn_cv"] = dict(cfg["variants"]["small_cnn"], lr=0.004)
    cfg["cross_validation"] = {"variants": ["small_cnn", "small_cnn_cv"], "folds": [0, 1, 2], "seed": 0}
    cfg["reproduction"] = {"studies": ["chestxray8"], "variants": {"vgg_like_1ch": "resnet18"}}  # one table job
    return make_workflow_copy(tmp_path_factory.mktemp("wf"), cfg), validate_config(cfg)


def is_code(path: str) -> bool:
    return path.startswith(("scripts/", "src/"))


def snakemake_jobs(workdir) -> list[dict]:
    """Every job of a forced dry run: rule, inputs, outputs and the stage params passed to the script."""
    proc = run([str(BIN / "snakemake"), "-n", "-p", "--forceall", "--cores", "1"], workdir, timeout=300)
    jobs, job = [], None
    for line in proc.stdout.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):$", line)
        if m:
            job = {"rule": m[1], "input": set(), "output": set(), "params": None}
            jobs.append(job)
        elif job and re.match(r"^    (input|output): ", line):
            key, _, files = line.strip().partition(": ")
            job[key] = {f.rstrip("/") for f in files.split(", ")}
        elif job and "--config-json '" in line:
            job["params"] = json.loads(re.search(r"--config-json '([^']*)'", line)[1])
    return [j for j in jobs if j["rule"] != "all"]


def dvc_stages(workdir) -> list[dict]:
    from dvc.repo import Repo

    with Repo(str(workdir), uninitialized=True) as repo:
        return [{"name": s.name, "output": {o.def_path for o in s.outs},
                 "deps": {d.def_path for d in s.deps if not hasattr(d, "params")},
                 "params": [(d.def_path, list(d.params)) for d in s.deps if hasattr(d, "params")]}
                for s in repo.index.stages]


def leaf_paths(tree: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in tree.items():
        path = f"{prefix}{key}"
        out |= leaf_paths(value, path + ".") if isinstance(value, dict) and value else {path}
    return out


def test_the_committed_dvc_yaml_is_the_generated_one(project_root):
    assert (project_root / "dvc.yaml").read_text() == dvc_yaml(), "dvc.yaml is stale: run `make dvc-yaml`"
    proc = subprocess.run([sys.executable, "-m", "xraypipe.workflow", "dvc", "--check", "--out",
                           str(project_root / "dvc.yaml")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_the_staleness_check_fails_on_an_edited_dvc_yaml(tmp_path):
    stale = tmp_path / "dvc.yaml"
    stale.write_text(dvc_yaml().replace("scripts/train.py", "scripts/train_old.py"))
    proc = subprocess.run([sys.executable, "-m", "xraypipe.workflow", "dvc", "--check", "--out", str(stale)],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "make dvc-yaml" in proc.stderr


def test_code_deps_are_the_import_closure():
    train = code_deps("scripts/train.py")
    assert {"scripts/train.py", "src/xraypipe/train.py", "src/xraypipe/models.py", "src/xraypipe/data.py",
            "src/xraypipe/__init__.py", "src/xraypipe/schemas/config.schema.yaml"} <= set(train)
    figures = code_deps("scripts/figures.py")
    assert "src/xraypipe/figures.py" in figures and "src/xraypipe/figures.py" not in train
    assert "src/xraypipe/train.py" not in code_deps("scripts/auroc_table.py")


def test_both_engines_define_the_same_jobs_files_params_and_code(two_by_two):
    workdir, cfg = two_by_two
    sm_jobs = snakemake_jobs(workdir)
    dvc = dvc_stages(workdir)
    (code_stage,) = [s for s in dvc if s["name"] == CODE_STAGE]
    dvc.remove(code_stage)  # DVC only: Snakemake tracks the code files themselves
    code_stage_deps = code_stage["deps"]
    run([sys.executable, CODE_SCRIPT], workdir)
    fingerprints = {path: json.loads((workdir / path).read_text()) for path in code_stage["output"]}
    assert set(fingerprints) == {fingerprint_path(name) for name in stage_scripts()}
    by_outputs = {frozenset(s["output"]): s for s in dvc}
    assert len(by_outputs) == len(dvc)
    # 2 datasets x 3 variants: 6 train jobs, 12 predict, 6 evaluate; 2 x 2 cross-validated variants x 3 folds
    counts = {}
    for job in sm_jobs:
        counts[job["rule"]] = counts.get(job["rule"], 0) + 1
    assert counts["train"] == 6 and counts["predict"] == 12 and counts["evaluate"] == 6 and counts["prepare_raw"] == 2
    assert counts["cv_folds"] == 4 and counts["train_fold"] == 12 and counts["cv_table"] == 2
    assert len(sm_jobs) == len(dvc), (sorted(counts.items()), len(dvc))
    for job in sm_jobs:
        stage = by_outputs.get(frozenset(job["output"]))
        assert stage is not None, f"no DVC stage writes {sorted(job['output'])}"
        name = stage["name"]
        assert name.split("@")[0] == job["rule"]
        # code dependencies: Snakemake tracks the files, DVC the stage's fingerprint of the same files, written by
        # the code stage, which depends on all of them
        sm_code = {f for f in job["input"] if is_code(f)}
        fingerprint = fingerprint_path(job["rule"])
        assert fingerprint in stage["deps"], name
        script = stage_scripts()[job["rule"]]
        assert sm_code == set(fingerprints[fingerprint]["files"]), name
        assert all(any(f.startswith(d + "/") for d in code_stage_deps) for f in sm_code), name
        assert script in sm_code and "src/xraypipe/config.py" in sm_code, name
        # data dependencies: every file Snakemake reads lies in a DVC dependency, and each DVC dependency holds one
        sm_data = {f for f in job["input"] if not is_code(f)}
        # a whole config section a stage tracks (every variant): its params file, as a plain dependency
        section_deps = {d for d in stage["deps"] if d.startswith(PATHS["params_dir"] + "/")}
        dvc_data = {d for d in stage["deps"] if not is_code(d) and d != fingerprint} - section_deps - {"config.yaml"}
        for f in sm_data:
            assert any(f == d or f.startswith(d + "/") for d in dvc_data), (name, f, sorted(dvc_data))
        for d in dvc_data:
            assert any(f == d or f.startswith(d + "/") for f in sm_data), (name, d, sorted(sm_data))
        # params: the same keys (DVC tracks the stage's keys in results/config.json; Snakemake passes them)
        if job["rule"] == "config_to_json":  # config.yaml as a file: its keys show once in `dvc exp show`
            assert stage["params"] == [] and "config.yaml" in stage["deps"], stage
            continue
        assert all(d == f"{PATHS['params_dir']}/{params_file(d.rsplit('/', 1)[1][:-5])}" for d in section_deps), name
        dvc_keys = [k for file, keys in stage["params"] for k in keys] + [
            d.rsplit("/", 1)[1][:-len(".json")] for d in section_deps]
        for file, keys in stage["params"]:
            assert all(file == f"{PATHS['params_dir']}/{params_file(k)}" for k in keys), (name, file, keys)
        wildcards = dict(zip(STAGE[job["rule"]].wildcards, name.partition("@")[2].split("-")))
        wanted = [k.format(**wildcards) for k in STAGE_PARAMS[STAGE[job["rule"]].params]]
        assert sorted(dvc_keys) == sorted(wanted), (name, dvc_keys, wanted)
        passed = leaf_paths(job["params"] or {})
        for leaf in passed:
            assert any(leaf == k or leaf.startswith(k + ".") for k in dvc_keys), (name, leaf, dvc_keys)
    assert {s["name"].split("@")[0] for s in dvc} == {s.name for s in STAGES} | {"config_to_json"}


def test_the_params_files_hold_every_tracked_key(two_by_two, tmp_path):
    """DVC fails on a params key missing from its params file: config_to_json fills the ones left to defaults, in
    the small file DVC reads each key from; results/config.json holds them all."""
    workdir, _ = two_by_two
    out, params_dir = tmp_path / "config.json", tmp_path / "params"
    run([sys.executable, str(workdir / "scripts" / "config_to_json.py"), "--config", "config.yaml", "--out", str(out),
         "--params-dir", str(params_dir)], workdir)
    record = json.loads(out.read_text())
    tracked = [(s["name"], file, key) for s in dvc_stages(workdir) for file, keys in s["params"]
               if file.startswith(PATHS["params_dir"] + "/") for key in keys]
    tracked += [(s["name"], dep, dep.rsplit("/", 1)[1][:-len(".json")]) for s in dvc_stages(workdir)
                for dep in s["deps"] if dep.startswith(PATHS["params_dir"] + "/")]  # whole sections: files
    assert len(tracked) > 100
    assert {file for _, file, _ in tracked} >= {"results/params/training.json", "results/params/variants.json",
                                                 "results/params/variants/small_cnn_cv.json",
                                                 "results/params/datasets/nih_other.json"}
    for name, file, key in tracked:
        for written in (json.loads((params_dir / file.split("/", 2)[2]).read_text()), record):
            node = written
            for part in key.split("."):
                assert isinstance(node, dict) and part in node, f"{name} tracks {key}, missing from {file}"
                node = node[part]
    # the split keeps each file small: one variant's file holds that variant only
    assert list(json.loads((params_dir / "variants" / "resnet18.json").read_text())["variants"]) == ["resnet18"]
    assert list(json.loads((params_dir / "training.json").read_text())) == ["training"]


def test_invalid_config_stops_before_any_job(tmp_path):
    cfg = load_tiny_config()
    cfg["variants"]["resnet18"]["batchsize"] = 8
    wf = make_workflow_copy(tmp_path / "bad", cfg)
    proc = run([str(BIN / "snakemake"), "-n", "--cores", "1"], wf, check=False, timeout=300)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "variants.resnet18.batchsize" in out and "did you mean 'batch_size'" in out
    assert not (wf / "results").exists()


def test_cross_validation_off_defines_no_cv_outputs_and_dvc_still_works(tmp_path, project_root):
    """The default (cross_validation.variants: []) expands DVC's cv matrices to nothing, like Snakemake's rule all,
    and `dvc status` works; config.yaml and config/tiny.yaml spell out the keys dvc.yaml's matrices read."""
    import yaml

    for name in ("config.yaml", "config/tiny.yaml"):
        raw = yaml.safe_load((project_root / name).read_text())
        assert isinstance(raw["cross_validation"]["variants"], list), name
        assert raw["cross_validation"]["folds"] == list(range(len(raw["cross_validation"]["folds"]))), name
        assert raw["reproduction"]["studies"] == [], name  # dvc.yaml's reproduction_table matrix reads it
    cfg = load_tiny_config()
    assert cfg["cross_validation"]["variants"] == []
    wf = make_workflow_copy(tmp_path / "wf", cfg)
    sm = set().union(*(j["output"] for j in snakemake_jobs(wf)))
    stages = dvc_stages(wf)
    dvc = set().union(*(s["output"] for s in stages if s["name"] != CODE_STAGE))  # DVC only
    assert sm == dvc, f"only in Snakemake: {sorted(sm - dvc)}\nonly in DVC: {sorted(dvc - sm)}"
    assert not [f for f in sm if f.startswith("results/cv") or "cross_validation" in f]
    assert not [s["name"] for s in stages if s["name"].split("@")[0] in ("cv_folds", "train_fold", "cv_table")]
    init_git_dvc(wf)
    status = json.loads(run([str(BIN / "dvc"), "status", "--json"], wf, timeout=300).stdout)
    assert CODE_STAGE in status and not [n for n in status if n.startswith(("train_fold", "cv_"))], sorted(status)


def _fake_outputs(repo) -> None:
    """Every output of the DAG as a placeholder file (a file inside directory outputs), marked up to date."""
    directories = [t for s in STAGES for spec in s.outputs.values() if spec.directory for t in spec.templates()]
    for job in snakemake_jobs(repo):
        for out in job["output"]:
            path = repo / out
            if any(re.fullmatch(re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(t)), out) for t in directories):
                path.mkdir(parents=True, exist_ok=True)
                (path / "placeholder").write_text("")
            elif not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("")
    run([str(BIN / "snakemake"), "--cores", "1", "--touch"], repo, timeout=300)


@pytest.mark.slow
def test_a_code_change_reruns_exactly_the_stages_that_import_it(tmp_path):
    """Change xraypipe/figures.py: Snakemake re-runs the figure jobs and nothing else, and once the code stage has
    re-hashed the code, `dvc status` reports the figure stages changed and nothing else (the stages whose computed
    code dependencies hold that file)."""
    cfg = load_tiny_config()
    repo = make_workflow_copy(tmp_path / "wf", cfg)
    init_git_dvc(repo)
    run([str(BIN / "snakemake"), "--cores", "1", PATHS["config_json"]], repo, timeout=300)
    _fake_outputs(repo)
    run([str(BIN / "dvc"), "repro", "-s", "-q", CODE_STAGE], repo)
    run([str(BIN / "dvc"), "commit", "-f", "-q"], repo, timeout=900)
    run([str(BIN / "snakemake"), "--cores", "1", "--touch"], repo, timeout=300)  # dvc commit re-links cached outputs
    assert "Nothing to be done" in run([str(BIN / "snakemake"), "-n", "--cores", "1"], repo).stdout
    assert "up to date" in run([str(BIN / "dvc"), "status"], repo).stdout

    changed = "src/xraypipe/figures.py"
    expected = {s.name for s in STAGES if changed in code_deps(s.script_path)}
    assert expected == {"roc_figure", "label_distribution_figure", "training_curves_figure", "confusion_figure",
                        "gradcam_figure"}
    path = repo / changed
    path.write_text(path.read_text() + "\n# a code change\n")
    dry = run([str(BIN / "snakemake"), "-n", "--cores", "1"], repo).stdout
    reran = {j["rule"] for j in snakemake_jobs_from(dry)} - {"all"}
    assert reran == expected, dry[-3000:]
    # under DVC the edit first changes the code stage; once it has run, exactly the figure stages are stale
    status = run([str(BIN / "dvc"), "status", "--json"], repo).stdout
    assert set(json.loads(status)) == {CODE_STAGE}, status
    run([str(BIN / "dvc"), "repro", "-s", "-q", CODE_STAGE], repo)
    status = run([str(BIN / "dvc"), "status", "--json"], repo).stdout
    assert {name.split("@")[0] for name in json.loads(status)} == expected, status


def snakemake_jobs_from(stdout: str) -> list[dict]:
    return [{"rule": m[1]} for m in re.finditer(r"^(?:local)?rule (\w+):$", stdout, re.M)]
