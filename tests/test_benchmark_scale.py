"""The data-growth part of benchmarks/speed.py runs the pipeline's own stages and reports what it measured
(a smoke run at two small sizes; the figures themselves are the benchmark's business, not asserted here)."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def _speed():
    spec = importlib.util.spec_from_file_location("speed", ROOT / "benchmarks" / "speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not (DATA / "nih" / "images_64px").is_dir(), reason="needs ../shared/data/nih")
def test_scale_benchmark_measures_each_stage_at_each_size(tmp_path):
    speed = _speed()
    results = speed.bench_scale(DATA, tmp_path, [150, 400], image_size=32, threads=1)
    rows = results["rows"]
    assert [(r["source"]) for r in rows] == ["twin", "twin", "real metadata", "real metadata"]
    # the real metadata: exactly the first n rows of Data_Entry made it through the reader into the manifest
    assert [r["images"] for r in rows[2:]] == [150, 400]
    # the twin: about n images (whole patients)
    assert all(abs(r["images"] - n) <= 0.3 * n for r, n in zip(rows[:2], (150, 400))), [r["images"] for r in rows]
    for r in rows:
        assert r["build_cache"]["rows"] == r["images"]  # every image cached
        for stage in ("make_splits", "build_cache", "snakemake_n"):
            m = r[stage]
            assert m["seconds"] > 0 and m["peak_mb"] > 0, (r["source"], stage, m)
        assert r["make_splits"]["peak_mb"] >= r["make_splits"]["baseline_mb"]
    table = speed.table({"scale": results})
    assert any(t["measurement"].startswith("build_cache, real metadata, 400 vs 150 images") for t in table), table
    assert not any(tmp_path.glob("scale_*")), "each case's files are removed after it is measured"
