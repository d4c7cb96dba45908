"""The Slurm profiles without a cluster: the workflow profile (profiles/slurm: what each rule requests) and the
example site profile (profiles/site-slurm-example: executor and plugin settings), and that the README's
`snakemake --workflow-profile profiles/slurm --profile <site>` combines them. (tests/test_slurm.py runs them on a
real Slurm.)"""

import re
import subprocess

import pytest
import yaml
from workflow_copy import BIN, ROOT, env, load_tiny_config, make_workflow_copy


@pytest.fixture(scope="module")
def profile():
    return yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())


SITE = ROOT / "profiles/site-slurm-example"


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
    # retries; and what profiles/default gives (a workflow profile replaces that one)
    assert profile["retries"] >= 1
    default = yaml.safe_load((ROOT / "profiles/default/config.yaml").read_text())
    assert {k: profile.get(k) for k in default} == default
    # nothing about the cluster itself: that is the site profile's (so any site profile works with it)
    assert not [k for k in profile if k in ("executor", "jobs", "latency-wait") or k.startswith("slurm-")]


def test_example_site_profile_has_the_cluster_settings_only(profile):
    site = yaml.safe_load((SITE / "config.yaml").read_text())
    assert site["executor"] == "slurm" and site["jobs"] >= 1 and site["latency-wait"] >= 5
    # job states polled without slurmdbd
    assert site["slurm-status-command"] == "squeue"
    assert 0 < site["slurm-init-seconds-before-status-checks"] <= 60
    # keys the workflow profile sets would be overridden by it (Snakemake merges per top-level key)
    assert not set(site) & set(profile)


def test_table_and_download_rules_run_locally():
    rules, text = _rule_names()
    local = set()
    for block in re.findall(r"^localrules:\s*\n((?:[ \t]+\S.*\n?)+)", text, flags=re.MULTILINE):
        local |= set(re.findall(r"\w+", block))
    local |= {n for line in re.findall(r"^localrules:[ \t]*(\S.*)$", text, flags=re.MULTILINE) for n in re.findall(r"\w+", line)}
    assert "auroc_table" in local
    downloads = {r for r in rules if "download" in r} | {"prepare_raw"}  # prepare_raw fetches source: download
    assert downloads <= local, downloads - local


def test_workflow_profile_and_site_profile_combine(tmp_path):
    """The README's command: resources from the workflow profile, executor and plugin settings from the site's;
    nothing is written to Snakemake's user config dir (no `make slurm-profile` any more)."""
    wf = make_workflow_copy(tmp_path / "wf", load_tiny_config())
    e = env()
    e["XDG_CONFIG_HOME"] = str(tmp_path / "config")  # Snakemake's user config dir: must stay unused
    cmd = [str(BIN / "snakemake"), "--workflow-profile", "profiles/slurm", "--profile", str(SITE), "-n",
           "results/tables/auroc.csv"]
    proc = subprocess.run(cmd, cwd=wf, env=e, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert re.search(r"Using profiles? \S*site-slurm-example and workflow specific profile profiles/slurm for setting "
                     r"default command line arguments", out), out[:2000]
    assert re.search(r"train\s+2", out), out[-2000:]
    # the train jobs carry the workflow profile's requests; the site's printshellcmds is in effect
    assert re.search(r"resources: .*mem_mb=64000.*runtime=720, gpu=1, cpus_per_gpu=8", out), out[-3000:]
    assert "Shell command: python scripts/train.py" in out or "python scripts/train.py" in out
    assert not (tmp_path / "config").exists()
    assert "slurm-profile" not in (ROOT / "Makefile").read_text()


def test_profiles_merge_per_key_as_documented(tmp_path):
    """What docs/slurm.md says of the merge, checked on Snakemake's own argument parser: the site profile's
    cluster keys apply; a key both set is the workflow profile's, whole (a site's default-resources are dropped)."""
    from snakemake.cli import parse_args

    site = tmp_path / "site"
    site.mkdir()
    settings = yaml.safe_load((SITE / "config.yaml").read_text())
    settings["default-resources"] = {"slurm_account": "site_account"}
    (site / "config.yaml").write_text(yaml.safe_dump(settings))
    _, args = parse_args(["--workflow-profile", str(ROOT / "profiles/slurm"), "--profile", str(site), "-n"])
    assert args.executor == "slurm" and args.jobs == settings["jobs"] and args.latency_wait == settings["latency-wait"]
    assert args.rerun_incomplete and args.retries == 2
    assert args.set_resources["train"]["gpu"].value == 1
    assert args.default_resources["mem_mb"].value == 4000 and "slurm_account" not in args.default_resources
