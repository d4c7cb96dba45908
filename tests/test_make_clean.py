"""`make clean` removes what the runs made and keeps the files git tracks under results/ (results/README.md), in a
git checkout and outside one (an unpacked archive). Run on a scratch copy of the Makefile, never on the checkout."""

import shutil
import subprocess

import pytest
from workflow_copy import ROOT


def _project(dest):
    (dest / "results/models/x").mkdir(parents=True)
    shutil.copy2(ROOT / "Makefile", dest / "Makefile")
    shutil.copy2(ROOT / "results/README.md", dest / "results/README.md")
    (dest / "results/models/x/model.pt").write_text("weights")
    (dest / "results/tables").mkdir()
    (dest / "results/tables/auroc.csv").write_text("variant,mean_auroc\n")
    (dest / "results/.hidden").write_text("x")
    (dest / ".snakemake/log").mkdir(parents=True)
    return dest


def _git(path, *args):
    subprocess.run(["git", "-c", "user.email=t@example.invalid", "-c", "user.name=t", *args], cwd=path, check=True,
                   capture_output=True, timeout=60)


def _clean(path):
    subprocess.run(["make", "-s", "clean"], cwd=path, check=True, capture_output=True, timeout=60)


def test_the_tracked_results_readme_is_tracked():
    listed = subprocess.run(["git", "ls-files", "results"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    assert "results/README.md" in listed.stdout.split()


@pytest.mark.parametrize("checkout", ["git", "archive"])
def test_make_clean_keeps_tracked_files(tmp_path, checkout):
    project = _project(tmp_path / "project")
    if checkout == "git":
        _git(project, "init", "-q")
        (project / ".gitignore").write_text("results/*\n!results/README.md\n.snakemake/\n")
        (project / "results/notes.md").write_text("tracked note")
        _git(project, "add", "-f", ".gitignore", "Makefile", "results/README.md", "results/notes.md")
        _git(project, "commit", "-qm", "project")
    readme = (project / "results/README.md").read_text()
    _clean(project)
    left = sorted(str(p.relative_to(project)) for p in (project / "results").rglob("*"))
    expected = ["results/README.md"] + (["results/notes.md"] if checkout == "git" else [])
    assert left == expected
    assert (project / "results/README.md").read_text() == readme
    assert not (project / ".snakemake").exists()
    _clean(project)  # again, on a clean tree
    assert (project / "results/README.md").exists()
