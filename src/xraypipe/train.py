"""Train one variant on one dataset's cache: seeded, resumable, device-agnostic.

- best weights chosen by validation mean AUROC (the test split is never looked at here);
- a checkpoint after every epoch (atomic), so a killed job rerun resumes at the next epoch; the
  checkpoint carries a fingerprint of everything that defines the run and is ignored if it differs;
- per-epoch history CSV; progress on stderr (tqdm on a terminal, timed lines in the rule's log);
- CUDA with mixed precision (bf16 where supported, else fp16 + GradScaler), channels_last, pinned memory with
  non-blocking copies and cudnn.benchmark when a GPU is present (each a ``training`` switch), plain fp32 on CPU;
- optional single-node DistributedDataParallel (``training.distributed``): ``scripts/train.py`` relaunches
  itself under torchrun (``torch.distributed.run``) with one process per GPU (NCCL), or per CPU process with
  gloo (how the tests exercise it). Every process draws the same global batch and trains on its share; rank 0
  alone validates, selects, checkpoints and writes; all processes resume from the same checkpoint.

The loop is cut like torchvision's reference ``train.py``: ``_set_up_run`` (data, model, optimizer, schedule),
``_resume``, ``train_one_epoch``, ``evaluate`` + ``_record_epoch`` (model selection), ``_save_checkpoint`` and
``_write_trained_model``; ``_train`` strings them together. ``variant`` and ``training`` are sections of the config
validated by ``xraypipe.config.validate_config``, which fills in the schema's defaults. Loading and applying a
trained model (also for validation here) is ``xraypipe.inference``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from xraypipe.atomic import write_csv
from xraypipe.data import CacheBatches
from xraypipe.encodings import ENCODINGS
from xraypipe.inference import (load_trained_model, model_from_saved, positive_score_model, predict_batches,
                                select_device)
from xraypipe.losses import build_loss
from xraypipe.metrics import auroc
from xraypipe.model_files import CorruptModelFileError, load_torch_file, move_aside, save_torch_file
from xraypipe.models import apply_init, build_model
from xraypipe.provenance import code_version, config_hash, transform_description
from xraypipe.standardize import PIXEL_STATS_NAME, Normalization

log = logging.getLogger("xraypipe.train")

FORMAT_VERSION = 1


# ------------------------------------------------------------------------------------ distributed (torchrun)
def distributed_world(training: dict) -> int:
    """Number of processes ``training.distributed`` asks for (1 = plain single-process training).

    ``nproc_per_node: auto`` = every visible GPU (Slurm's --gpus sets which), 1 without CUDA.
    """
    distributed = training["distributed"]
    if not distributed["enabled"]:
        return 1
    nproc = distributed["nproc_per_node"]
    if nproc == "auto":
        import torch

        nproc = torch.cuda.device_count() if torch.cuda.is_available() else 1
    return max(1, int(nproc))


def inside_torchrun() -> bool:
    return all(k in os.environ for k in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR"))


def torchrun_argv(nproc: int, script: str, args: list[str]) -> list[str]:
    """``torchrun --standalone --nnodes=1 --nproc-per-node=N script args`` with this interpreter."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
            f"--nproc-per-node={nproc}", script, *args]


