"""Speed benchmarks: preprocessing, epoch feed, no-op overhead, training step, core scaling and data growth,
measured side by side in one run.

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
4. Training step: the pipeline's ``train_one_epoch`` against a bare loop (same model, batch, threads, tensors in
   memory, no augmentation) for config.yaml's ResNet-18 and small CNN (target >= 0.9x, median of ``--step-rounds``).
5. Core scaling: the main job of a one-variant experiment from scratch at ``--cores 1`` and ``--cores 2``
   (threads: auto; target >= 1.8x).
6. Data growth: ``make_splits``, ``build_cache`` and ``snakemake -n`` at ``--scale-sizes`` images, for the NIH
   synthetic twin and for the real NIH metadata (its first rows, and all 112,120), each in a fresh process:
   seconds, microseconds per image and peak memory per size.

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

    def loader(augment=False, reuse_buffer=True, torch_threads=threads, compiled=True, workers=0, step_s=0.0,
               augment_device=None):
        # reuse_buffer=True is how xraypipe.train feeds its loops (each batch consumed before the next is drawn);
        # compiled=False: the torch-kernel path the loader falls back to without numba (XRAYPIPE_NO_NUMBA=1);
        # step_s: a training step that waits this long with the CPU free, as for a GPU (time.sleep)
        batches = CacheBatches(feed_dir, "train", NIH_FINDINGS, batch_size=batch_size, shuffle=True, seed=FEED_SEED,
                               augment=augment, reuse_buffer=reuse_buffer, workers=workers,
                               augment_device=augment_device)

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
                        if x.device.type == "cuda":
                            torch.cuda.synchronize()  # the batch is ready, as the step would need it
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
    # the device path: uint8 to the device, augmented there (the training loop's path on CUDA; on a machine
    # without CUDA the same code on the CPU, to compare with the host path)
    augment_device = "cuda" if torch.cuda.is_available() else "cpu"
    for name, fn in (("loader_augment", loader(augment=True)),
                     ("loader_augment_device", loader(augment=True, augment_device=augment_device)),
                     ("loader_step_0_workers", loader(step_s=STEP_S)), ("loader_step_1_worker",
                                                                        loader(step_s=STEP_S, workers=1))):
        wall, count = best_of(repeats, fn)
        results[f"{name}_ips"] = count / wall
    results.update(images=n, epochs=epochs, batch_size=batch_size, image_size=int(images.shape[1]),
                   torch_threads=threads, compiled_kernel=feed_kernel.available(), rounds=rounds, step_s=STEP_S,
                   augment_device=augment_device)
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


# ----------------------------------------------------------------------------------------------- 4. training step
def toy_cache(out: Path, n_train: int, n_val: int, size: int, seed: int = 0) -> Path:
    """A cache (train/val uint8 arrays + index.csv) of random images with random NIH labels."""
    import numpy as np
    import pandas as pd

    from xraypipe.atomic import write_csv

    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    frames = []
    for split, n in (("train", n_train), ("val", n_val)):
        np.save(out / f"{split}.npy", rng.integers(0, 256, (n, size, size), dtype=np.uint8))
        frame = pd.DataFrame({"cache_row": np.arange(n), "image_id": [f"{split}{i}" for i in range(n)],
                              "patient_id": [f"{split}{i}" for i in range(n)], "split": split})
        for finding in NIH_FINDINGS:
            frame[finding] = rng.integers(0, 2, n).astype(float)
        frames.append(frame)
    write_csv(out / "index.csv", pd.concat(frames, ignore_index=True))
    return out


def bench_step(work: Path, threads: int, rounds: int, image_size: int, batches: int) -> dict:
    """The pipeline's training loop (xraypipe.train.train_one_epoch: the cache feed, the configured loss, the
    optimizer step) against a bare loop over the same model, batch size and threads, the batches already in
    memory as float tensors, no augmentation: the default ResNet-18 and small CNN variants of config.yaml."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    import yaml

    from xraypipe.config import validate_config
    from xraypipe.train import _Distributed, _set_up_run, train_one_epoch

    cfg = validate_config(yaml.safe_load((ROOT / "config.yaml").read_text()), source="config.yaml")
    training = {**cfg["training"], "device": "cpu"}
    torch.set_num_threads(threads)
    results = {"threads": threads, "image_size": image_size, "batches": batches}
    for name in ("resnet18", "small_cnn"):
        variant = {**cfg["variants"][name], "augment": False}
        cache = toy_cache(work / f"step_{name}", variant["batch_size"] * batches, 64, image_size)

        def set_up():
            return _set_up_run(_Distributed(training), cache_dir=cache, pathologies=NIH_FINDINGS, variant=variant,
                               training=training, train_targets=None, train_rows=None, val_rows=None)

        pipeline_run, bare_run = set_up(), set_up()
        bare_run.train_batches.set_epoch(1)
        in_memory = [(x.clone(), y.clone(), m.clone()) for x, y, m, _ in bare_run.train_batches]
        model, optimizer = bare_run.model, bare_run.optimizer
        model.train()

        def pipeline(epoch=[0]):
            epoch[0] += 1
            train_one_epoch(pipeline_run, epoch[0], 0, False)

        def bare():
            for x, y, m in in_memory:
                optimizer.zero_grad(set_to_none=True)
                loss = F.binary_cross_entropy_with_logits(model(x), y, weight=m)
                loss.backward()
                optimizer.step()
            float(loss.detach())

        pipeline()  # warm-up: first-call allocations, kernel selection
        bare()
        ratios, walls = [], {"pipeline": [], "bare": []}
        for _ in range(rounds):  # back to back in each round (the machine's speed drifts)
            for key, fn in (("bare", bare), ("pipeline", pipeline)):
                start = time.perf_counter()
                fn()
                walls[key].append(time.perf_counter() - start)
            ratios.append(walls["bare"][-1] / walls["pipeline"][-1])
        images = variant["batch_size"] * batches
        results[name] = {"batch_size": variant["batch_size"], "pipeline_ips": images / min(walls["pipeline"]),
                         "bare_ips": images / min(walls["bare"]), "ratio": float(np.median(ratios))}
    return results


