"""The three dependency declarations agree: requirements.txt, the lock file and envs/pipeline.yaml."""

import re

import yaml

TEST_ONLY = {"pytest", "pytest-timeout", "setuptools", "hypothesis"}


def _pins(lines):
    pins = {}
    for line in lines:
        line = line.split("#")[0].strip()
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        if m:
            pins[m[1].lower().replace("_", "-")] = m[2]
    return pins


def test_requirements_are_all_pinned(project_root):
    lines = [l.split("#")[0].strip() for l in (project_root / "requirements.txt").read_text().splitlines()]
    lines = [l for l in lines if l]
    assert lines and all("==" in l for l in lines), [l for l in lines if "==" not in l]
    pins = _pins(lines)
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    for required in ("snakemake", "dvc", "pandas", "numpy", "scikit-learn", "pillow", "seaborn"):
        assert required in pins


def test_conda_env_matches_requirements(project_root):
    req = _pins((project_root / "requirements.txt").read_text().splitlines())
    env = yaml.safe_load((project_root / "envs" / "pipeline.yaml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda = _pins(pip_section)
    assert conda == {k: v for k, v in req.items() if k not in TEST_ONLY}


def test_lock_agrees_with_requirements(project_root):
    req = _pins((project_root / "requirements.txt").read_text().splitlines())
    lock = _pins((project_root / "requirements-lock.txt").read_text().splitlines())
    for name, version in req.items():
        if name in lock:
            assert lock[name] == version, name
    assert {"torch", "snakemake", "dvc"} <= set(lock)


def test_every_rule_declares_log_and_conda(project_root):
    text = "\n".join(p.read_text() for p in sorted((project_root / "rules").glob("*.smk")))
    rules = re.findall(r"^rule (\w+):\n(.*?)(?=^rule |\Z)", text, flags=re.M | re.S)
    assert len(rules) >= 7
    for name, body in rules:
        assert "    log:" in body, f"rule {name} has no log:"
        assert "    conda:" in body, f"rule {name} has no conda:"
        assert "    threads:" in body, f"rule {name} has no threads:"