def relaunch_under_torchrun(training: dict, script: str, args: list[str]) -> None:
    """Replace this process by torchrun when DDP with more than one process is configured (no-op otherwise)."""
    nproc = distributed_world(training)
    if nproc > 1 and not inside_torchrun():
        argv = torchrun_argv(nproc, script, args)
        print(f"training.distributed: launching {nproc} processes: {' '.join(argv[1:])}", flush=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(argv[0], argv)  # same PID: Slurm's signals reach torchrun, which forwards them


class _Distributed:
    """The process group of a torchrun launch (rank 0 of 1 without one)."""

    def __init__(self, training: dict):
        self.rank, self.local_rank, self.world_size = 0, 0, 1
        self.backend = None
        if inside_torchrun() and int(os.environ["WORLD_SIZE"]) > 1:
            import torch
            import torch.distributed as dist

            self.rank, self.world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
            self.local_rank = int(os.environ["LOCAL_RANK"])
            backend = training["distributed"]["backend"]
            use_cuda = select_device(training["device"]).type == "cuda"
            self.backend = ("nccl" if use_cuda else "gloo") if backend == "auto" else backend
            if use_cuda:
                torch.cuda.set_device(self.local_rank)
            if not dist.is_initialized():
                dist.init_process_group(backend=self.backend)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def sum(self, *values: float) -> list[float]:
        """Sum scalars over all processes (identity when not distributed)."""
        if not self.enabled:
            return list(values)
        import torch
        import torch.distributed as dist

        device = torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()

    def close(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def amp_dtype(device):
    """bf16 where the GPU supports it (no loss scaling needed), else fp16; None disables autocast."""
    import torch

    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


# ------------------------------------------------------------------------------------ run identity
def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run_fingerprint(variant: dict, pathologies, cache_dir: str | Path, image_size: int, selection=None) -> str:
    """What defines a run; ``selection``: the training/validation row selections (cross-validation folds), so a
    checkpoint of one fold can never be resumed by another."""
    payload = {"format": FORMAT_VERSION, "variant": variant, "pathologies": list(pathologies),
               "index": file_digest(Path(cache_dir) / "index.csv"), "image_size": image_size}
    if selection is not None:
        payload["selection"] = selection
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def mean_auroc(y: np.ndarray, mask: np.ndarray, p: np.ndarray) -> float:
    values = [auroc(np.where(mask[:, j] > 0, y[:, j], np.nan), p[:, j]) for j in range(y.shape[1])]
    values = [v for v in values if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


# ------------------------------------------------------------------------------------ entry point
def train_stage(variant: dict, training: dict, cache_dir, model_out, history_out, checkpoint, threads: int = 1, *,
                dataset: str | None = None, variant_name: str | None = None, stage_config: dict | None = None):
    """The train stage: :func:`train_variant` on every label of the cache. ``dataset``/``variant_name``/
    ``stage_config`` (the config keys the stage received): what the model file records about itself
    (:func:`model_identity`)."""
    from xraypipe.datasets.contract import manifest_pathologies
    from xraypipe.preprocess import load_cache_index

    pathologies = manifest_pathologies(load_cache_index(cache_dir))
    return train_variant(cache_dir=cache_dir, pathologies=pathologies, variant=variant, training=training,
                         model_out=model_out, history_out=history_out, checkpoint_path=checkpoint, threads=threads,
                         identity=model_identity(dataset, variant_name, stage_config))


def model_identity(dataset: str | None = None, variant_name: str | None = None,
                   stage_config: dict | None = None) -> dict:
    """Who a model is, for its file's metadata: the dataset and variant names, the sha256 of the config keys its
    stage received (``xraypipe.provenance.config_hash``) and the dataset's resize mode (None where unknown)."""
    preprocess = (((stage_config or {}).get("datasets") or {}).get(dataset) or {}).get("preprocess") or {}
    return {"dataset": dataset, "variant_name": variant_name,
            "config_hash": config_hash(stage_config) if stage_config is not None else None,
            "resize": preprocess.get("resize")}


def self_description(identity: dict | None, pathologies, image_size: int, normalization_meta: dict | None,
                     in_channels: int = 1) -> dict:
    """The metadata keys by which a model file describes itself (plain values, nothing time- or host-dependent):
    ``dataset``, ``variant_name``, ``config_hash``, ``code_version``, ``labels``, ``input_size`` (channels,
    height, width) and ``transform``. Files written before these keys existed still load (nothing reads them to
    rebuild the model)."""
    identity = identity or {}
    return {"dataset": identity.get("dataset"), "variant_name": identity.get("variant_name"),
            "config_hash": identity.get("config_hash"), "code_version": code_version(),
            "labels": list(pathologies), "input_size": [int(in_channels), int(image_size), int(image_size)],
            "transform": transform_description(image_size, identity.get("resize"), normalization_meta, in_channels)}


def train_variant(*, cache_dir: str | Path, pathologies, variant: dict, training: dict, model_out: str | Path,
                  history_out: str | Path, checkpoint_path: str | Path, threads: int = 1,
                  on_epoch_end: Callable[[int, dict], None] | None = None, progress: bool = True,
                  train_rows=None, val_rows=None, identity: dict | None = None) -> dict:
    """Train and write ``model_out`` (best-by-validation weights + metadata) and ``history_out``.

    ``variant``/``training``: the config's sections as ``validate_config`` fills them in.
    ``train_rows``/``val_rows``: optional row selections (DataFrames with ``split`` and ``cache_row``, see
    ``CacheBatches``) replacing the train and val splits, e.g. one cross-validation fold (``xraypipe.cv``).
    ``identity``: dataset, variant name, config hash and resize mode for the file's metadata (:func:`model_identity`).

    Returns the final history row. ``on_epoch_end(epoch, row)`` is called after each checkpoint is saved.
    Under torchrun (``training.distributed``) every process calls this; rank 0 alone validates, calls
    ``on_epoch_end``, writes and returns the row; the other ranks return ``{}``.
    """
    dist = _Distributed(training)
    try:
        common = dict(cache_dir=cache_dir, pathologies=pathologies, training=training, threads=threads,
                      progress=progress, train_rows=train_rows, val_rows=val_rows, identity=identity)
        train_targets = None
        if variant["encoding"] == "u_selftrained":
            if dist.enabled:
                raise ValueError("encoding 'u_selftrained' with training.distributed is not supported yet")
            train_targets = _self_training_targets(dist, variant, Path(checkpoint_path), common)
        members = int(variant["ensemble_seeds"])
        if members > 1:
            if train_targets is not None or dist.enabled:
                raise ValueError("ensemble_seeds > 1 is not supported with u_selftrained or training.distributed")
            return _train_seed_ensemble(dist, members, variant=variant, model_out=model_out, history_out=history_out,
                                        checkpoint_path=Path(checkpoint_path), on_epoch_end=on_epoch_end, **common)
        return _train(dist, variant=variant, model_out=model_out, history_out=history_out,
                      checkpoint_path=checkpoint_path, on_epoch_end=on_epoch_end, train_targets=train_targets,
                      **common)
    finally:
        dist.close()


# ------------------------------------------------------------------------------------ seed ensembles, self-training
def _train_seed_ensemble(dist, members: int, *, variant, model_out, history_out, checkpoint_path: Path, on_epoch_end,
                         **common) -> dict:
    """``ensemble_seeds: N``: N independent runs (seeds seed, seed+1, ...; each a fresh model, its own resumable
    checkpoint and best-by-validation epoch), saved as one model file whose predictions average the members'
    probabilities. Finished members are kept beside the checkpoint until the ensemble is written, so a killed job
    resumes at the member (and epoch) it was in."""
    import shutil

    seed = int(variant["seed"])
    work = checkpoint_path.parent / "seed_members"
    finished = [_finished_member(dist, {**variant, "seed": seed + i, "ensemble_seeds": 1}, f"{i + 1}/{members}",
                                 work, on_epoch_end, common) for i in range(members)]
    saved, history = _seed_ensemble(variant, finished, common)
    metadata = saved["metadata"]
    save_torch_file(saved, model_out)
    write_csv(history_out, history)
    print(f"ensemble of {members} seeds: val_mean_auroc {metadata['best_val_mean_auroc']:.4f} "
          f"(members {', '.join(f'{v:.4f}' for v in metadata['member_best_val_mean_auroc'])})", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    return {**history.iloc[-1].to_dict(), "val_mean_auroc": metadata["best_val_mean_auroc"]}


def _finished_member(dist, member: dict, label: str, work: Path, on_epoch_end, common: dict):
    """(model file contents, history) of one seed-ensemble member: kept from an earlier attempt when it finished
    for exactly this run definition, else trained (resuming its own checkpoint)."""
    seed = member["seed"]
    folder = work / f"seed{seed}"
    member_model = folder / "model.pt"
    key = _member_key(member, common)
    saved = _load_or_move_aside(member_model, "finished ensemble member") if member_model.exists() else None
    if saved is None or saved.get("member_key") != key:
        print(f"ensemble member {label} (seed {seed})", flush=True)
        _train(dist, variant=member, model_out=member_model, history_out=folder / "history.csv",
               checkpoint_path=folder / "last.pt", on_epoch_end=on_epoch_end, **common)
        saved = load_torch_file(member_model)
        # marks the member finished for exactly this run definition
        save_torch_file({**saved, "member_key": key}, member_model)
    return saved, pd.read_csv(folder / "history.csv").assign(member_seed=seed)


def _seed_ensemble(variant: dict, finished: list, common: dict):
    """(model file contents, history) of the ensemble of the ``finished`` members."""
    import torch

    states = [state for saved, _ in finished for state in (saved.get("ensemble_state_dicts") or [saved["state_dict"]])]
    metas = [saved["metadata"] for saved, _ in finished]
    metadata = {**metas[0], "variant": variant, "ensemble_seeds": [m["variant"]["seed"] for m in metas],
                "member_best_val_mean_auroc": [m["best_val_mean_auroc"] for m in metas],
                "member_best_epoch": [m["best_epoch"] for m in metas],
                "fingerprint": run_fingerprint(variant, common["pathologies"], common["cache_dir"],
                                               metas[0]["image_size"]),
                # recomputed, not the members' (a member kept from an earlier attempt may predate a code change)
                **self_description(common["identity"], common["pathologies"], metas[0]["image_size"],
                                   metas[0].get("normalization"), metas[0].get("in_channels", 1))}
    history = pd.concat([member_history for _, member_history in finished], ignore_index=True)
    saved = {"state_dict": states[0], "ensemble_state_dicts": states, "metadata": metadata}
    # the ensemble's own validation AUROC (what the predictions will be), for the log and the metadata
    model, _ = model_from_saved(saved)
    val_split = common["val_rows"] if common["val_rows"] is not None else "val"
    batches = CacheBatches(common["cache_dir"], val_split, common["pathologies"], batch_size=128,
                           normalization=metadata.get("normalization"), reuse_buffer=True)
    probs, y_val, m_val = predict_batches(model, batches, torch.device("cpu"))
    metadata["best_val_mean_auroc"] = mean_auroc(y_val, m_val, probs)
    return saved, history


def _member_key(member: dict, common: dict) -> str:
    """What defines one finished ensemble member: its variant, the cache index and any row selection."""
    rows = [common[k] for k in ("train_rows", "val_rows")]
    payload = {"variant": member, "pathologies": list(common["pathologies"]),
               "index": file_digest(Path(common["cache_dir"]) / "index.csv"),
               "rows": [None if r is None else r[["split", "cache_row"]].to_csv(index=False) for r in rows]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _self_training_targets(dist, variant: dict, checkpoint_path: Path, common: dict):
    """U-SelfTrained, round 1: train the same variant with U-Ignore (its own resumable checkpoint), then replace
    the uncertain training labels by that model's probabilities (Irvin et al. 2019). Round 1's files live beside
    the checkpoint and are removed once round 2 has finished."""
    from xraypipe.encodings import encode_uncertain_labels, relabel_with_predictions

    first = checkpoint_path.parent / "selftrain_round1"
    model_path = first / "model.pt"
    if not model_path.exists():
        print("u_selftrained: round 1 (U-Ignore)", flush=True)
        _train(dist, variant={**variant, "encoding": "u_ignore"}, model_out=model_path,
               history_out=first / "history.csv", checkpoint_path=first / "last.pt", on_epoch_end=None,
               train_targets=None, **common)
    device = select_device(common["training"]["device"])
    model, round1_meta = load_trained_model(model_path, device)
    train_split = common["train_rows"] if common["train_rows"] is not None else "train"
    batches = CacheBatches(common["cache_dir"], train_split, common["pathologies"], batch_size=128,
                           normalization=round1_meta.get("normalization"))
    probs, _, _ = predict_batches(model, batches, device)
    labels = batches.index[list(common["pathologies"])].to_numpy(dtype=np.float32)
    targets, mask = encode_uncertain_labels(labels, "u_selftrained", variant["blank"])
    targets, mask = relabel_with_predictions(labels, targets, mask, probs)
    print(f"u_selftrained: round 2 with {int((labels == -1).sum())} uncertain labels relabelled", flush=True)
    return targets, mask


# ------------------------------------------------------------------------------------ one training run
def _train(dist: _Distributed, *, cache_dir, pathologies, variant, training, model_out, history_out, checkpoint_path,
           threads, on_epoch_end, progress, train_targets=None, train_rows=None, val_rows=None,
           identity=None) -> dict:
    """One run: set up, resume, then per epoch train, validate and select, checkpoint; finally write the best
    model and the history. Returns the last history row (``{}`` on ranks other than 0)."""
    import torch

    torch.set_num_threads(max(1, threads))
    pathologies = list(pathologies)
    main = dist.is_main
    run = _set_up_run(dist, cache_dir=cache_dir, pathologies=pathologies, variant=variant, training=training,
                      train_targets=train_targets, train_rows=train_rows, val_rows=val_rows)
    checkpoint_path = Path(checkpoint_path)
    state = _resume(run, checkpoint_path, main)

    for epoch in range(state["epoch"] + 1, variant["epochs"] + 1):
        started = time.perf_counter()
        within = (lambda batch, e=epoch: _checkpoint_within_epoch(run, state, e, batch)) if main else None
        total, count = train_one_epoch(run, epoch, dist.rank, progress and main, within_epoch=within)
        total, count = dist.sum(total, count)  # the whole global batch's training loss
        # Only rank 0 validates and selects; it shares the metric (for the plateau schedule) and the stop decision.
        row, improved, stop = None, False, False
        if main:
            val_loss, val_auroc = evaluate(run)
            row = {"epoch": epoch, "train_loss": total / count, "val_loss": val_loss, "val_mean_auroc": val_auroc,
                   "lr": run.optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - started}
            improved, stop = _record_epoch(state, row, run.model, variant)
        metric, stop = dist.sum(row["val_mean_auroc"] if main else 0.0, float(stop))
        step_scheduler(run.scheduler, variant["schedule"], metric)
        state["epoch"] = epoch
        if main:
            print(f"epoch {epoch}: train_loss {row['train_loss']:.4f} val_loss {row['val_loss']:.4f} "
                  f"val_mean_auroc {row['val_mean_auroc']:.4f}{' (best)' if improved else ''} "
                  f"[{row['seconds']:.1f}s]", flush=True)
            _save_checkpoint(run, state, checkpoint_path)
            if on_epoch_end is not None:
                on_epoch_end(epoch, row)
        dist.barrier()
        if stop:
            if main:
                print(f"early stopping: no validation improvement for {variant['early_stopping_patience']} epochs "
                      f"(best epoch {state['best_epoch']})", flush=True)
            break

    if not main:
        return {}
    _write_trained_model(run, state, pathologies, model_out, history_out, identity)
    # Finished: the resume checkpoint has served its purpose (a forced rerun must start afresh).
    checkpoint_path.unlink(missing_ok=True)
    if train_targets is not None:  # u_selftrained: round 1 is done with too
        import shutil

        shutil.rmtree(checkpoint_path.parent / "selftrain_round1", ignore_errors=True)
    return state["history"][-1]


@dataclass
class _Run:
    """What one training run works with, built once by ``_set_up_run``."""

    variant: dict
    device: Any
    dtype: Any  # autocast dtype; None = plain fp32
    channels_last: bool
    train_batches: CacheBatches
    val_batches: CacheBatches
    normalization: Normalization
    classes_per_label: int
    model: Any  # the plain module: what is checkpointed and saved
    net: Any  # what the training steps call: the DDP wrapper when distributed (it averages the gradients)
    scorer: Any  # (B, L) logits whose sigmoid is the positive score: what validation scores
    head: Any
    optimizer: Any
    scheduler: Any
    scaler: Any
    loss_fn: Callable
    val_loss_fn: Callable
    fingerprint: str

    @property
    def image_size(self) -> int:
        return int(self.train_batches.images.shape[-1])


def _set_up_run(dist: _Distributed, *, cache_dir, pathologies: list, variant: dict, training: dict, train_targets,
                train_rows, val_rows) -> _Run:
    """Device settings, data, model, optimizer, schedule and losses of a run, and its fingerprint (what a
    checkpoint must match to be resumed)."""
    import torch

    device, dtype, channels_last, pin, workers = _device_settings(training, dist)
    if variant["regime"] != "full" and dist.enabled:
        raise ValueError(f"regime {variant['regime']!r} with training.distributed is not supported (DDP needs a fixed "
                         "set of trainable parameters); use regime: full or turn distributed off")
    classes_per_label = ENCODINGS.get(variant["encoding"]).classes_per_label
    train_batches, val_batches, normalization = _load_batches(
        cache_dir, pathologies, variant, dist, pin=pin, workers=workers, train_targets=train_targets,
        train_rows=train_rows, val_rows=val_rows, augment_device=device if device.type == "cuda" else None)
    model, net = _build_network(variant, len(pathologies) * classes_per_label, device, channels_last, dist)
    head = head_module(model)
    optimizer = _build_optimizer(variant, model.parameters())
    scheduler = build_scheduler(variant["schedule"], optimizer, variant["epochs"])
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    scorer = positive_score_model(model, classes_per_label)
    loss_fn, val_loss_fn = _build_losses(variant, classes_per_label, train_batches)
    selection = None
    if train_rows is not None or val_rows is not None:
        selection = {name: _rows_digest(batches) for name, batches in (("train", train_batches), ("val", val_batches))}
    fingerprint = run_fingerprint(variant, pathologies, cache_dir, int(train_batches.images.shape[-1]),
                                  selection=selection)
    return _Run(variant=variant, device=device, dtype=dtype, channels_last=channels_last,
                train_batches=train_batches, val_batches=val_batches, normalization=normalization,
                classes_per_label=classes_per_label, model=model, net=net, scorer=scorer, head=head,
                optimizer=optimizer, scheduler=scheduler, scaler=scaler, loss_fn=loss_fn, val_loss_fn=val_loss_fn,
                fingerprint=fingerprint)


def _rows_digest(batches: CacheBatches) -> str:
    """Digest of the (split, cache_row) selection ``batches`` reads."""
    return hashlib.sha256(batches.index[["split", "cache_row"]].to_csv(index=False).encode()).hexdigest()


def _device_settings(training: dict, dist: _Distributed):
    """(device, autocast dtype, channels_last, pin_memory, batch-preparation threads) of this process."""
    import torch

    device = select_device(training["device"])
    if device.type == "cuda" and dist.enabled:
        device = torch.device("cuda", dist.local_rank)
    dtype = amp_dtype(device) if training["amp"] else None
    channels_last = bool(training["channels_last"]) and device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = bool(training["cudnn_benchmark"])
    pin = bool(training["pin_memory"]) and device.type == "cuda"
    workers = int(training["num_workers"])  # batch-preparation threads (CacheBatches)
    return device, dtype, channels_last, pin, workers


def _load_batches(cache_dir, pathologies: list, variant: dict, dist: _Distributed, *, pin: bool, workers: int,
                  train_targets, train_rows, val_rows, augment_device=None):
    """(training batches: shuffled, augmented (on ``augment_device``: the CUDA device), this rank's share;
    validation batches; input normalization)."""
    train_split = train_rows if train_rows is not None else "train"
    val_split = val_rows if val_rows is not None else "val"
    # input standardisation (variants.<v>.normalization); per_pixel reads the statistics beside the cache
    normalization = Normalization.for_variant(variant["normalization"], Path(cache_dir) / PIXEL_STATS_NAME)
    train_batches = CacheBatches(cache_dir, train_split, pathologies, batch_size=variant["batch_size"], shuffle=True,
                                 augment=variant["augment"], seed=int(variant["seed"]), pin_memory=pin,
                                 rank=dist.rank, world_size=dist.world_size, encoding=variant["encoding"],
                                 blank=variant["blank"], oversample=variant["oversample"],
                                 minority_copies=variant["minority_copies"],
                                 targets_override=train_targets, augment_args=variant["augment_args"],
                                 normalization=normalization, reuse_buffer=True, workers=workers,
                                 augment_device=augment_device)
    # reuse_buffer: the loops consume each batch before drawing the next (see CacheBatches)
    val_batches = CacheBatches(cache_dir, val_split, pathologies, batch_size=max(64, variant["batch_size"]),
                               pin_memory=pin, normalization=normalization, reuse_buffer=True, workers=workers)
    if len(train_batches.index) == 0 or len(val_batches.index) == 0:
        raise ValueError(f"{cache_dir}: empty train or val split")
    return train_batches, val_batches, normalization


def _build_network(variant: dict, num_outputs: int, device, channels_last: bool, dist: _Distributed):
    """(model, what the training steps call): the freshly seeded, initialised model on ``device``, and its DDP
    wrapper when distributed (else the model itself)."""
    import torch

    torch.manual_seed(int(variant["seed"]))
    model = build_model(variant["model"], num_classes=num_outputs, in_channels=1, weights=variant["weights"],
                        **variant["model_args"])
    if apply_init(model, variant["init"], variant["weights"]) is False:
        print(f"init {variant['init']} ignored: the model starts from weights {variant['weights']!r}", flush=True)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if not dist.enabled:
        return model, model
    from torch.nn.parallel import DistributedDataParallel

    return model, DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def _build_losses(variant: dict, classes_per_label: int, train_batches: CacheBatches):
    """(training loss, validation loss). U-MultiClass trains a 3-class cross-entropy but is validated on its
    positive scores, like every other encoding, with BCE."""
    if classes_per_label == 3:
        return multiclass_loss(), build_loss("bce")
    known = train_batches.mask.numpy()
    targets = train_batches.targets.numpy()
    loss_fn = build_loss(variant["loss"], pos_counts=(targets * known).sum(axis=0),
                         neg_counts=((1 - targets) * known).sum(axis=0), **variant["loss_args"])
    return loss_fn, loss_fn


def _resume(run: _Run, checkpoint_path: Path, main: bool) -> dict:
    """The progress to continue from: restored with the model, optimizer, scheduler and scaler from
    ``checkpoint_path`` when that belongs to this run (same fingerprint), else a fresh start."""
    state = {"epoch": 0, "history": [], "best_metric": -np.inf, "best_state": None, "best_epoch": 0, "top": [],
             "within_epoch": []}
    saved = _load_or_move_aside(checkpoint_path, "resume checkpoint") if checkpoint_path.exists() else None
    if saved is None:
        return state
    if saved.get("fingerprint") != run.fingerprint:
        if main:
            print(f"ignoring {checkpoint_path}: it belongs to a different configuration", flush=True)
        return state
    run.model.load_state_dict(saved["model"])
    run.optimizer.load_state_dict(saved["optimizer"])
    run.scheduler.load_state_dict(saved["scheduler"])
    run.scaler.load_state_dict(saved["scaler"])
    state = {k: saved.get(k, state[k]) for k in state}
    log.info("resuming from %s after epoch %d", checkpoint_path, state["epoch"])
    if main:
        print(f"resuming from {checkpoint_path} after epoch {state['epoch']}", flush=True)
    return state


def train_one_epoch(run: _Run, epoch: int, rank: int, progress: bool, within_epoch=None) -> tuple[float, int]:
    """One pass over this process's share of the training split: (sum of loss x batch size, images seen).
    ``within_epoch(batch)`` is called after every ``checkpoint_every_batches`` batches but the epoch's last (whose
    checkpoint is the epoch's own)."""
    import torch
    from xraypipe.job_log import progress as progress_bar

    # dropout etc.: same stream whether resumed or not (rank 0 = the single-process stream)
    torch.manual_seed(int(run.variant["seed"]) * 1_000_003 + epoch + 1_000_000_007 * rank)
    run.train_batches.set_epoch(epoch)
    _set_training_mode(run, epoch)
    total, count = 0.0, 0
    bar = progress_bar(run.train_batches, desc=f"epoch {epoch}/{run.variant['epochs']}", unit="batch",
                       enabled=progress)
    every, n_batches = int(run.variant["checkpoint_every_batches"]), len(run.train_batches)
    for batch, (x, y, m, _) in enumerate(bar, start=1):
        loss = _train_step(run, x, y, m, epoch)
        total += float(loss.detach()) * len(x)
        count += len(x)
        bar.set_postfix(loss=f"{total / count:.4f}", refresh=False)
        if within_epoch is not None and every and batch % every == 0 and batch < n_batches:
            within_epoch(batch)
            _set_training_mode(run, epoch)  # validation left the model in eval mode
    bar.close()
    return total, count


def _checkpoint_within_epoch(run: _Run, state: dict, epoch: int, batch: int) -> None:
    """A checkpoint inside an epoch (``checkpoint_every_batches``, the CheXpert paper's every 4,800 batches):
    validate the current weights and offer them to the checkpoint ensemble (``ensemble_top_k``). It is not a
    candidate for the single best epoch, the history or early stopping, which stay per epoch."""
    val_loss, val_auroc = evaluate(run)
    row = {"epoch": epoch, "batch": batch, "val_loss": val_loss, "val_mean_auroc": val_auroc}
    state["within_epoch"].append(row)
    score = selection_score(row, run.variant["selection_metric"])
    print(f"epoch {epoch} batch {batch}: val_loss {val_loss:.4f} val_mean_auroc {val_auroc:.4f}", flush=True)
    if int(run.variant["ensemble_top_k"]) > 1 and np.isfinite(score):
        state["top"] = keep_top_k(state["top"], score, epoch, run.model, int(run.variant["ensemble_top_k"]),
                                  batch=batch, per_epoch=run.variant["ensemble_per_epoch"])


def _set_training_mode(run: _Run, epoch: int) -> None:
    """Training mode, with the backbone frozen for ``regime: frozen`` and the first ``staged_head_epochs`` of
    ``regime: staged`` (only the head trains then)."""
    import torch

    regime = run.variant["regime"]
    backbone_frozen = regime == "frozen" or (regime == "staged" and epoch <= run.variant["staged_head_epochs"])
    set_backbone_trainable(run.model, run.head, not backbone_frozen)
    run.net.train()
    if backbone_frozen:  # a frozen backbone keeps its batch-norm statistics too
        for module in run.model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()


def _train_step(run: _Run, x, y, m, epoch: int):
    """One optimizer step on a batch (images, targets, mask); returns the loss."""
    import torch

    x = x.to(run.device, non_blocking=True)
    y, m = y.to(run.device, non_blocking=True), m.to(run.device, non_blocking=True)
    if run.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    run.optimizer.zero_grad(set_to_none=True)
    with torch.autocast(run.device.type, dtype=run.dtype or torch.float32, enabled=run.dtype is not None):
        logits = run.net(x)
    loss = run.loss_fn(logits, y, m)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite training loss at epoch {epoch}; lower lr (now {run.variant['lr']})")
    run.scaler.scale(loss).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    return loss


def evaluate(run: _Run) -> tuple[float, float]:
    """(validation loss, validation mean AUROC) of the current weights, scored on the positive scores."""
    import torch

    probs, y_val, m_val = predict_batches(run.scorer, run.val_batches, run.device, run.dtype, run.channels_last)
    val_loss = float(run.val_loss_fn(torch.logit(torch.from_numpy(probs).clamp(1e-6, 1 - 1e-6)),
                                     torch.from_numpy(y_val), torch.from_numpy(m_val)))
    return val_loss, mean_auroc(y_val, m_val, probs)


def selection_score(row: dict, metric: str = "val_mean_auroc") -> float:
    """Higher is better: the validation mean AUROC, or minus the validation loss (``selection_metric``)."""
    if metric == "val_loss":
        return -float(row["val_loss"])
    if metric == "val_mean_auroc":
        return float(row["val_mean_auroc"])
    raise ValueError(f"unknown selection_metric {metric!r}; choose val_mean_auroc or val_loss")


def _record_epoch(state: dict, row: dict, model, variant: dict) -> tuple[bool, bool]:
    """Add ``row`` to the history and update the model selection: the best weights by the variant's
    ``selection_metric`` (validation mean AUROC, or validation loss; the first epoch's while none is finite) and the
    top-k epochs of a checkpoint ensemble. Returns (improved, stop early)."""
    epoch = row["epoch"]
    score = selection_score(row, variant["selection_metric"])
    top_k, patience = int(variant["ensemble_top_k"]), variant["early_stopping_patience"]
    state["history"].append(row)
    improved = np.isfinite(score) and score > state["best_metric"]
    if improved or state["best_state"] is None:
        state["best_metric"] = score if np.isfinite(score) else state["best_metric"]
        state["best_epoch"] = epoch
        state["best_state"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    if top_k > 1 and np.isfinite(score):
        state["top"] = keep_top_k(state["top"], score, epoch, model, top_k, per_epoch=variant["ensemble_per_epoch"])
    stop = bool(patience) and epoch - state["best_epoch"] >= patience
    return improved, stop


def _save_checkpoint(run: _Run, state: dict, checkpoint_path: Path) -> None:
    save_torch_file({"fingerprint": run.fingerprint, "model": run.model.state_dict(),
                     "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
                     "scaler": run.scaler.state_dict(), **state}, checkpoint_path)


def _write_trained_model(run: _Run, state: dict, pathologies: list, model_out, history_out, identity=None) -> None:
    """The history CSV and the model file: the best weights (and the top-k of a checkpoint ensemble) with the
    metadata ``xraypipe.inference`` rebuilds the model from, and what the file says about itself
    (:func:`self_description`)."""
    variant = run.variant
    top_k = int(variant["ensemble_top_k"])
    metadata = {
        "format": FORMAT_VERSION, "model": variant["model"], "model_args": variant["model_args"],
        "pathologies": pathologies, "in_channels": 1, "image_size": run.image_size,
        "normalization": run.normalization.to_meta(), "variant": variant,
        "best_epoch": state["best_epoch"], "selection_metric": variant["selection_metric"],
        "best_val_mean_auroc": next((r["val_mean_auroc"] for r in state["history"] if r["epoch"] == state["best_epoch"]),
                                    float("nan")), "fingerprint": run.fingerprint,
        "ensemble_epochs": [t["epoch"] for t in state["top"]] if top_k > 1 else [],
        # each member's epoch, batch within it (None: the epoch's end) and selection score, best first
        "ensemble_checkpoints": [{"epoch": t["epoch"], "batch": t.get("batch"), "metric": t["metric"]}
                                 for t in state["top"]] if top_k > 1 else [],
        "within_epoch_validation": state["within_epoch"],  # checkpoint_every_batches: each checkpoint's scores
        "classes_per_label": run.classes_per_label,
        **self_description(identity, pathologies, run.image_size, run.normalization.to_meta()),
    }
    write_csv(history_out, pd.DataFrame(state["history"]))
    saved_model = {"state_dict": state["best_state"], "metadata": metadata}
    if top_k > 1 and state["top"]:
        saved_model["ensemble_state_dicts"] = [t["state"] for t in state["top"]]
    save_torch_file(saved_model, model_out)


# ------------------------------------------------------------------------------------ building blocks
def _load_or_move_aside(path: Path, what: str):
    """The object in a resume file, or None after moving an unreadable (truncated, corrupt) one aside: a killed
    write must not block every rerun. An unsafe file is an error, never loaded."""
    try:
        return load_torch_file(path, what)
    except CorruptModelFileError as exc:
        target = move_aside(path)
        print(f"warning: {exc}; moved it to {target.name} and starting this run afresh", flush=True)
        log.warning("%s; moved to %s", exc, target)
        return None


def multiclass_loss():
    """Cross-entropy over (negative, positive, uncertain) per label, masked like the binary losses."""
    import torch.nn.functional as F

    def loss(logits, targets, mask):
        grouped = logits.float().view(logits.shape[0], -1, 3)
        per_entry = F.cross_entropy(grouped.permute(0, 2, 1), targets.long(), reduction="none")
        return (per_entry * mask).sum() / mask.sum().clamp_min(1.0)

    return loss


def head_module(model):
    """The classification head: the model's last ``nn.Linear`` (what frozen/staged regimes keep training)."""
    import torch.nn as nn

    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__}: no linear head found for a frozen/staged regime")
    return linears[-1]


def set_backbone_trainable(model, head, trainable: bool) -> None:
    for p in model.parameters():
        p.requires_grad_(trainable)
    for p in head.parameters():
        p.requires_grad_(True)


def build_scheduler(schedule: dict, optimizer, epochs: int):
    """Per-epoch learning-rate schedule (``variants.<v>.schedule``): cosine, step (every ``step_size`` epochs, or
    at the listed ``milestones`` only: the ChestX-ray8 study's 1e-3 -> 1e-4 at epoch 60), plateau on the
    validation mean AUROC, or constant."""
    import torch

    kind = schedule["type"]
    if kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    if kind == "step":
        if schedule.get("milestones"):
            return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(schedule["milestones"]),
                                                        gamma=schedule["gamma"])
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=schedule["step_size"], gamma=schedule["gamma"])
    if kind == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=schedule["gamma"],
                                                          patience=schedule["patience"])
    if kind == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    raise ValueError(f"unknown schedule type {kind!r}")


def step_scheduler(scheduler, schedule: dict, metric: float) -> None:
    """Advance one epoch; the plateau schedule watches the validation metric (skipped when it is NaN)."""
    if schedule["type"] == "plateau":
        if np.isfinite(metric):
            scheduler.step(metric)
    else:
        scheduler.step()


def keep_top_k(top: list, metric: float, epoch: int, model, k: int, *, batch: int | None = None,
               per_epoch: bool = False) -> list:
    """The k best checkpoints (metric, epoch, batch within the epoch, weights) so far, best first: CheXpert's
    checkpoint ensemble. ``batch``: None for an epoch's end (it sorts after the epoch's batches on a tie).
    ``per_epoch``: the k best of each epoch (the CheXpert paper's 10 best of each of 3 epochs)."""
    entry = {"metric": float(metric), "epoch": epoch, "batch": batch,
             "state": {key: v.detach().cpu().clone() for key, v in model.state_dict().items()}}

    def order(t):
        return -t["metric"], t["epoch"], float("inf") if t.get("batch") is None else t["batch"]

    ranked = sorted(top + [entry], key=order)
    if not per_epoch:
        return ranked[:k]
    kept, per = [], {}
    for t in ranked:
        if per.get(t["epoch"], 0) < k:
            per[t["epoch"]] = per.get(t["epoch"], 0) + 1
            kept.append(t)
    return kept


def _build_optimizer(variant: dict, params):
    import torch

    name, lr, wd = variant["optimizer"], variant["lr"], variant["weight_decay"]
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd, nesterov=True)
    raise ValueError(f"unknown optimizer {name!r}")
