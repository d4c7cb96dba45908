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


def test_step_thread_scaling_times_one_and_two_threads_in_fresh_processes():
    speed = _speed()
    step = speed.step_thread_scaling("small_cnn", 3, image_size=16, batch_size=4, steps=2, repeats=1)
    assert step["ips_1"] > 0 and step["ips_2"] > 0
    assert step["speedup"] == pytest.approx(step["ips_2"] / step["ips_1"])


def test_core_scaling_rows_give_the_bound_of_the_job():
    speed = _speed()
    # a job of 100 s at one core, 80 of them training; the step scales 1.6x, other work 2.0x
    cores = {"variant": "resnet18", "cores_1_s": 100.0, "cores_2_s": 62.5, "speedup": 1.6,
             "train_1_s": 80.0, "train_2_s": 50.0, "train_speedup": 1.6,
             "ceiling": {"pool_s": 1.0, "speedup": 2.0},
             "step": {"model": "resnet18", "image_size": 96, "batch_size": 32, "ips_1": 50.0, "ips_2": 80.0,
                      "speedup": 1.6},
             "bound": 100.0 / (80.0 / 1.6 + 20.0 / 2.0)}
    rows = {r["measurement"].strip(): r for r in speed.table({"cores": cores})}
    assert rows["same, --cores 2"]["pass"] is False  # 1.6 < 1.8
    bound = rows["the job's bound: train at the step's, the rest at the ceiling"]
    assert bound["value"] == pytest.approx(1.6667, abs=1e-3) and bound["ratio"] == pytest.approx(0.96, abs=1e-3)
    assert rows["bare resnet18 step, 96 px, batch 32, 1 -> 2 threads"]["ratio"] == 1.6
