"""One source of pins: pyproject.toml. requirements.txt, envs/pipeline.yaml and benchmarks/requirements.txt are
generated from it (xraypipe.requirements) and the lock file agrees with it."""

import re

import yaml

from xraypipe.requirements import read_groups, stale


def _pins(lines):
    pins = {}
    for line in lines:
        line = line.split("#")[0].strip()
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        if m:
            pins[m[1].lower().replace("_", "-")] = m[2]
    return pins


def test_pyproject_pins_every_direct_dependency(project_root):
    groups = read_groups(project_root / "pyproject.toml")
    for group, requirements in groups.items():
        assert requirements and all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[^\s;=]+", r) for r in requirements), group
    names = [n for reqs in groups.values() for n in _pins(reqs)]
    assert len(names) == len(set(names)), "a package is pinned in two groups"
    runtime = _pins(groups["runtime"])
    assert runtime["torch"] == "2.14.1" and runtime["torchvision"] == "0.29.1"
    for required in ("pandas", "numpy", "scikit-learn", "pillow", "seaborn", "grad-cam", "jsonschema"):
        assert required in runtime
    assert {"snakemake", "dvc"} <= set(_pins(groups["pipeline"]))
    assert {"pytest", "pytest-timeout", "hypothesis"} <= set(_pins(groups["test"]))


def test_generated_requirement_files_are_current(project_root):
    assert stale(project_root) == [], "regenerate them from pyproject.toml: make requirements"


def test_requirement_files_hold_the_pyproject_pins(project_root):
    groups = {g: _pins(r) for g, r in read_groups(project_root / "pyproject.toml").items()}
    req = _pins((project_root / "requirements.txt").read_text().splitlines())
    assert req == {**groups["runtime"], **groups["pipeline"], **groups["slurm"], **groups["test"]}
    env = yaml.safe_load((project_root / "envs" / "pipeline.yaml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert _pins(pip_section) == {**groups["runtime"], **groups["pipeline"], **groups["slurm"]}
    bench = _pins((project_root / "benchmarks" / "requirements.txt").read_text().splitlines())
    assert bench == groups["bench"]


FREEZE_OMITS = {"setuptools", "pip"}  # `pip freeze` (make lock) leaves these out


def test_lock_agrees_with_pyproject(project_root):
    groups = {g: _pins(r) for g, r in read_groups(project_root / "pyproject.toml").items()}
    lock = _pins((project_root / "requirements-lock.txt").read_text().splitlines())
    for group in ("runtime", "pipeline", "slurm", "test"):
        for name, version in groups[group].items():
            if name in FREEZE_OMITS:
                continue
            assert lock.get(name) == version, f"{name}: pyproject {version}, lock {lock.get(name)} (make lock)"
    assert not set(groups["bench"]) & set(lock), "benchmark-only packages stay out of the lock"


def test_every_rule_declares_log_and_conda(project_root):
    text = "\n".join(p.read_text() for p in sorted((project_root / "rules").glob("*.smk")))
    rules = re.findall(r"^rule (\w+):\n(.*?)(?=^rule |\Z)", text, flags=re.M | re.S)
    assert len(rules) >= 7
    for name, body in rules:
        assert "    log:" in body, f"rule {name} has no log:"
        assert "    conda:" in body, f"rule {name} has no conda:"
        assert "    threads:" in body, f"rule {name} has no threads:"
