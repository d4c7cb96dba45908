"""The Slurm profile (profiles/slurm) without a cluster: what it requests per rule, and that the README's
`snakemake --profile slurm` finds it after `make slurm-profile`. (tests/test_slurm.py runs it on a real Slurm.)"""

import re
import subprocess

import pytest
import yaml
from workflow_copy import BIN, ROOT, env, load_tiny_config, make_workflow_copy


@pytest.fixture(scope="module")
def profile():
    return yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())


def _rule_names():
    text = "\n".join(p.read_text() for p in [*(ROOT / "rules").glob("*.smk"), ROOT / "Snakefile"])
    return set(re.findall(r"^rule (\w+):", text, flags=re.MULTILINE)), text


def test_resources_per_rule(profile):
    rules, text = _rule_names()
    res = profile["set-resources"]
    assert set(res) <= rules and set(profile["set-threads"]) <= rules  # no typo'd rule names
    train = res["train"]
    assert train["gpu"] >= 1 and train["cpus_per_gpu"] >= 1 and train["mem_mb"] >= 8000 and train["runtime"] >= 60
    assert res["build_cache"]["mem_mb"] >= 8000 and profile["set-threads"]["build_cache"] > 1  # preprocessing
    assert profile["default-resources"]["mem_mb"] and profile["default-resources"]["runtime"]
    # partition/account: profile settings (commented examples), never hard-coded in rules
    raw = (ROOT / "profiles/slurm/config.yaml").read_text()
    assert re.search(r"#\s*slurm_partition:", raw) and re.search(r"#\s*slurm_account:", raw)
    assert "slurm_partition" not in text and "slurm_account" not in text
    # retries, and job states polled without slurmdbd
    assert profile["executor"] == "slurm" and profile["retries"] >= 1
    assert profile["slurm-status-command"] == "squeue"
    assert 0 < profile["slurm-init-seconds-before-status-checks"] <= 60


def test_table_and_download_rules_run_locally():
    rules, text = _rule_names()
    local = set()
    for block in re.findall(r"^localrules:\s*\n((?:[ \t]+\S.*\n?)+)", text, flags=re.MULTILINE):
        local |= set(re.findall(r"\w+", block))
    local |= {n for line in re.findall(r"^localrules:[ \t]*(\S.*)$", text, flags=re.MULTILINE) for n in re.findall(r"\w+", line)}
    assert "auroc_table" in local
    downloads = {r for r in rules if "download" in r} | {"prepare_raw"}  # prepare_raw fetches source: download
    assert downloads <= local, downloads - local


def test_make_slurm_profile_makes_the_documented_command_work(tmp_path):
    wf = make_workflow_copy(tmp_path / "wf", load_tiny_config())
    e = env()
    e["XDG_CONFIG_HOME"] = str(tmp_path / "config")  # Snakemake's user config dir: $XDG_CONFIG_HOME/snakemake
    cmd = [str(BIN / "snakemake"), "--profile", "slurm", "-n", "results/tables/auroc.csv"]
    before = subprocess.run(cmd, cwd=wf, env=e, capture_output=True, text=True, timeout=300)
    assert before.returncode != 0 and "no profile.yaml (or config.yaml) found" in before.stderr  # needs the setup

    subprocess.run(["make", "-s", "-C", str(ROOT), "slurm-profile"], env=e, check=True, capture_output=True,
                   timeout=60)
    link = tmp_path / "config/snakemake/slurm"
    assert link.is_symlink() and link.resolve() == (ROOT / "profiles/slurm").resolve()
    after = subprocess.run(cmd, cwd=wf, env=e, capture_output=True, text=True, timeout=300)
    out = after.stdout + after.stderr
    assert after.returncode == 0, out[-3000:]
    # with the workflow's own profile (profiles/default) beside it
    assert re.search(r"Using profiles \S*slurm and workflow specific profile profiles/default for setting default "
                     r"command line arguments", out), out[:2000]
    assert re.search(r"train\s+2", out), out[-2000:]