# ----------------------------------------------------------------------------------------------- 5. core scaling
def _cpu_task(_):
    """A fixed CPU-bound task (pure Python arithmetic, then float32 numpy work on a 256 x 256 array)."""
    import numpy as np

    total = 0
    for i in range(4_000_000):
        total += i * i
    a = np.random.default_rng(0).random((256, 256)).astype(np.float32)
    for _ in range(1000):
        a = np.sqrt(a * a + 1.0) - 0.5
    return total + float(a.sum())


def parallel_ceiling(processes: int = 2, tasks: int = 8, repeats: int = 3) -> dict:
    """The machine's own limit for the core-scaling figure: ``tasks`` independent CPU-bound tasks in one process vs
    in a pool of ``processes`` (forked; each BLAS/OpenMP pool limited to one thread). Nothing is shared, so the
    ratio is what two cores give perfectly parallel work here (virtual CPUs that share a physical core or memory
    bandwidth give less than 2)."""
    import multiprocessing as mp

    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        one = min(_timed(lambda: [_cpu_task(i) for i in range(tasks)]) for _ in range(repeats))
        with mp.get_context("fork").Pool(processes) as pool:
            pool.map(_cpu_task, range(processes))  # warm the workers
            many = min(_timed(lambda: pool.map(_cpu_task, range(tasks), chunksize=1)) for _ in range(repeats))
    return {"processes": processes, "one_s": one, "pool_s": many, "speedup": one / many}


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def step_thread_scaling(model_name: str, num_classes: int, image_size: int, batch_size: int, steps: int = 20,
                        repeats: int = 3) -> dict:
    """The training step's own 1 -> 2 thread speed-up: the most the train stage (and so the main job, which is
    mostly training) can gain from a second core, whatever the pipeline around it does."""
    ips = {}
    for threads in (1, 2):
        runs = []
        for _ in range(repeats):  # each in a fresh interpreter, so the thread count is torch's first
            out = _run([sys.executable, str(ROOT / "benchmarks" / "bare_step.py"), "--model", model_name,
                        "--num-classes", str(num_classes), "--image-size", str(image_size), "--batch-size",
                        str(batch_size), "--threads", str(threads), "--steps", str(steps)], ROOT)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1])["ips"])
        ips[threads] = max(runs)
    return {"model": model_name, "image_size": image_size, "batch_size": batch_size, "ips_1": ips[1],
            "ips_2": ips[2], "speedup": ips[2] / ips[1]}


