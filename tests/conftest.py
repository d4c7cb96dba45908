import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "src"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real reference excerpts (../shared/data); tests that need them skip when absent."""
    if not SHARED.exists():
        pytest.skip(f"{SHARED} not present")
    return SHARED


@pytest.fixture(scope="session")
def project_root() -> Path:
    return ROOT


@pytest.fixture(autouse=True)
def _few_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))


def pytest_addoption(parser):
    parser.addoption("--run-real", action="store_true", default=False,
                     help="also run the real-data recipe runs (marker 'real'; tens of minutes; `make test-real`)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-real"):
        return
    skip = pytest.mark.skip(reason="real-data recipe run: `make test-real` (pytest --run-real)")
    for item in items:
        if "real" in item.keywords:
            item.add_marker(skip)
