"""The Snakemake files pass Snakemake's own linter and are formatted by snakefmt (pinned in requirements.txt;
line length 120 in pyproject's [tool.snakefmt]). Fix: `snakefmt .` from the repository root."""

import subprocess

import yaml
from workflow_copy import BIN, ROOT, env, make_workflow_copy


def test_snakemake_lint_is_clean(tmp_path):
    wf = make_workflow_copy(tmp_path / "wf", yaml.safe_load((ROOT / "config.yaml").read_text()))
    proc = subprocess.run([str(BIN / "snakemake"), "--lint"], cwd=wf, env=env(), capture_output=True, text=True,
                          timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Congratulations, your workflow is in a good condition!" in out, out[-4000:]
    assert "Lints for" not in out, out[-4000:]


def test_snakefmt_check_is_clean():
    proc = subprocess.run([str(BIN / "snakefmt"), "--check", "--compact-diff", "."], cwd=ROOT, env=env(),
                          capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"run `snakefmt .` from the repository root:\n{out[-4000:]}"
    # it did look at the Snakefile and every rules/*.smk (pyproject's include pattern)
    expected = 1 + len(list((ROOT / "rules").glob("*.smk")))
    assert f"All {expected} file(s) would be left unchanged" in out, out[-2000:]