def _stage_seconds(repo: Path, stage: str) -> float:
    """Wall seconds of a stage's jobs, from the benchmark files Snakemake wrote (results/benchmarks/<stage>/)."""
    import pandas as pd

    files = sorted((repo / "results" / "benchmarks" / stage).rglob("*.tsv"))
    return float(sum(pd.read_csv(f, sep="\t")["s"].iloc[0] for f in files))


def bench_cores(work: Path, variant: str) -> dict:
    """The main job (results/tables/auroc.csv on config.yaml) of a one-variant experiment, from scratch, at
    ``--cores 1`` and at ``--cores 2`` (threads: auto, so each job gets what Snakemake grants); beside it the two
    limits it is measured against: perfectly parallel work (``parallel_ceiling``) and the training step's own
    thread scaling, and the bound they give the job (Amdahl: its train stage at the step's speed-up, the rest
    at the parallel ceiling)."""
    import yaml

    sys.path.insert(0, str(ROOT / "tests"))
    from workflow_copy import make_workflow_copy

    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["experiment"]["variants"] = [variant]
    cfg["training"]["threads"] = "auto"
    cfg["preprocess_threads"] = "auto"
    walls, train = {}, {}
    for cores in (1, 2):
        repo = make_workflow_copy(work / f"cores_{cores}", cfg)
        start = time.perf_counter()
        _run(["snakemake", "--cores", str(cores), "results/tables/auroc.csv"], repo, timeout=3600)
        walls[cores] = time.perf_counter() - start
        train[cores] = _stage_seconds(repo, "train")
    ceiling = parallel_ceiling(2)
    spec = cfg["variants"][variant]
    datasets = cfg["experiment"]["datasets"]
    dataset = cfg["datasets"][datasets[0]]
    step = step_thread_scaling(spec["model"], len(dataset["pathologies"]), dataset["preprocess"]["image_size"],
                               spec["batch_size"])
    rest = walls[1] - train[1]
    bound = walls[1] / (train[1] / step["speedup"] + rest / ceiling["speedup"])
    return {"variant": variant, "cores_1_s": walls[1], "cores_2_s": walls[2], "speedup": walls[1] / walls[2],
            "train_1_s": train[1], "train_2_s": train[2], "train_speedup": train[1] / train[2],
            "ceiling": ceiling, "step": step, "bound": bound}


# ----------------------------------------------------------------------------------------------- 6. data growth
TWIN_IMAGES_PER_PATIENT = 2.18  # the NIH twin's mean follow-ups per patient (follow_ups [1, 5])


def _peak_mb(who) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux: KiB


