"""Single-node DistributedDataParallel (training.distributed) on CPU: 2 torchrun processes with the gloo backend on
a toy cache. Rank 0 alone writes; the run resumes from a checkpoint (its own after a SIGKILL, or a single-process
one); the data shards partition every global batch; with the switch off (or auto without GPUs) nothing changes."""

import json
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
from config_sections import validated_section
from test_train_resume import PATHOLOGIES, TRAINING, VARIANT, make_cache
from workflow_copy import ROOT, env

from xraypipe.data import CacheBatches
from xraypipe.train import distributed_world, relaunch_under_torchrun, torchrun_argv, train_variant

DDP = {"device": "cpu", "amp": True, "channels_last": True, "pin_memory": True, "cudnn_benchmark": True,
       "num_workers": 0, "distributed": {"enabled": True, "nproc_per_node": 2, "backend": "gloo"}}


def _train_script(cache, out, training=DDP, variant=VARIANT):
    cfg = {"variants": {"toy": variant}, "training": training}
    cmd = [sys.executable, str(ROOT / "scripts/train.py"), "--config-json", json.dumps(cfg), "--variant", "toy",
           "--cache-dir", str(cache), "--model", str(out / "model.pt"), "--history", str(out / "history.csv"),
           "--checkpoint", str(out / "last.pt"), "--threads", "1"]
    e = env()
    e["OMP_NUM_THREADS"] = "1"
    return subprocess.run(cmd, env=e, capture_output=True, text=True, timeout=600)


def test_cache_batches_shard_each_global_batch(tmp_path):
    cache = make_cache(tmp_path / "cache", n=(37, 8, 8))
    single = CacheBatches(cache, "train", PATHOLOGIES, batch_size=8, shuffle=True, seed=5)
    shards = [CacheBatches(cache, "train", PATHOLOGIES, batch_size=8, shuffle=True, seed=5, rank=r, world_size=3)
              for r in range(3)]
    for b in [single, *shards]:
        b.set_epoch(2)
    whole = [rows for *_, rows in single]
    parts = [[rows for *_, rows in s] for s in shards]
    # 37 = 4*8 + 5: the last batch would give one rank a single image (BatchNorm fails on it): skipped in training
    assert [len(p) for p in parts] == [len(s) for s in shards] == [4, 4, 4]
    two_ranks = [CacheBatches(cache, "train", PATHOLOGIES, batch_size=8, shuffle=True, seed=5, rank=r, world_size=2)
                 for r in range(2)]
    assert [len(list(b)) for b in two_ranks] == [5, 5]  # 5 = 3 + 2: the last batch is kept
    assert len(whole) == 5  # one process: a last batch of 5 is kept
    for i, rows in enumerate(whole[:4]):
        joined = np.sort(np.concatenate([p[i] for p in parts]))
        np.testing.assert_array_equal(joined, rows)  # the shares partition the single-process batch
        assert all(len(set(p[i]) & set(q[i])) == 0 for p in parts for q in parts if p is not q)
    tiny_last = [CacheBatches(cache, "train", PATHOLOGIES, batch_size=18, rank=r, world_size=2) for r in range(2)]
    assert len(tiny_last[0]) == 2 and len(list(tiny_last[1])) == 2  # 37 = 2*18 + 1: the 1-row batch is skipped
    with pytest.raises(ValueError):
        CacheBatches(cache, "train", PATHOLOGIES, batch_size=8, rank=2, world_size=2)


def test_switch_off_or_auto_without_gpu_is_single_process(monkeypatch):
    assert distributed_world(validated_section("training")) == 1
    assert distributed_world({"distributed": {"enabled": False, "nproc_per_node": 4}}) == 1
    assert distributed_world({"distributed": {"enabled": True, "nproc_per_node": 3}}) == 3
    if not torch.cuda.is_available():
        assert distributed_world({"distributed": {"enabled": True, "nproc_per_node": "auto"}}) == 1
    monkeypatch.setattr("os.execv", lambda *a: pytest.fail("must not relaunch"))
    relaunch_under_torchrun({"distributed": {"enabled": False}}, "x.py", [])
    argv = torchrun_argv(2, "scripts/train.py", ["--a", "b"])
    assert argv[:3] == [sys.executable, "-m", "torch.distributed.run"] and "--nproc-per-node=2" in argv


