"""Packaging: every third-party import is declared in pyproject.toml, and the built package installs and runs.

The fast test reads the imports with ast (inside functions too) and maps them to distributions with
importlib.metadata.packages_distributions(): an unguarded import of the library must be a runtime dependency
(``pip install .`` gives it), so a missing ``grad-cam`` (pytorch_grad_cam) fails here. The slow test builds an sdist,
a wheel from that sdist, installs the wheel into a fresh venv with the lock as constraints (torch from the local
wheel cache) and runs ``xraypipe-predict`` and the Python API there, outside the checkout.
"""

import ast
import importlib.metadata as md
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xraypipe.requirements import read_groups

ROOT = Path(__file__).resolve().parents[1]
GUARDS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _name(requirement: str) -> str:
    return _normalise(re.split(r"[=<>!~;\[ ]", requirement, maxsplit=1)[0])


def third_party_imports(path: Path, local=()) -> dict[str, bool]:
    """Top-level module -> whether every import of it in ``path`` is guarded (inside ``try:`` with an ``except``
    of ImportError, ModuleNotFoundError or Exception: an optional dependency)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}

    def guarded(node) -> bool:
        while node in parents:
            parent = parents[node]
            if isinstance(parent, ast.Try) and node in parent.body:
                for handler in parent.handlers:
                    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
                    if handler.type is None or any(isinstance(t, ast.Name) and t.id in GUARDS for t in types):
                        return True
            node = parent
        return False

    found: dict[str, bool] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in sys.stdlib_module_names or top in ("__future__", "xraypipe") or top in local:
                continue
            found[top] = found.get(top, True) and guarded(node)
    return found


def undeclared(files, allowed: set[str], optional_allowed: set[str], local=()) -> list[str]:
    """'<file>: <module> (<distribution>)' for each import whose distribution is not allowed."""
    distributions = md.packages_distributions()
    problems = []
    for path in files:
        for module, is_guarded in sorted(third_party_imports(path, local).items()):
            dists = {_normalise(d) for d in distributions.get(module, [])}
            if not dists and is_guarded and _normalise(module) in optional_allowed:
                continue  # an optional package not installed here (e.g. the bench extra's torchxrayvision)
            if not dists:
                problems.append(f"{path.relative_to(ROOT)}: {module} (no installed distribution provides it)")
                continue
            ok = allowed | (optional_allowed if is_guarded else set())
            if not dists & ok:
                problems.append(f"{path.relative_to(ROOT)}: {module} ({', '.join(sorted(dists))}"
                                f"{', optional' if is_guarded else ''})")
    return problems


def _requires(names) -> set[str]:
    """The distributions ``names`` (installed ones) themselves require (one level, extras' own needs excluded)."""
    out = set()
    for name in names:
        try:
            requirements = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        out |= {_name(r) for r in requirements if "extra ==" not in r.replace('"', "'").replace("extra==", "extra ==")}
    return out


@pytest.fixture(scope="module")
def groups():
    return {g: {_name(r) for r in reqs} for g, reqs in read_groups(ROOT / "pyproject.toml").items()}


def test_the_scan_finds_an_undeclared_import(tmp_path, groups):
    """The bug this test exists for: the library imported pytorch_grad_cam, pyproject did not list grad-cam."""
    module = tmp_path / "mod.py"
    module.write_text("import numpy as np\n\ndef f():\n    from pytorch_grad_cam import GradCAM\n"
                      "try:\n    import psutil\nexcept ImportError:\n    psutil = None\n")
    found = third_party_imports(module)
    assert found == {"numpy": False, "pytorch_grad_cam": False, "psutil": True}
    module = module.rename(ROOT / "tests" / f".scan_probe_{os.getpid()}.py")
    try:
        problems = undeclared([module], groups["runtime"] - {"grad-cam"}, {"psutil"})
        assert [p.split(": ", 1)[1] for p in problems] == ["pytorch_grad_cam (grad-cam)"]
        assert undeclared([module], groups["runtime"], {"psutil"}) == []
    finally:
        module.unlink()


def test_every_import_of_the_library_is_a_declared_dependency(groups):
    runtime = groups["runtime"]
    extras = set().union(*(groups[g] for g in ("pipeline", "slurm", "test", "bench")))
    # an optional import (guarded by try/except ImportError) may come from an extra or with one of the declared
    # packages (e.g. zc.lockfile with dvc, psutil with snakemake)
    optional = runtime | extras | _requires(runtime | extras)
    library = sorted((ROOT / "src" / "xraypipe").rglob("*.py"))
    assert undeclared(library, runtime, optional) == [], "declare these in pyproject.toml [project] dependencies"
    scripts = sorted((ROOT / "scripts").glob("*.py"))
    assert undeclared(scripts, runtime | groups["pipeline"], optional) == []
    tests = sorted((ROOT / "tests").glob("*.py"))
    local = {p.stem for p in tests} | {p.stem for p in (ROOT / "benchmarks").glob("*.py")}
    test_deps = runtime | groups["pipeline"] | groups["slurm"] | groups["test"]
    assert undeclared(tests, test_deps, optional | groups["bench"], local) == []
    bench = sorted((ROOT / "benchmarks").glob("*.py"))
    assert undeclared(bench, test_deps | groups["bench"], optional, local) == []


def test_the_package_is_light_to_import_and_exports_the_api():
    code = ("import sys, xraypipe; assert 'torch' not in sys.modules, 'import xraypipe pulled in torch'; "
            "import xraypipe.api as api; "
            "assert all(getattr(xraypipe, n) is getattr(api, n) for n in api.__all__); print(xraypipe.__version__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert proc.returncode == 0, proc.stderr
    import tomllib

    assert proc.stdout.strip() == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


# ------------------------------------------------------------------------------------ the built package, installed
INSTALLED_CHECK = r"""
import json, sys
from pathlib import Path
import numpy as np
import xraypipe
from xraypipe import CacheDataset, load_model, predict_images
assert "site-packages" in xraypipe.__file__, xraypipe.__file__
model = load_model(sys.argv[1])
frame = predict_images(model, [sys.argv[2], np.full((20, 20), 100, np.uint8)])
data = CacheDataset(sys.argv[3], "train")
x, y = data[0]
print(json.dumps({"file": xraypipe.__file__, "columns": list(frame.columns), "n": len(frame),
                  "pathologies": data.pathologies, "shape": list(x.shape), "labels": y.tolist()}))
"""


@pytest.mark.slow
def test_the_built_package_installs_into_a_clean_venv_and_predicts(tmp_path):
    """sdist -> wheel -> fresh venv (pip install <wheel> -c requirements-lock.txt) -> xraypipe-predict with a
    Grad-CAM overlay and the API, run from outside the checkout."""
    started = time.monotonic()
    dist = tmp_path / "dist"
    build = ("import sys; from setuptools import build_meta as b; "
             "print(b.build_sdist(sys.argv[1]))")
    proc = subprocess.run([sys.executable, "-c", build, str(dist)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sdist = dist / proc.stdout.strip().splitlines()[-1]
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
                           str(dist), str(sdist)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    wheel = next(dist.glob("xraypipe-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    try:
        _install_and_run(tmp_path, wheel, venv, started)
    finally:  # ~6 GB (torch's CUDA libraries): not left in pytest's kept temp dirs
        shutil.rmtree(venv, ignore_errors=True)


def _install_and_run(tmp_path, wheel, venv, started):
    import numpy as np
    import torch
    from PIL import Image

    from xraypipe.model_files import save_torch_file
    from xraypipe.models import build_model

    pip_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-compile",
                           str(wheel), "-c", str(ROOT / "requirements-lock.txt")], cwd=tmp_path, env=pip_env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    installed = time.monotonic() - started

    # a tiny model (untrained but for its last bias: it predicts Mass 0.8, Effusion 0.1 for any image)
    pathologies = ["Mass", "Effusion"]
    net = build_model("small_cnn", num_classes=2, in_channels=1, widths=[4, 8])
    with torch.no_grad():
        net[-1].weight.zero_()
        net[-1].bias.copy_(torch.logit(torch.tensor([0.8, 0.1])))
    meta = {"model": "small_cnn", "model_args": {"widths": [4, 8]}, "pathologies": pathologies, "in_channels": 1,
            "image_size": 32, "normalization": {"method": "fixed", "mean": 0.5, "std": 0.25}}
    model_dir = tmp_path / "model"
    save_torch_file({"state_dict": net.state_dict(), "metadata": meta}, model_dir / "model.pt")
    (model_dir / "thresholds.json").write_text(json.dumps({"thresholds": {"Mass": 0.5, "Effusion": 0.5}}))
    image = tmp_path / "film.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48), dtype=np.uint8)).save(image)
    cache = tmp_path / "cache"
    cache.mkdir()
    np.save(cache / "train.npy", np.full((2, 32, 32), 51, np.uint8))
    (cache / "index.csv").write_text("cache_row,image_id,path,patient_id,split,Mass,Effusion\n"
                                     "0,a.png,,p0,train,1,\n1,b.png,,p1,train,0,0\n")

    run_env = {**pip_env, "PATH": f"{venv / 'bin'}:{pip_env.get('PATH', '')}", "MPLBACKEND": "Agg"}
    outside = tmp_path / "elsewhere"  # not the checkout: nothing imports from ./src
    outside.mkdir()
    helped = subprocess.run([str(venv / "bin" / "xraypipe-predict"), "--help"], cwd=outside, env=run_env,
                            capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0 and "--model" in helped.stdout, helped.stderr
    scored = subprocess.run([str(venv / "bin" / "xraypipe-predict"), "--model", str(model_dir / "model.pt"),
                             "--json", "--out-dir", str(outside / "overlays"), str(image)], cwd=outside,
                            env=run_env, capture_output=True, text=True, timeout=300)
    assert scored.returncode == 0, scored.stderr[-3000:]
    row = json.loads(scored.stdout.splitlines()[-1])
    assert row["probabilities"] == pytest.approx({"Mass": 0.8, "Effusion": 0.1}, abs=1e-5)
    assert row["positive"] == ["Mass"]
    assert Image.open(row["overlay"]).size[0] > 200  # the Grad-CAM overlay: pytorch_grad_cam is installed

    api = subprocess.run([str(venv / "bin" / "python"), "-c", INSTALLED_CHECK, str(model_dir / "model.pt"),
                          str(image), str(cache)], cwd=outside, env=run_env, capture_output=True, text=True,
                         timeout=300)
    assert api.returncode == 0, api.stderr[-3000:]
    out = json.loads(api.stdout.splitlines()[-1])
    assert str(venv) in out["file"]
    assert out["columns"] == ["image", "prob_Mass", "prob_Effusion", "positive_Mass", "positive_Effusion"]
    assert out["n"] == 2 and out["pathologies"] == pathologies and out["shape"] == [1, 32, 32]
    assert out["labels"][0] == 1.0 and np.isnan(out["labels"][1])
    total = time.monotonic() - started
    print(f"packaging: built + installed in {installed:.0f} s, total {total:.0f} s")
    assert installed < 240, f"building and installing the package took {installed:.0f} s"
