"""The workflow parses with Snakemake alone: a driver environment (`snakemake --sdm conda`, the jobs' packages in
envs/pipeline.yaml) has neither torch nor the scientific stack nor the package installed. The Snakefile puts the
checkout's src/ on sys.path and imports only modules that need Snakemake's own dependencies (PyYAML, jsonschema).

Emulated in this environment (fast, offline): `snakemake -n` runs with a sitecustomize.py that makes the heavy
modules unimportable and hides the editable install of the package, so the Snakefile must find it itself."""

import re
import subprocess

import yaml
from workflow_copy import BIN, ROOT, env, make_workflow_copy

# Everything the jobs import but the driver does not have (envs/pipeline.yaml's pip list, by import name).
HIDDEN = ["torch", "torchvision", "numpy", "pandas", "sklearn", "scipy", "numba", "cv2", "pytorch_grad_cam",
          "matplotlib", "seaborn", "PIL", "ttach", "tqdm", "threadpoolctl", "dvc",
          "snakemake_executor_plugin_slurm", "snakemake_executor_plugin_slurm_jobstep"]

SITECUSTOMIZE = """\
import atexit, importlib.abc, os, sys

HIDDEN = set(os.environ["XRAYPIPE_TEST_HIDDEN"].split(","))
INSTALLED_SRC = os.path.realpath(os.environ["XRAYPIPE_TEST_INSTALLED_SRC"])

# the editable install put the project's src/ on sys.path (a .pth), and its start-up hook imported the package
# from there: undo both, as in an environment where the package is not installed
sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != INSTALLED_SRC]
for name in [m for m in sys.modules if m == "xraypipe" or m.startswith("xraypipe.")]:
    del sys.modules[name]


class Hidden(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            with open(os.environ["XRAYPIPE_TEST_REPORT"] + ".refused", "a") as f:
                f.write(name + "\\n")
            raise ModuleNotFoundError(f"No module named {name!r} (hidden: a driver environment)", name=name)
        return None


sys.meta_path.insert(0, Hidden())

# Snakemake alone: the Slurm executor plugin (which needs pandas and numpy) is not installed either; Snakemake finds
# its plugins by listing the modules on sys.path
import pkgutil

_iter_modules = pkgutil.iter_modules


def iter_modules(path=None, prefix=""):
    return (m for m in _iter_modules(path, prefix) if m.name.partition(".")[0] not in HIDDEN)


pkgutil.iter_modules = iter_modules


@atexit.register
def _report():
    package = sys.modules.get("xraypipe")
    with open(os.environ["XRAYPIPE_TEST_REPORT"], "w") as f:
        f.write(getattr(package, "__file__", None) or "")
"""


def test_snakemake_dry_run_parses_without_torch_or_the_installed_package(tmp_path):
    config = yaml.safe_load((ROOT / "config.yaml").read_text())  # the default experiment
    wf = make_workflow_copy(tmp_path / "wf", config)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    report = tmp_path / "imported"
    e = env()
    e.update(PYTHONPATH=str(site), XRAYPIPE_TEST_HIDDEN=",".join(HIDDEN),
             XRAYPIPE_TEST_INSTALLED_SRC=str(ROOT / "src"), XRAYPIPE_TEST_REPORT=str(report))

    # the emulation itself works: torch is refused and the package is not importable
    probe = subprocess.run([str(BIN / "python"), "-c", "import xraypipe"], cwd=tmp_path, env=e,
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode != 0 and "No module named 'xraypipe'" in probe.stderr, probe.stderr
    probe = subprocess.run([str(BIN / "python"), "-c", "import torch"], cwd=tmp_path, env=e,
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode != 0 and "hidden: a driver environment" in probe.stderr, probe.stderr

    # the default experiment's main target (`make run`)
    proc = subprocess.run([str(BIN / "snakemake"), "-n", "results/tables/auroc.csv", "--quiet", "rules"], cwd=wf,
                          env=e, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "hidden: a driver environment" not in out
    # the package came from the workflow's own src/ (put on sys.path by rules/common.smk)
    assert report.read_text() == str(wf / "src/xraypipe/__init__.py"), report.read_text()
    assert re.search(r"^train\s+2$", proc.stdout, flags=re.M), proc.stdout[-2000:]  # the DAG: both variants train