def test_ddp_two_gloo_processes_train_and_only_rank0_writes(tmp_path):
    cache = make_cache(tmp_path / "cache", n=(160, 60, 20))
    out = tmp_path / "ddp"
    proc = _train_script(cache, out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = proc.stdout + proc.stderr
    assert "launching 2 processes" in text and "torch.distributed.run" in text
    assert text.count("epoch 1: train_loss") == 1  # one process reports (rank 0)
    history = pd.read_csv(out / "history.csv")
    assert history["epoch"].tolist() == [1, 2, 3, 4]
    assert history["val_mean_auroc"].max() > 0.8  # it learns the toy signal with gradients averaged over 2 shards
    saved = torch.load(out / "model.pt", weights_only=False)
    assert not any(k.startswith("module.") for k in saved["state_dict"])  # the plain model, loadable anywhere
    assert sorted(p.name for p in out.iterdir()) == ["history.csv", "model.pt"]  # no checkpoint, no temp files


KILL_RANK0_AFTER_EPOCH_2 = textwrap.dedent("""
    import json, os, signal, sys
    sys.path.insert(0, {src!r})
    from xraypipe.train import train_variant
    def hook(epoch, row):   # called on rank 0 only, after its checkpoint is saved
        if epoch == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    train_variant(cache_dir={cache!r}, pathologies={paths!r}, variant=json.loads({variant!r}),
                  training=json.loads({training!r}), model_out={out!r} + "/model.pt",
                  history_out={out!r} + "/history.csv", checkpoint_path={out!r} + "/last.pt", threads=1,
                  progress=False, on_epoch_end=hook)
""")


def test_ddp_killed_run_resumes_from_its_checkpoint(tmp_path):
    cache = make_cache(tmp_path / "cache")
    out = tmp_path / "killed"
    script = tmp_path / "kill_rank0.py"
    script.write_text(KILL_RANK0_AFTER_EPOCH_2.format(
        src=str(ROOT / "src"), cache=str(cache), paths=PATHOLOGIES, variant=json.dumps(VARIANT),
        training=json.dumps(DDP), out=str(out)))
    e = env()
    e["OMP_NUM_THREADS"] = "1"
    killed = subprocess.run(torchrun_argv(2, str(script), []), env=e, capture_output=True, text=True, timeout=600)
    assert killed.returncode != 0, killed.stderr[-3000:]
    assert "Signals.SIGKILL" in killed.stderr or str(-signal.SIGKILL) in killed.stderr or "SIGKILL" in killed.stderr
    assert torch.load(out / "last.pt", weights_only=False)["epoch"] == 2
    assert not (out / "model.pt").exists()

    proc = _train_script(cache, out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "after epoch 2" in proc.stdout and "epoch 1: train_loss" not in proc.stdout
    assert pd.read_csv(out / "history.csv")["epoch"].tolist() == [1, 2, 3, 4]
    assert not (out / "last.pt").exists()


def test_single_process_checkpoint_resumes_under_ddp(tmp_path):
    cache = make_cache(tmp_path / "cache")
    out = tmp_path / "run"

    def stop_after_two(epoch, row):
        if epoch == 2:
            raise KeyboardInterrupt  # an interruption after the epoch-2 checkpoint

    with pytest.raises(KeyboardInterrupt):
        train_variant(cache_dir=cache, pathologies=PATHOLOGIES, variant=VARIANT, training=TRAINING,
                      model_out=out / "model.pt", history_out=out / "history.csv", checkpoint_path=out / "last.pt",
                      threads=1, progress=False, on_epoch_end=stop_after_two)
    first_two = torch.load(out / "last.pt", weights_only=False)["history"]
    proc = _train_script(cache, out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "resuming from" in proc.stdout and "after epoch 2" in proc.stdout
    history = pd.read_csv(out / "history.csv")
    assert history["epoch"].tolist() == [1, 2, 3, 4]
    np.testing.assert_allclose(history["val_mean_auroc"][:2], [r["val_mean_auroc"] for r in first_two])
