"""Speed benchmarks (issue 6): preprocessing, epoch feed and no-op overhead, measured side by side in one run.

    .venv/bin/python benchmarks/speed.py [--data ../shared/data] [--files 384] [--repeats 3] [--json out.json]
    make bench            # installs benchmarks/requirements.txt (torchxrayvision) into .venv, then runs this

1. Preprocessing: the real 1024x1024 NIH PNGs of ``<data>/nih/images`` replicated to ``--files`` files, decoded
   into a 224x224 uint8 cache by the pipeline's own ``xraypipe.preprocess.build_cache`` (a process pool of
   ``--cores`` workers), against PIL's decode-only rate (open + load) of the same files in one process. Target:
   (pipeline images/s / cores) >= 0.8 x decode-only images/s, and every core busy (the pool's CPU time / wall).
2. Epoch feed: float batches from ``xraypipe.data.CacheBatches`` over a 224x224 cache, against (a) a bare numpy
   read of the same memory map in the same shuffled, sorted-within-batch row order (the floor; target >= 0.5x)
   and (b) torchxrayvision's ``NIH_Dataset`` decoding and resizing the same PNGs per item (target >= 1000x).
   Each feed ratio is the median over ``--feed-rounds`` rounds of (floor time / loader time), the two measured
   back to back in the same round. Also shown, for information: the read + float32 conversion alone, the loader
   with 1 thread, with the torch-kernel fallback, with worker threads and with augmentation.
3. No-op overhead: ``snakemake -n`` and ``dvc status`` in a scratch copy of the workflow whose config has
   ``--variants`` variants and whose outputs are all faked up to date (target < 5 s each).

Each other measurement is repeated ``--repeats`` times and the best is kept (the machine may be shared). Everything is
written under a temporary directory (``--workdir`` to keep it). Nothing in the project's results/ is touched.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
NIH_FINDINGS = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
                "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia"]
FEED_SEED = 0
STEP_S = 0.002  # the simulated device step of the overlap measurement


class BenchError(RuntimeError):
    """A precondition of the benchmark is not met (missing data, a command that failed); the message says which."""


def best_of(repeats: int, fn):
    """Run ``fn`` ``repeats`` times; return (best wall seconds, the result of that best run)."""
    best = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        wall = time.perf_counter() - start
        if best is None or wall < best[0]:
            best = (wall, result)
    return best


def machine() -> dict:
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": model, "logical_cpus": os.cpu_count(), "python": platform.python_version()}
    try:
        import psutil

        info["physical_cores"] = psutil.cpu_count(logical=False)
        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    try:
        info["load_average_1min"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    return info


# ---------------------------------------------------------------------------------------------- data set-up
def source_images(data: Path) -> list[Path]:
    images = data / "nih" / "images"
    if not images.is_dir():
        raise BenchError(f"{images}: not found; give --data, the folder holding nih/images/*.png "
                         f"(default {DEFAULT_DATA})")
    files = sorted(images.glob("*.png"))
    if not files:
        raise BenchError(f"{images}: no .png files")
    return files


def replicate(files: list[Path], n: int, out: Path) -> list[Path]:
    """Copy the real PNGs round-robin to ``n`` files named like NIH images (one patient each)."""
    out.mkdir(parents=True, exist_ok=True)
    copies = []
    for i in range(n):
        dest = out / f"{i + 1:08d}_000.png"
        shutil.copyfile(files[i % len(files)], dest)
        copies.append(dest)
    return copies


def data_entry_rows(data: Path, files: list[Path], copies: list[Path]):
    """Data_Entry rows for the copies: the source image's real row, renamed to the copy, one patient per copy."""
    import pandas as pd

    csv = data / "nih" / "Data_Entry_2017_v2020.csv.gz"
    if not csv.is_file():
        raise BenchError(f"{csv}: not found (needed for the labels of the replicated images)")
    entries = pd.read_csv(csv).set_index("Image Index")
    missing = [f.name for f in files if f.name not in entries.index]
    if missing:
        raise BenchError(f"{csv}: no row for {missing[:3]}")
    rows = entries.loc[[files[i % len(files)].name for i in range(len(copies))]].reset_index()
    rows["Image Index"] = [c.name for c in copies]
    rows["Patient ID"] = range(1, len(copies) + 1)
    rows["Follow-up #"] = 0
    return rows


