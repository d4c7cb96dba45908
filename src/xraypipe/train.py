"""Train one variant on one dataset's cache: seeded, resumable, device-agnostic.

- best weights chosen by validation mean AUROC (the test split is never looked at here);
- a checkpoint after every epoch (atomic), so a killed job rerun resumes at the next epoch; the
  checkpoint carries a fingerprint of everything that defines the run and is ignored if it differs;
- per-epoch history CSV; tqdm progress on stderr (the rule's log);
- CUDA with mixed precision (bf16 where supported, else fp16 + GradScaler), channels_last, pinned memory with
  non-blocking copies and cudnn.benchmark when a GPU is present (each a ``training`` switch), plain fp32 on CPU;
- optional single-node DistributedDataParallel (``training.distributed``): ``scripts/train.py`` relaunches
  itself under torchrun (``torch.distributed.run``) with one process per GPU (NCCL), or per CPU process with
  gloo (how the tests exercise it). Every process draws the same global batch and trains on its share; rank 0
  alone validates, selects, checkpoints and writes; all processes resume from the same checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from xraypipe.atomic import write_csv
from xraypipe.data import CacheBatches
from xraypipe.encodings import ENCODINGS, eval_labels
from xraypipe.losses import build_loss
from xraypipe.metrics import auroc
from xraypipe.model_files import CorruptModelFileError, load_torch_file, move_aside, save_torch_file
from xraypipe.models import apply_init, build_model
from xraypipe.standardize import PIXEL_STATS_NAME, Normalization

log = logging.getLogger("xraypipe.train")

FORMAT_VERSION = 1


def select_device(preference: str = "auto"):
    import torch

    if preference == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("training.device is 'cuda' but no CUDA device is available")
    if preference in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def distributed_world(training: dict) -> int:
    """Number of processes ``training.distributed`` asks for (1 = plain single-process training).

    ``nproc_per_node: auto`` = every visible GPU (Slurm's --gpus sets which), 1 without CUDA.
    """
    dist = training.get("distributed") or {}
    if not dist.get("enabled", False):
        return 1
    nproc = dist.get("nproc_per_node", "auto")
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
            backend = (training.get("distributed") or {}).get("backend", "auto")
            use_cuda = select_device(training.get("device", "auto")).type == "cuda"
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


def predict_batches(model, batches, device, dtype=None, channels_last: bool = False):
    """Sigmoid probabilities, targets and mask for every item of ``batches`` (in cache order)."""
    import torch

    model.eval()
    probs, targets, masks, rows = [], [], [], []
    with torch.inference_mode():
        for x, y, m, r in batches:
            x = x.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                logits = model(x)
            probs.append(torch.sigmoid(logits.float()).cpu().numpy())
            targets.append(y.numpy())
            masks.append(m.numpy())
            rows.append(r)
    order = np.argsort(np.concatenate(rows))
    return (np.concatenate(probs)[order], np.concatenate(targets)[order], np.concatenate(masks)[order])


def train_variant(*, cache_dir: str | Path, pathologies, variant: dict, training: dict, model_out: str | Path,
                  history_out: str | Path, checkpoint_path: str | Path, threads: int = 1,
                  on_epoch_end: Callable[[int, dict], None] | None = None, progress: bool = True,
                  train_rows=None, val_rows=None) -> dict:
    """Train and write ``model_out`` (best-by-validation weights + metadata) and ``history_out``.

    ``train_rows``/``val_rows``: optional row selections (DataFrames with ``split`` and ``cache_row``, see
    ``CacheBatches``) replacing the train and val splits, e.g. one cross-validation fold (``xraypipe.cv``).

    Returns the final history row. ``on_epoch_end(epoch, row)`` is called after each checkpoint is saved.
    Under torchrun (``training.distributed``) every process calls this; rank 0 alone validates, calls
    ``on_epoch_end``, writes and returns the row; the other ranks return ``{}``.
    """
    dist = _Distributed(training)
    try:
        common = dict(cache_dir=cache_dir, pathologies=pathologies, training=training, threads=threads,
                      progress=progress, train_rows=train_rows, val_rows=val_rows)
        train_targets = None
        if variant.get("encoding") == "u_selftrained":
            if dist.enabled:
                raise ValueError("encoding 'u_selftrained' with training.distributed is not supported yet")
            train_targets = _self_training_targets(dist, variant, Path(checkpoint_path), common)
        members = int(variant.get("ensemble_seeds", 1))
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


def _train_seed_ensemble(dist, members: int, *, variant, model_out, history_out, checkpoint_path: Path, on_epoch_end,
                         **common) -> dict:
    """``ensemble_seeds: N``: N independent runs (seeds seed, seed+1, ...; each a fresh model, its own resumable
    checkpoint and best-by-validation epoch), saved as one model file whose predictions average the members'
    probabilities. Finished members are kept beside the checkpoint until the ensemble is written, so a killed job
    resumes at the member (and epoch) it was in."""
    import shutil

    import torch

    seed = int(variant.get("seed", 0))
    work = checkpoint_path.parent / "seed_members"
    states, histories, metas = [], [], []
    for i in range(members):
        member = {**variant, "seed": seed + i, "ensemble_seeds": 1}
        folder = work / f"seed{seed + i}"
        member_model = folder / "model.pt"
        key = _member_key(member, common)
        saved = _load_or_move_aside(member_model, "finished ensemble member") if member_model.exists() else None
        if saved is None or saved.get("member_key") != key:
            print(f"ensemble member {i + 1}/{members} (seed {seed + i})", flush=True)
            _train(dist, variant=member, model_out=member_model, history_out=folder / "history.csv",
                   checkpoint_path=folder / "last.pt", on_epoch_end=on_epoch_end, **common)
            saved = load_torch_file(member_model)
            # marks the member finished for exactly this run definition
            save_torch_file({**saved, "member_key": key}, member_model)
        states.extend(saved.get("ensemble_state_dicts") or [saved["state_dict"]])
        metas.append(saved["metadata"])
        histories.append(pd.read_csv(folder / "history.csv").assign(member_seed=seed + i))
    metadata = {**metas[0], "variant": variant, "ensemble_seeds": [m["variant"]["seed"] for m in metas],
                "member_best_val_mean_auroc": [m["best_val_mean_auroc"] for m in metas],
                "member_best_epoch": [m["best_epoch"] for m in metas],
                "fingerprint": run_fingerprint(variant, common["pathologies"], common["cache_dir"],
                                               metas[0]["image_size"])}
    history = pd.concat(histories, ignore_index=True)
    saved = {"state_dict": states[0], "ensemble_state_dicts": states, "metadata": metadata}
    # the ensemble's own validation AUROC (what the predictions will be), for the log and the metadata
    model, _ = model_from_saved(saved)
    batches = CacheBatches(common["cache_dir"], common.get("val_rows") if common.get("val_rows") is not None else "val",
                           common["pathologies"], batch_size=128, normalization=metadata.get("normalization"),
                           reuse_buffer=True)
    probs, y_val, m_val = predict_batches(model, batches, torch.device("cpu"))
    metadata["best_val_mean_auroc"] = mean_auroc(y_val, m_val, probs)
    save_torch_file(saved, model_out)
    write_csv(history_out, history)
    print(f"ensemble of {members} seeds: val_mean_auroc {metadata['best_val_mean_auroc']:.4f} "
          f"(members {', '.join(f'{v:.4f}' for v in metadata['member_best_val_mean_auroc'])})", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    return {**history.iloc[-1].to_dict(), "val_mean_auroc": metadata["best_val_mean_auroc"]}


def _member_key(member: dict, common: dict) -> str:
    """What defines one finished ensemble member: its variant, the cache index and any row selection."""
    rows = [common.get(k) for k in ("train_rows", "val_rows")]
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
    device = select_device(common["training"].get("device", "auto"))
    model, round1_meta = load_trained_model(model_path, device)
    train_split = common["train_rows"] if common.get("train_rows") is not None else "train"
    batches = CacheBatches(common["cache_dir"], train_split, common["pathologies"], batch_size=128,
                           normalization=round1_meta.get("normalization"))
    probs, _, _ = predict_batches(model, batches, device)
    labels = batches.index[list(common["pathologies"])].to_numpy(dtype=np.float32)
    targets, mask = encode_uncertain_labels(labels, "u_selftrained", variant.get("blank", "masked"))
    targets, mask = relabel_with_predictions(labels, targets, mask, probs)
    print(f"u_selftrained: round 2 with {int((labels == -1).sum())} uncertain labels relabelled", flush=True)
    return targets, mask


def _train(dist: _Distributed, *, cache_dir, pathologies, variant, training, model_out, history_out, checkpoint_path,
           threads, on_epoch_end, progress, train_targets=None, train_rows=None, val_rows=None) -> dict:
    import torch
    from tqdm.auto import tqdm

    torch.set_num_threads(max(1, threads))
    device = select_device(training.get("device", "auto"))
    if device.type == "cuda" and dist.enabled:
        device = torch.device("cuda", dist.local_rank)
    dtype = amp_dtype(device) if training.get("amp", True) else None
    channels_last = bool(training.get("channels_last", True)) and device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = bool(training.get("cudnn_benchmark", True))
    pin = bool(training.get("pin_memory", True)) and device.type == "cuda"
    workers = int(training.get("num_workers", 0))  # batch-preparation threads (CacheBatches)
    pathologies = list(pathologies)
    seed = int(variant.get("seed", 0))
    main = dist.is_main
    progress = progress and main

    regime = variant.get("regime", "full")
    if regime != "full" and dist.enabled:
        raise ValueError(f"regime {regime!r} with training.distributed is not supported (DDP needs a fixed set of "
                         "trainable parameters); use regime: full or turn distributed off")
    encoding = variant.get("encoding", "u_ignore")
    classes_per_label = ENCODINGS.get(encoding).classes_per_label
    train_split = train_rows if train_rows is not None else "train"
    val_split = val_rows if val_rows is not None else "val"
    # input standardisation (variants.<v>.normalization); per_pixel reads the statistics beside the cache
    normalization = Normalization.for_variant(variant.get("normalization", "fixed"),
                                              Path(cache_dir) / PIXEL_STATS_NAME)
    train_batches = CacheBatches(cache_dir, train_split, pathologies, batch_size=variant["batch_size"], shuffle=True,
                                 augment=variant.get("augment", True), seed=seed, pin_memory=pin, rank=dist.rank,
                                 world_size=dist.world_size, encoding=encoding,
                                 blank=variant.get("blank", "masked"), oversample=variant.get("oversample", False),
                                 targets_override=train_targets, augment_args=variant.get("augment_args"),
                                 normalization=normalization, reuse_buffer=True, workers=workers)
    # reuse_buffer: the loops below consume each batch before drawing the next (see CacheBatches)
    val_batches = CacheBatches(cache_dir, val_split, pathologies, batch_size=max(64, variant["batch_size"]),
                               pin_memory=pin, normalization=normalization, reuse_buffer=True, workers=workers)
    if len(train_batches.index) == 0 or len(val_batches.index) == 0:
        raise ValueError(f"{cache_dir}: empty train or val split")
    image_size = int(train_batches.images.shape[-1])

    torch.manual_seed(seed)
    model = build_model(variant["model"], num_classes=len(pathologies) * classes_per_label, in_channels=1,
                        weights=variant.get("weights"),
                        **variant.get("model_args", {}))
    if apply_init(model, variant.get("init", "default"), variant.get("weights")) is False:
        print(f"init {variant['init']} ignored: the model starts from weights {variant['weights']!r}", flush=True)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = model  # what the training steps call: the DDP wrapper when distributed (it averages the gradients)
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    head = head_module(model)
    optimizer = _build_optimizer(variant, model.parameters())
    schedule = variant.get("schedule") or {}
    scheduler = build_scheduler(schedule, optimizer, variant["epochs"])
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    known = train_batches.mask.numpy()
    scorer = positive_score_model(model, classes_per_label)  # (B, L) logits whose sigmoid is the positive score
    if classes_per_label == 3:
        loss_fn = multiclass_loss()
        val_loss_fn = build_loss("bce")
    else:
        loss_fn = val_loss_fn = None
    loss_fn = loss_fn or build_loss(variant["loss"], pos_counts=(train_batches.targets.numpy() * known).sum(axis=0),
                         neg_counts=((1 - train_batches.targets.numpy()) * known).sum(axis=0),
                         **variant.get("loss_args", {}))

    selection = None
    if train_rows is not None or val_rows is not None:
        selection = {name: hashlib.sha256(batches.index[["split", "cache_row"]].to_csv(index=False).encode()).hexdigest()
                     for name, batches in (("train", train_batches), ("val", val_batches))}
    fingerprint = run_fingerprint(variant, pathologies, cache_dir, image_size, selection=selection)
    checkpoint_path = Path(checkpoint_path)
    state = {"epoch": 0, "history": [], "best_metric": -np.inf, "best_state": None, "best_epoch": 0, "top": []}
    top_k = int(variant.get("ensemble_top_k", 1))
    patience = variant.get("early_stopping_patience")
    saved = _load_or_move_aside(checkpoint_path, "resume checkpoint") if checkpoint_path.exists() else None
    if saved is not None:
        if saved.get("fingerprint") == fingerprint:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            scaler.load_state_dict(saved["scaler"])
            state = {k: saved.get(k, state[k]) for k in state}
            log.info("resuming from %s after epoch %d", checkpoint_path, state["epoch"])
            if main:
                print(f"resuming from {checkpoint_path} after epoch {state['epoch']}", flush=True)
        elif main:
            print(f"ignoring {checkpoint_path}: it belongs to a different configuration", flush=True)

    for epoch in range(state["epoch"] + 1, variant["epochs"] + 1):
        started = time.perf_counter()
        # dropout etc.: same stream whether resumed or not (rank 0 = the single-process stream)
        torch.manual_seed(seed * 1_000_003 + epoch + 1_000_000_007 * dist.rank)
        train_batches.set_epoch(epoch)
        backbone_frozen = regime == "frozen" or (regime == "staged" and epoch <= variant.get("staged_head_epochs", 1))
        set_backbone_trainable(model, head, not backbone_frozen)
        net.train()
        if backbone_frozen:  # a frozen backbone keeps its batch-norm statistics too
            for module in model.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.eval()
        total, count = 0.0, 0
        bar = tqdm(train_batches, desc=f"epoch {epoch}/{variant['epochs']}", unit="batch", disable=not progress,
                   mininterval=5)
        for x, y, m, _ in bar:
            x = x.to(device, non_blocking=True)
            y, m = y.to(device, non_blocking=True), m.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                logits = net(x)
            loss = loss_fn(logits, y, m)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite training loss at epoch {epoch}; lower lr (now {variant['lr']})")
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total += float(loss.detach()) * len(x)
            count += len(x)
            bar.set_postfix(loss=f"{total / count:.4f}", refresh=False)
        bar.close()
        total, count = dist.sum(total, count)  # the whole global batch's training loss
        if not main:
            # Only rank 0 validates and selects; it shares the metric and the stop decision, then writes.
            metric, stop = dist.sum(0.0, 0.0)
            step_scheduler(scheduler, schedule, metric)
            state["epoch"] = epoch
            dist.barrier()
            if stop:
                break
            continue

        probs, y_val, m_val = predict_batches(scorer, val_batches, device, dtype, channels_last)
        val_loss = float((val_loss_fn or loss_fn)(torch.logit(torch.from_numpy(probs).clamp(1e-6, 1 - 1e-6)),
                                 torch.from_numpy(y_val), torch.from_numpy(m_val)))
        val_auroc = mean_auroc(y_val, m_val, probs)
        row = {"epoch": epoch, "train_loss": total / count, "val_loss": val_loss, "val_mean_auroc": val_auroc,
               "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - started}
        state["history"].append(row)
        improved = np.isfinite(val_auroc) and val_auroc > state["best_metric"]
        if improved or state["best_state"] is None:
            state["best_metric"] = val_auroc if np.isfinite(val_auroc) else state["best_metric"]
            state["best_epoch"] = epoch
            state["best_state"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        if top_k > 1 and np.isfinite(val_auroc):
            state["top"] = keep_top_k(state["top"], val_auroc, epoch, model, top_k)
        stop = bool(patience) and epoch - state["best_epoch"] >= patience
        metric, _ = dist.sum(val_auroc, float(stop))
        step_scheduler(scheduler, schedule, metric)
        state["epoch"] = epoch
        print(f"epoch {epoch}: train_loss {row['train_loss']:.4f} val_loss {val_loss:.4f} "
              f"val_mean_auroc {val_auroc:.4f}{' (best)' if improved else ''} [{row['seconds']:.1f}s]", flush=True)
        save_torch_file({"fingerprint": fingerprint, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), **state}, checkpoint_path)
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
        dist.barrier()
        if stop:
            print(f"early stopping: no validation improvement for {patience} epochs (best epoch "
                  f"{state['best_epoch']})", flush=True)
            break

    if not main:
        return {}
    metadata = {
        "format": FORMAT_VERSION, "model": variant["model"], "model_args": variant.get("model_args", {}),
        "pathologies": pathologies, "in_channels": 1, "image_size": image_size,
        "normalization": normalization.to_meta(), "variant": variant,
        "best_epoch": state["best_epoch"], "best_val_mean_auroc": state["best_metric"], "fingerprint": fingerprint,
        "ensemble_epochs": [t["epoch"] for t in state["top"]] if top_k > 1 else [],
        "classes_per_label": classes_per_label,
    }
    write_csv(history_out, pd.DataFrame(state["history"]))
    saved_model = {"state_dict": state["best_state"], "metadata": metadata}
    if top_k > 1 and state["top"]:
        saved_model["ensemble_state_dicts"] = [t["state"] for t in state["top"]]
    save_torch_file(saved_model, model_out)
    # Finished: the resume checkpoint has served its purpose (a forced rerun must start afresh).
    checkpoint_path.unlink(missing_ok=True)
    if train_targets is not None:  # u_selftrained: round 1 is done with too
        import shutil

        shutil.rmtree(checkpoint_path.parent / "selftrain_round1", ignore_errors=True)
    return state["history"][-1]


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


def positive_score_model(model, classes_per_label: int):
    """``model`` itself, or for U-MultiClass (3 logits per label: neg, pos, uncertain) a view returning
    l_pos - l_neg, whose sigmoid is p(pos) / (p(pos) + p(neg)): every consumer keeps applying a sigmoid."""
    if classes_per_label == 1:
        return model
    import torch

    class PositiveScore(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            grouped = self.inner(x).view(x.shape[0], -1, 3)
            return grouped[..., 1] - grouped[..., 0]

    return PositiveScore(model)


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
    """Per-epoch learning-rate schedule: cosine (default), step (seed 003: 1e-3 -> 1e-4), plateau on the
    validation mean AUROC, or constant."""
    import torch

    kind = schedule.get("type", "cosine")
    if kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    if kind == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=schedule.get("step_size", 10),
                                               gamma=schedule.get("gamma", 0.1))
    if kind == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=schedule.get("gamma", 0.1),
                                                          patience=schedule.get("patience", 2))
    if kind == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    raise ValueError(f"unknown schedule type {kind!r}")


def step_scheduler(scheduler, schedule: dict, metric: float) -> None:
    """Advance one epoch; the plateau schedule watches the validation metric (skipped when it is NaN)."""
    if (schedule or {}).get("type", "cosine") == "plateau":
        if np.isfinite(metric):
            scheduler.step(metric)
    else:
        scheduler.step()


def keep_top_k(top: list, metric: float, epoch: int, model, k: int) -> list:
    """The k best (metric, epoch, weights) so far, best first (CheXpert's checkpoint ensemble)."""
    entry = {"metric": float(metric), "epoch": epoch,
             "state": {key: v.detach().cpu().clone() for key, v in model.state_dict().items()}}
    return sorted(top + [entry], key=lambda t: (-t["metric"], t["epoch"]))[:k]


def _build_optimizer(variant: dict, params):
    import torch

    name, lr, wd = variant.get("optimizer", "adam"), variant["lr"], variant.get("weight_decay", 0.0)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd, nesterov=True)
    raise ValueError(f"unknown optimizer {name!r}")


def _ensemble(members):
    """A module averaging its members' probabilities; returns the logit of the mean so callers apply sigmoid."""
    import torch

    class CheckpointEnsemble(torch.nn.Module):
        def __init__(self, models):
            super().__init__()
            self.members = torch.nn.ModuleList(models)

        def forward(self, x):
            probs = torch.stack([torch.sigmoid(m(x).float()) for m in self.members]).mean(dim=0)
            return torch.logit(probs.clamp(1e-7, 1 - 1e-7))

    return CheckpointEnsemble(members)


def load_trained_model(model_path: str | Path, device=None, ensemble: bool = True):
    """Return (model in eval mode, metadata) from a file written by ``train_variant``.

    With ``ensemble_top_k > 1`` the file holds the k best checkpoints; ``ensemble=True`` returns a module
    averaging their probabilities (what predictions use), ``ensemble=False`` the single best one.
    """
    import torch

    model_path = Path(model_path)
    if not model_path.exists():
        raise FileNotFoundError(f"{model_path}: trained model not found (run the train rule for it first)")
    return model_from_saved(load_torch_file(model_path), device, ensemble)


def model_from_saved(saved: dict, device=None, ensemble: bool = True):
    """(model in eval mode, metadata) from the dict a model file holds (see ``load_trained_model``)."""
    meta = saved["metadata"]
    classes = int(meta.get("classes_per_label", 1))

    def restore(state):
        net = build_model(meta["model"], num_classes=len(meta["pathologies"]) * classes,
                          in_channels=meta["in_channels"], **meta.get("model_args", {}))
        net.load_state_dict(state)
        return positive_score_model(net, classes)

    model = restore(saved["state_dict"])
    if ensemble and saved.get("ensemble_state_dicts"):
        model = _ensemble([restore(state) for state in saved["ensemble_state_dicts"]])
    if device is not None:
        model = model.to(device)
    return model.eval(), meta


def predict_split(*, model_path, cache_dir, split: str, out_csv, threads: int = 1, device_preference: str = "auto"):
    """Write per-image probabilities for one cached split: image_id, patient_id, label_<P>, prob_<P>."""
    import torch

    torch.set_num_threads(max(1, threads))
    device = select_device(device_preference)
    model, meta = load_trained_model(model_path, device)
    pathologies = meta["pathologies"]
    batches = CacheBatches(cache_dir, split, pathologies, batch_size=128, pin_memory=device.type == "cuda",
                           normalization=meta.get("normalization"))
    if int(batches.images.shape[-1]) != meta["image_size"]:
        raise ValueError(f"{cache_dir}: cache image size {batches.images.shape[-1]} != model's {meta['image_size']}")
    probs, _, _ = predict_batches(model, batches, device) if len(batches.index) else (np.zeros((0, len(pathologies))),) * 3
    frame = batches.index[["image_id", "patient_id"]].copy()
    for j, p in enumerate(pathologies):
        frame[f"label_{p}"] = eval_labels(batches.index[p].to_numpy(dtype=float))  # uncertain -> unknown
        frame[f"prob_{p}"] = probs[:, j]
    write_csv(out_csv, frame)
    return frame