def _own_peak_mb() -> float:
    """This process's peak RSS (VmHWM). Not getrusage: on Linux a fork + exec'd child's ru_maxrss starts from its
    parent's (the benchmark's own, over 1 GB after the training measurements)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return _peak_mb(resource.RUSAGE_SELF)


def measure_stage(request: dict) -> dict:
    """Run in a fresh interpreter (``speed.py --measure-stage JSON``): one data stage's own call, timed from after
    the imports, with the process's peak RSS before (``baseline_mb``: interpreter and libraries) and after it, and
    the largest child's (the cache's decoding processes, or the snakemake process). A decoding process's figure
    includes the pages of the output memory map it wrote (file-backed page cache, at most the cache's size)."""
    stage = request["stage"]
    if stage == "snakemake_n":
        start = time.perf_counter()
        proc = subprocess.run(["snakemake", "-n", request["target"]], cwd=request["repo"], capture_output=True,
                              text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise BenchError(f"snakemake -n failed in {request['repo']}:\n{proc.stderr[-3000:]}")
        return {"seconds": wall, "baseline_mb": 0.0, "peak_mb": _peak_mb(resource.RUSAGE_CHILDREN),
                "child_peak_mb": _peak_mb(resource.RUSAGE_CHILDREN)}
    from xraypipe import stages

    baseline = _own_peak_mb()
    start = time.perf_counter()
    if stage == "make_splits":
        rows = len(stages.make_splits(request["dataset"], request["raw"], request["manifest"], request["summary"]))
    elif stage == "build_cache":
        rows = len(stages.build_cache(request["dataset"], request["manifest"], request["out_dir"],
                                      threads=request["threads"]))
    else:
        raise BenchError(f"unknown stage {stage!r}")
    return {"seconds": time.perf_counter() - start, "rows": rows, "baseline_mb": baseline,
            "peak_mb": _own_peak_mb(), "child_peak_mb": _peak_mb(resource.RUSAGE_CHILDREN)}


def _measured(request: dict, cwd: Path) -> dict:
    proc = _run([sys.executable, str(Path(__file__).resolve()), "--measure-stage", json.dumps(request)], cwd,
                timeout=3600)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def twin_raw(out: Path, n_images: int, image_size: int) -> Path:
    """The NIH synthetic twin with about ``n_images`` images of ``image_size`` px (the real release layout)."""
    from xraypipe.synthetic.nih import generate_nih_synthetic

    n_patients = max(1, round(n_images / TWIN_IMAGES_PER_PATIENT))
    generate_nih_synthetic(out, {"n_patients": n_patients, "image_size": image_size, "seed": 0})
    return out


def real_metadata_raw(data: Path, out: Path, n_rows: int, pool: list[Path]) -> Path:
    """A copy of the real NIH release layout with the first ``n_rows`` rows of the real Data_Entry (112,120 rows:
    all of it), the official train_val list restricted to them, and images/ holding, under each row's real file
    name, a hard link to one of the 1,000 real 64 px images (``pool``, cycled: the pixels do not change the cost)."""
    import gzip

    with gzip.open(data / "nih" / "Data_Entry_2017_v2020.csv.gz", "rt") as f:
        lines = f.read().splitlines()
    header, rows = lines[0], lines[1:1 + n_rows]
    names = [row.split(",", 1)[0] for row in rows]
    with gzip.open(data / "nih" / "train_val_list.txt.gz", "rt") as f:
        train_val = set(f.read().split())
    out.mkdir(parents=True)
    (out / "Data_Entry_2017_v2020.csv").write_text("\n".join([header, *rows]) + "\n")
    (out / "train_val_list.txt").write_text("".join(f"{n}\n" for n in names if n in train_val))
    images = out / "images"
    images.mkdir()
    for i, name in enumerate(names):
        os.link(pool[i % len(pool)], images / name)
    return out


def bench_scale(data: Path, work: Path, sizes: list[int], image_size: int, threads: int) -> dict:
    """Manifest + splits (``make_splits``), cache (``build_cache``) and ``snakemake -n`` of the main job at each
    size, for the NIH synthetic twin at ``image_size`` px and for the real NIH metadata (its first rows, and all
    112,120), each stage in a fresh process: seconds, microseconds per image and peak memory per size."""
    import yaml

    sys.path.insert(0, str(ROOT / "tests"))
    from workflow_copy import make_workflow_copy

    from xraypipe.config import validate_config

    real_entry = data / "nih" / "Data_Entry_2017_v2020.csv.gz"
    pool_src = sorted((data / "nih" / "images_64px").glob("*.png"))
    if not real_entry.is_file() or not pool_src:
        raise BenchError(f"{data / 'nih'}: the real Data_Entry_2017_v2020.csv.gz and images_64px/ are needed")
    pool_dir = work / "scale_pool"
    pool_dir.mkdir(parents=True, exist_ok=True)
    pool = [Path(shutil.copy2(p, pool_dir / p.name)) for p in pool_src]  # same file system as the links
    base = yaml.safe_load((ROOT / "config.yaml").read_text())
    base["experiment"]["variants"] = ["small_cnn"]
    results = {"image_size": image_size, "threads": threads, "rows": []}
    real_sizes = sorted({min(n, 112_120) for n in sizes} | ({112_120} if max(sizes) >= 100_000 else set()))
    for source, size_list in (("twin", sizes), ("real metadata", real_sizes)):
        for n in size_list:
            case = work / f"scale_{source.split()[0]}_{n}"
            start = time.perf_counter()
            raw = (twin_raw(case / "raw", n, max(32, image_size)) if source == "twin"
                   else real_metadata_raw(data, case / "raw", n, pool))
            made = time.perf_counter() - start
            dataset = {"reader": "nih", "source": "local", "root": str(raw), "missing_images": "error",
                       "preprocess": {"image_size": image_size, "resize": "pad"}}
            cfg = yaml.safe_load(yaml.safe_dump(base))
            cfg["datasets"] = {**cfg["datasets"], "nih_scale": dataset}
            cfg["experiment"]["datasets"] = ["nih_scale"]
            filled = validate_config(cfg, source="bench")["datasets"]["nih_scale"]
            manifest = case / "manifest.csv"
            splits = _measured({"stage": "make_splits", "dataset": filled, "raw": str(raw), "manifest": str(manifest),
                                "summary": str(case / "split_summary.csv")}, ROOT)
            cache = _measured({"stage": "build_cache", "dataset": filled, "manifest": str(manifest),
                               "out_dir": str(case / "cache"), "threads": threads}, ROOT)
            repo = make_workflow_copy(case / "workflow", cfg)
            dry = _measured({"stage": "snakemake_n", "repo": str(repo), "target": "results/tables/auroc.csv"}, repo)
            images = splits["rows"]
            results["rows"].append({"source": source, "images": images, "raw_s": made, "make_splits": splits,
                                    "build_cache": cache, "snakemake_n": dry})
            print(f"  {source} {images:>7} images: splits {splits['seconds']:.2f} s, cache {cache['seconds']:.2f} s, "
                  f"snakemake -n {dry['seconds']:.2f} s", flush=True)
            shutil.rmtree(case, ignore_errors=True)
    shutil.rmtree(pool_dir, ignore_errors=True)
    return results


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
        row("CacheBatches with augmentation, host path (info)", feed["loader_augment_ips"], "img/s",
            feed["loader_augment_ips"] / bare)
        row(f"CacheBatches with augmentation, device path on {feed['augment_device']} (info)",
            feed["loader_augment_device_ips"], "img/s", feed["loader_augment_device_ips"] / feed["loader_augment_ips"])
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
    step = results.get("step")
    if step:
        for name in ("resnet18", "small_cnn"):
            r = step[name]
            row(f"bare training loop, {name}, {step['image_size']} px, batch {r['batch_size']}, {step['threads']} "
                "threads", r["bare_ips"], "img/s")
            row(f"  pipeline training loop (train_one_epoch), {name}", r["pipeline_ips"], "img/s", r["ratio"],
                ">= 0.9 x bare", r["ratio"] >= 0.9)
    cores = results.get("cores")
    if cores:
        row(f"main job, one variant ({cores['variant']}), --cores 1", cores["cores_1_s"], "s")
        row("  same, --cores 2", cores["cores_2_s"], "s", cores["speedup"], ">= 1.8 x faster", cores["speedup"] >= 1.8)
        if "ceiling" in cores:
            c = cores["ceiling"]
            row("  perfectly parallel CPU work, 1 -> 2 processes (this machine's ceiling)", c["pool_s"], "s",
                c["speedup"], "(info)")
            row("  main job's speed-up / the ceiling", cores["speedup"] / c["speedup"], "x", None, "(info)")
        if "step" in cores:
            st = cores["step"]
            row("  train stage alone, --cores 1 -> 2", cores["train_2_s"], "s", cores["train_speedup"], "(info)")
            row(f"  bare {st['model']} step, {st['image_size']} px, batch {st['batch_size']}, 1 -> 2 threads",
                st["ips_2"], "img/s", st["speedup"], "(info: the step's limit)")
            row("  the job's bound: train at the step's, the rest at the ceiling", cores["bound"], "x",
                cores["speedup"] / cores["bound"], "(info: job / bound)")
    scale = results.get("scale")
    if scale:
        for source in dict.fromkeys(r["source"] for r in scale["rows"]):
            rows_ = [r for r in scale["rows"] if r["source"] == source]
            small, large = rows_[0], rows_[-1]
            for stage in ("make_splits", "build_cache"):
                cost = [r[stage]["seconds"] / r["images"] * 1e6 for r in (small, large)]
                row(f"{stage}, {source}, {large['images']:,} vs {small['images']:,} images: us/image",
                    cost[1], "us/img", cost[1] / cost[0], "(info: flat = 1)")
                growth = large[stage]["peak_mb"] - large[stage]["baseline_mb"]
                row(f"  peak memory above the interpreter's at {large['images']:,} images, per image",
                    growth * 1024 / large["images"], "KiB", None, f"(info: {growth:.0f} MiB in all)")
            row(f"snakemake -n, {source}, {large['images']:,} vs {small['images']:,} images",
                large["snakemake_n"]["seconds"], "s",
                large["snakemake_n"]["seconds"] / small["snakemake_n"]["seconds"], "(info: flat = 1)")
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
        value = "" if r["value"] is None else (f"{r['value']:.2f}" if r["unit"] in ("s", "cores", "KiB", "x") else f"{r['value']:.1f}")
        ratio = "" if r["ratio"] is None else (f"{r['ratio']:.3f}" if r["ratio"] < 10 else f"{r['ratio']:.1f}")
        ok = "" if r["pass"] is None else ("PASS" if r["pass"] else "FAIL")
        print(f"{r['measurement']:<60} {value:>12} {r['unit']:<6} {ratio:>9}  {r['target'] or '':<21} {ok}")
    scale = results.get("scale")
    if scale:
        print(f"\ncost as the data grows (cache at {scale['image_size']} px, {scale['threads']} decoding processes; "
              "peak: the stage process's peak RSS in MiB, interpreter and libraries included; worker: the largest "
              "decoding process's, with the output pages it wrote; splits and cache timed after the imports)")
        head = (f"{'source':<14} {'images':>8} | {'splits s':>8} {'us/img':>7} {'peak':>6} | {'cache s':>8} "
                f"{'us/img':>7} {'peak':>6} {'worker':>6} | {'smk -n s':>8} {'peak':>6}")
        print(head)
        print("-" * len(head))
        for r in scale["rows"]:
            sp, ca, dr, n = r["make_splits"], r["build_cache"], r["snakemake_n"], r["images"]
            print(f"{r['source']:<14} {n:>8,} | {sp['seconds']:>8.2f} {sp['seconds'] / n * 1e6:>7.1f} "
                  f"{sp['peak_mb']:>6.0f} | {ca['seconds']:>8.2f} {ca['seconds'] / n * 1e6:>7.1f} "
                  f"{ca['peak_mb']:>6.0f} {ca['child_peak_mb']:>6.0f} | {dr['seconds']:>8.2f} {dr['peak_mb']:>6.0f}")


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
    ap.add_argument("--step-batches", type=int, default=12, help="batches per training-loop measurement")
    ap.add_argument("--step-rounds", type=int, default=3, help="rounds of the training-loop measurement (median ratio)")
    ap.add_argument("--step-size", type=int, default=96, help="image size of the training-loop measurement "
                    "(config.yaml's nih_synthetic cache)")
    ap.add_argument("--scale-sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000],
                    help="dataset sizes of the data-growth measurement (from 100,000 on, the real metadata adds all 112,120 rows)")
    ap.add_argument("--scale-image-size", type=int, default=32, help="cache image size of the data-growth "
                    "measurement (the twin is generated at this size, at least 32 px)")
    parts = ["preprocess", "feed", "step", "cores", "noop", "scale"]
    ap.add_argument("--only", nargs="+", choices=parts, default=parts)
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
        if "step" in args.only:
            print("training step ...", flush=True)
            results["step"] = bench_step(work, args.feed_threads, args.step_rounds, args.step_size, args.step_batches)
        if "cores" in args.only:
            print("core scaling (two runs of the main job) ...", flush=True)
            results["cores"] = bench_cores(work, "resnet18")
        if "scale" in args.only:
            print("cost as the data grows ...", flush=True)
            results["scale"] = bench_scale(args.data, work, args.scale_sizes, args.scale_image_size, args.cores)
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
    if sys.argv[1:2] == ["--measure-stage"]:  # one stage of bench_scale, in a fresh interpreter
        print(json.dumps(measure_stage(json.loads(sys.argv[2]))))
        sys.exit(0)
    sys.exit(main())