def manifest_for(rows, copies: list[Path]):
    """The pipeline's manifest (dataset contract columns + one 0/1 column per finding), all rows in 'train'."""
    import pandas as pd

    findings = rows["Finding Labels"].str.split("|")
    manifest = pd.DataFrame({
        "image_id": rows["Image Index"], "path": [str(c) for c in copies],
        "patient_id": rows["Patient ID"].astype(str), "follow_up": rows["Follow-up #"],
        "view": rows["View Position"], "sex": rows["Patient Gender"], "age": rows["Patient Age"],
        "official_split": "train_val", "split": "train"})
    for finding in NIH_FINDINGS:
        manifest[finding] = findings.map(lambda labels, f=finding: float(f in labels))
    return manifest


# --------------------------------------------------------------------------------------------- 1. preprocess
def bench_preprocess(copies, manifest, work: Path, cores: int, repeats: int) -> dict:
    import numpy as np
    from PIL import Image

    from xraypipe.preprocess import build_cache, load_cache_split, load_image

    def decode_only():
        cpu = time.process_time()
        for path in copies:
            with Image.open(path) as image:
                image.load()
        return time.process_time() - cpu

    for path in copies:  # warm the page cache so both sides read from memory
        path.read_bytes()
    decode_wall, decode_cpu = best_of(repeats, decode_only)

    def pipeline(threads):
        def go():
            out = work / f"cache_{threads}"
            shutil.rmtree(out, ignore_errors=True)
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            build_cache(manifest, out, image_size=224, resize="pad", threads=threads, progress=False)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        return go

    wall_n, child_cpu = best_of(repeats, pipeline(cores))
    wall_1, _ = best_of(repeats, pipeline(1))
    cache = work / f"cache_{cores}"
    array = load_cache_split(cache, "train")
    for i in (0, len(copies) // 2, len(copies) - 1):  # the cache holds what load_image gives for that file
        if not np.array_equal(array[i], load_image(copies[i], 224, "pad")):
            raise BenchError(f"{cache}/train.npy row {i} differs from load_image({copies[i]})")
    n = len(copies)
    return {"files": n, "decode_only_ips": n / decode_wall, "pipeline_ips": n / wall_n, "pipeline_1proc_ips": n / wall_1,
            "decode_only_cpu_s": decode_cpu, "per_core_cpu_ratio": decode_cpu / child_cpu if child_cpu else None,
            "cores": cores, "children_cpu_s": child_cpu, "wall_s": wall_n, "busy_cores": child_cpu / wall_n,
            "cache_dir": str(cache)}


# -------------------------------------------------------------------------------------------- 2. epoch feed
def tile_cache(cache: Path, manifest, n: int, out: Path) -> Path:
    """A train split of ``n`` images: the rows of ``cache`` repeated (the feed benchmark needs more than a few
    hundred images for a stable rate; it reads a cache, so repeated content costs nothing in realism)."""
    import numpy as np

    from xraypipe.atomic import write_csv
    from xraypipe.preprocess import load_cache_split

    source = load_cache_split(cache, "train")
    out.mkdir(parents=True, exist_ok=True)
    array = np.lib.format.open_memmap(out / "train.npy", mode="w+", dtype=np.uint8, shape=(n, *source.shape[1:]))
    for start in range(0, n, len(source)):
        stop = min(n, start + len(source))
        array[start:stop] = source[:stop - start]
    array.flush()
    del array
    index = manifest.iloc[np.arange(n) % len(manifest)].reset_index(drop=True)
    index["image_id"] = [f"{i:08d}_000.png" for i in range(n)]
    index["patient_id"] = [str(i) for i in range(n)]
    index.insert(0, "cache_row", np.arange(n))
    write_csv(out / "index.csv", index)
    return out


def feed_order(n: int, batch_size: int, epoch: int):
    """The row order ``CacheBatches(shuffle=True, seed=FEED_SEED)`` uses in ``epoch``: a seeded permutation,
    sorted within each batch."""
    import numpy as np

    order = np.random.default_rng([FEED_SEED, epoch]).permutation(n)
    return [np.sort(order[s:s + batch_size]) for s in range(0, n, batch_size)]


def bench_feed(feed_dir: Path, batch_size: int, epochs: int, repeats: int, threads: int, rounds: int) -> dict:
    import numpy as np
    import torch

    from xraypipe import feed_kernel
    from xraypipe.data import CacheBatches
    from xraypipe.preprocess import load_cache_split

    # the loader's kernels use torch's intra-op threads (and numba's, as many), which xraypipe.train sets to
    # training.threads; the floor (numpy fancy indexing) is single-threaded whatever the setting
    torch.set_num_threads(1)
    images = load_cache_split(feed_dir, "train")
    n = len(images)
    orders = [feed_order(n, batch_size, e) for e in range(epochs)]

    def bare():
        count = 0
        for batches in orders:
            for rows in batches:
                count += len(images[rows])
        return count

    def read_float():
        count = 0
        for batches in orders:
            for rows in batches:
                count += len(torch.from_numpy(images[rows]).to(torch.float32))
        return count

    def loader(augment=False, reuse_buffer=True, torch_threads=threads, compiled=True, workers=0, step_s=0.0):
        # reuse_buffer=True is how xraypipe.train feeds its loops (each batch consumed before the next is drawn);
        # compiled=False: the torch-kernel path the loader falls back to without numba (XRAYPIPE_NO_NUMBA=1);
        # step_s: a training step that waits this long with the CPU free, as for a GPU (time.sleep)
        batches = CacheBatches(feed_dir, "train", NIH_FINDINGS, batch_size=batch_size, shuffle=True, seed=FEED_SEED,
                               augment=augment, reuse_buffer=reuse_buffer, workers=workers)

        def go():
            torch.set_num_threads(torch_threads)
            previous = os.environ.get("XRAYPIPE_NO_NUMBA")
            os.environ["XRAYPIPE_NO_NUMBA"] = "0" if compiled else "1"
            try:
                count = 0
                for epoch in range(epochs):
                    batches.set_epoch(epoch)
                    for x, y, m, rows in batches:
                        if x.dtype != torch.float32 or x.shape[1:] != (1, *images.shape[1:]):
                            raise BenchError(f"CacheBatches gave {x.dtype} {tuple(x.shape)}")
                        count += len(x)
                        if step_s:
                            time.sleep(step_s)
            finally:
                torch.set_num_threads(1)
                if previous is None:
                    del os.environ["XRAYPIPE_NO_NUMBA"]
                else:
                    os.environ["XRAYPIPE_NO_NUMBA"] = previous
            return count
        return go

    # the loader's rows are the floor's rows (same seeded order): check once, outside the timings (this also
    # compiles or loads the kernels)
    check = CacheBatches(feed_dir, "train", NIH_FINDINGS, batch_size=batch_size, shuffle=True, seed=FEED_SEED)
    check.set_epoch(0)
    for (_, _, _, rows), expected in zip(check, orders[0]):
        if not np.array_equal(rows, expected):
            raise BenchError("CacheBatches' row order differs from the benchmark's floor order")
    loader(torch_threads=max(2, threads))()  # the parallel kernel too

    bare()  # warm the page cache
    # Rounds: every measurement once per round, right after the floor, and each ratio is the median over the
    # rounds of (floor time / its time) in the same round. This machine's memory bandwidth drifts by tens of
    # percent within seconds, so a ratio of two figures taken at different moments would measure the drift.
    # The rates shown are the best round's.
    measured = (("read_float32", read_float), ("loader", loader()), ("loader_1_thread", loader(torch_threads=1)),
                ("loader_torch_kernels", loader(compiled=False)),
                ("loader_fresh_tensors", loader(reuse_buffer=False)), ("loader_1_worker", loader(workers=1)))
    walls = {name: [] for name in ("bare_read", *dict(measured))}
    for _ in range(rounds):
        for name, fn in measured:
            for key, f in (("bare_read", bare), (name, fn)):
                wall, count = best_of(1, f)
                if count != n * epochs:
                    raise BenchError(f"{key}: delivered {count} images, expected {n * epochs}")
                walls[key].append(wall)
    bare_walls = np.asarray(walls["bare_read"]).reshape(rounds, len(measured))
    results = {f"{name}_ips": n * epochs / min(w) for name, w in walls.items()}
    for j, (name, _) in enumerate(measured):
        results[f"{name}_ratio"] = float(np.median(bare_walls[:, j] / np.asarray(walls[name])))
    # slower, information only: best of `repeats`
    for name, fn in (("loader_augment", loader(augment=True)),
                     ("loader_step_0_workers", loader(step_s=STEP_S)), ("loader_step_1_worker",
                                                                        loader(step_s=STEP_S, workers=1))):
        wall, count = best_of(repeats, fn)
        results[f"{name}_ips"] = count / wall
    results.update(images=n, epochs=epochs, batch_size=batch_size, image_size=int(images.shape[1]),
                   torch_threads=threads, compiled_kernel=feed_kernel.available(), rounds=rounds, step_s=STEP_S)
    return results


def bench_xrv(images_dir: Path, rows, bbox_csv: Path, work: Path, items: int, repeats: int) -> dict:
    """torchxrayvision's NIH_Dataset over the same PNGs, resized to 224 per item (its documented transform)."""
    try:
        import torchvision
        import torchxrayvision as xrv
    except ImportError as exc:
        return {"skipped": f"torchxrayvision is not installed ({exc}); "
                           f"`.venv/bin/pip install -r benchmarks/requirements.txt -c requirements-lock.txt`"}
    csv = work / "Data_Entry_bench.csv"
    rows.to_csv(csv, index=False)
    transform = torchvision.transforms.Compose([xrv.datasets.XRayCenterCrop(), xrv.datasets.XRayResizer(224)])
    dataset = xrv.datasets.NIH_Dataset(imgpath=str(images_dir), csvpath=str(csv), bbox_list_path=str(bbox_csv),
                                       views=["PA", "AP"], unique_patients=False, transform=transform)
    if len(dataset) != len(rows):
        raise BenchError(f"NIH_Dataset kept {len(dataset)} of the {len(rows)} rows of {csv}")
    items = min(items, len(dataset))
    sample = dataset[0]["img"]
    if tuple(sample.shape) != (1, 224, 224):
        raise BenchError(f"NIH_Dataset item has shape {tuple(sample.shape)}, expected (1, 224, 224)")

    def go():
        for i in range(items):
            dataset[i]["img"]

    wall, _ = best_of(repeats, go)
    return {"items": items, "ips": items / wall, "version": getattr(xrv, "__version__", "?")}


# ----------------------------------------------------------------------------------------------- 3. no-op
def _run(cmd, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(cwd / "src")  # the copy's own package, not the (possibly changing) checkout's
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise BenchError(f"`{' '.join(map(str, cmd))}` in {cwd} failed ({proc.returncode}):\n"
                         f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc


def noop_config(n_variants: int) -> dict:
    """config/tiny.yaml with ``n_variants`` copies of its small_cnn variant (seeds 0..n-1). Every section but the
    variants is written out in full, as in the shipped config.yaml (DVC params must exist in the file); the
    variants are written as users write them, only the keys they set (the schema fills the rest)."""
    import yaml

    from xraypipe.config import validate_config

    cfg = yaml.safe_load((ROOT / "config" / "tiny.yaml").read_text())
    base = dict(cfg["variants"]["small_cnn"])
    cfg["variants"] = {f"cnn_seed{i:03d}": {**base, "seed": i} for i in range(n_variants)}
    cfg["experiment"]["variants"] = list(cfg["variants"])
    full = validate_config(cfg, source="bench")
    return {**full, "variants": cfg["variants"]}


def fake_outputs(repo: Path) -> int:
    """Create every output of the Snakemake DAG not already made (empty files; a file inside directory outputs),
    then mark them up to date with ``snakemake --touch`` (which touches them in DAG order). Returns the number of
    outputs."""
    proc = _run(["snakemake", "--cores", "1", "--dry-run", "--summary"], repo)
    lines = [line.split("\t") for line in proc.stdout.splitlines()]
    header = next((i for i, cols in enumerate(lines) if cols and cols[0] == "output_file"), None)
    if header is None:
        raise BenchError(f"snakemake --summary printed no table:\n{proc.stdout[-2000:]}")
    outputs = [cols[0] for cols in lines[header + 1:] if cols and cols[0]]
    from xraypipe.workflow import STAGES

    directories = [t for stage in STAGES for spec in stage.outputs.values() if spec.directory for t in spec.templates()]
    for out in outputs:
        path = repo / out
        is_dir = any(_matches(out, template) for template in directories)
        if path.is_dir():  # made for real (the config stage's params directory)
            continue
        if is_dir:
            path.mkdir(parents=True, exist_ok=True)
            (path / "placeholder").write_text("")
        elif not (path.is_file() and path.stat().st_size):  # keep outputs already made for real
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("")
    _run(["snakemake", "--cores", "1", "--touch"], repo)
    return len(outputs)


def _matches(path: str, template: str) -> bool:
    pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
    return re.fullmatch(pattern, path.rstrip("/")) is not None


def bench_noop(work: Path, n_variants: int, repeats: int) -> dict:
    import yaml

    sys.path.insert(0, str(ROOT / "tests"))
    from workflow_copy import init_git_dvc, make_workflow_copy

    cfg = noop_config(n_variants)
    repo = make_workflow_copy(work / "noop", cfg)
    init_git_dvc(repo)
    # the params file of the DVC stages is made for real (an empty file is not valid JSON); the rest is faked
    from xraypipe.workflow import PATHS

    _run(["snakemake", "--cores", "1", PATHS["config_json"]], repo)
    n_outputs = fake_outputs(repo)
    from xraypipe.workflow import CODE_STAGE

    _run(["dvc", "repro", "-s", "-q", CODE_STAGE], repo)  # written by DVC only (Snakemake tracks the files)
    _run(["dvc", "commit", "-f", "-q"], repo, timeout=1800)  # record the faked outputs and every dependency in dvc.lock
    _run(["snakemake", "--cores", "1", "--touch"], repo)  # dvc commit re-links the outputs it caches: new mtimes
    _run(["git", "add", "dvc.lock"], repo)
    _run(["git", "commit", "-qm", "all stages committed"], repo)

    def smk():
        proc = _run(["snakemake", "-n"], repo)
        if "Nothing to be done" not in proc.stdout + proc.stderr:
            raise BenchError(f"snakemake -n is not a no-op after faking the outputs:\n{proc.stdout[-3000:]}")

    def dvc():
        proc = _run(["dvc", "status"], repo)
        if "up to date" not in proc.stdout:
            raise BenchError(f"dvc status is not a no-op after dvc commit:\n{proc.stdout[-3000:]}")

    smk_wall, _ = best_of(repeats, smk)
    dvc_wall, _ = best_of(repeats, dvc)
    stages = len(yaml.safe_load((repo / "dvc.lock").read_text())["stages"])
    return {"variants": n_variants, "outputs": n_outputs, "dvc_stages": stages, "snakemake_n_s": smk_wall,
            "dvc_status_s": dvc_wall}


# ----------------------------------------------------------------------------------------------- report
def table(results: dict) -> list[dict]:
    rows = []

    def row(measurement, value, unit, ratio=None, target=None, ok=None):
        rows.append({"measurement": measurement, "value": value, "unit": unit, "ratio": ratio, "target": target,
                     "pass": ok})

    pre = results.get("preprocess")
    if pre:
        per_core = pre["pipeline_ips"] / pre["cores"] / pre["decode_only_ips"]
        row("PIL decode only, 1 process (floor)", pre["decode_only_ips"], "img/s")
        row(f"build_cache 224 px, {pre['cores']} processes", pre["pipeline_ips"], "img/s", per_core,
            ">= 0.8 per core", per_core >= 0.8)
        row("  cores busy (children CPU s / wall s)", pre["busy_cores"], "cores", pre["busy_cores"] / pre["cores"],
            ">= 0.75 of each core", pre["busy_cores"] >= 0.75 * pre["cores"])
        if pre["per_core_cpu_ratio"]:
            row("  same, CPU time: decode CPU s / workers' CPU s", pre["per_core_cpu_ratio"], "x",
                pre["per_core_cpu_ratio"], "(info: load-independent)")
        row("build_cache 224 px, 1 process (info)", pre["pipeline_1proc_ips"], "img/s",
            pre["pipeline_1proc_ips"] / pre["decode_only_ips"])
    feed = results.get("feed")
    if feed:
        bare = feed["bare_read_ips"]
        ratio = feed["loader_ratio"]
        kernel = "compiled kernel" if feed["compiled_kernel"] else "torch kernels: numba missing"
        row("bare memmap read, uint8 (floor)", bare, "img/s")
        row("memmap read + float32 conversion (info)", feed["read_float32_ips"], "img/s", feed["read_float32_ratio"])
        row(f"CacheBatches float batches, {feed['torch_threads']} threads ({kernel})", feed["loader_ips"], "img/s",
            ratio, ">= 0.5 x bare", ratio >= 0.5)
        row("CacheBatches, 1 thread (info)", feed["loader_1_thread_ips"], "img/s", feed["loader_1_thread_ratio"])
        row(f"CacheBatches, torch kernels (no numba), {feed['torch_threads']} threads (info)",
            feed["loader_torch_kernels_ips"], "img/s", feed["loader_torch_kernels_ratio"])
        row("CacheBatches, a fresh tensor per batch (info)", feed["loader_fresh_tensors_ips"], "img/s",
            feed["loader_fresh_tensors_ratio"])
        row("CacheBatches, 1 worker thread, empty loop (info)", feed["loader_1_worker_ips"], "img/s",
            feed["loader_1_worker_ratio"])
        row("CacheBatches with augmentation (info)", feed["loader_augment_ips"], "img/s",
            feed["loader_augment_ips"] / bare)
        step_ms = feed["step_s"] * 1000
        row(f"loop with a {step_ms:g} ms device step, 0 workers (info)", feed["loader_step_0_workers_ips"], "img/s")
        row(f"loop with a {step_ms:g} ms device step, 1 worker (info)", feed["loader_step_1_worker_ips"], "img/s",
            feed["loader_step_1_worker_ips"] / feed["loader_step_0_workers_ips"])
        xrv = results.get("xrv", {})
        if "ips" in xrv:
            ratio = feed["loader_ips"] / xrv["ips"]
            row(f"torchxrayvision {xrv['version']} NIH_Dataset, 224 px", xrv["ips"], "img/s")
            row("  CacheBatches / torchxrayvision", ratio, "x", ratio, ">= 1000 x", ratio >= 1000)
        elif xrv:
            row("torchxrayvision NIH_Dataset: " + xrv["skipped"], None, "")
    noop = results.get("noop")
    if noop:
        row(f"snakemake -n, {noop['variants']} variants ({noop['outputs']} outputs)", noop["snakemake_n_s"], "s",
            None, "< 5 s", noop["snakemake_n_s"] < 5)
        row(f"dvc status, {noop['variants']} variants ({noop['dvc_stages']} stages)", noop["dvc_status_s"], "s",
            None, "< 5 s", noop["dvc_status_s"] < 5)
    return rows


def print_report(results: dict) -> None:
    m = results["machine"]
    print(f"\nmachine: {m['cpu']}, {m['logical_cpus']} logical CPUs"
          + (f", {m['physical_cores']} physical cores" if "physical_cores" in m else "")
          + (f", {m['memory_gib']} GiB" if "memory_gib" in m else "")
          + (f"; load average at start {m['load_average_1min']}" if "load_average_1min" in m else ""))
    s = results["settings"]
    print(f"settings: {s['files']} PNG files (1024x1024, replicated from {s['sources']} real NIH images), "
          f"feed {s['feed_images']} images x {s['epochs']} epochs, batch {s['batch_size']}, feed ratios: median of "
          f"{s.get('feed_rounds', '?')} rounds; other figures: best of {s['repeats']}")
    header = f"{'measurement':<60} {'value':>12} {'unit':<6} {'ratio':>9}  {'target':<21} {'pass'}"
    print(header)
    print("-" * len(header))
    for r in results["table"]:
        value = "" if r["value"] is None else (f"{r['value']:.2f}" if r["unit"] in ("s", "cores") else f"{r['value']:.1f}")
        ratio = "" if r["ratio"] is None else (f"{r['ratio']:.3f}" if r["ratio"] < 10 else f"{r['ratio']:.1f}")
        ok = "" if r["pass"] is None else ("PASS" if r["pass"] else "FAIL")
        print(f"{r['measurement']:<60} {value:>12} {r['unit']:<6} {ratio:>9}  {r['target'] or '':<21} {ok}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with nih/images/*.png and "
                    "nih/Data_Entry_2017_v2020.csv.gz (default: %(default)s)")
    ap.add_argument("--files", type=int, default=384, help="replicated PNG files (default %(default)s)")
    ap.add_argument("--cores", type=int, default=os.cpu_count(), help="preprocessing processes (default: all CPUs)")
    ap.add_argument("--feed-images", type=int, default=4096, help="images in the epoch-feed cache")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--feed-threads", type=int, default=os.cpu_count(),
                    help="torch threads of the loader, as training.threads sets them (default: all CPUs)")
    ap.add_argument("--epochs", type=int, default=2, help="epochs per feed measurement")
    ap.add_argument("--feed-rounds", type=int, default=9,
                    help="rounds of the feed measurements; each ratio is the median over the rounds")
    ap.add_argument("--xrv-items", type=int, default=48, help="torchxrayvision items per measurement")
    ap.add_argument("--variants", type=int, default=50, help="variants in the no-op config")
    ap.add_argument("--repeats", type=int, default=3, help="repeats per measurement; the best is kept")
    ap.add_argument("--only", nargs="+", choices=["preprocess", "feed", "noop"], default=["preprocess", "feed", "noop"])
    ap.add_argument("--workdir", type=Path, help="keep the scratch files here (default: a temporary directory)")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    work = args.workdir or Path(tempfile.mkdtemp(prefix="xraypipe-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        files = source_images(args.data)
        results = {"machine": machine(), "settings": {
            "files": args.files, "sources": len(files), "feed_images": args.feed_images, "epochs": args.epochs,
            "batch_size": args.batch_size, "repeats": args.repeats, "cores": args.cores,
            "feed_rounds": args.feed_rounds}}
        if {"preprocess", "feed"} & set(args.only):
            copies = replicate(files, args.files, work / "images")
            rows = data_entry_rows(args.data, files, copies)
            manifest = manifest_for(rows, copies)
            print(f"preprocessing {len(copies)} files ...", flush=True)
            results["preprocess"] = pre = bench_preprocess(copies, manifest, work, args.cores, args.repeats)
            if "feed" in args.only:
                print("epoch feed ...", flush=True)
                feed_dir = tile_cache(Path(pre["cache_dir"]), manifest, args.feed_images, work / "feed")
                results["feed"] = bench_feed(feed_dir, args.batch_size, args.epochs, args.repeats, args.feed_threads,
                                             args.feed_rounds)
                print("torchxrayvision ...", flush=True)
                results["xrv"] = bench_xrv(work / "images", rows, args.data / "nih" / "BBox_List_2017.csv", work,
                                           args.xrv_items, args.repeats)
            if "preprocess" not in args.only:
                del results["preprocess"]
        if "noop" in args.only:
            print(f"no-op workflow with {args.variants} variants ...", flush=True)
            results["noop"] = bench_noop(work, args.variants, args.repeats)
        results["table"] = table(results)
        print_report(results)
        if args.json:
            from xraypipe.atomic import write_json

            write_json(args.json, results)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
