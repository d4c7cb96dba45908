"""Use a trained model: pick the device, load a model file written by ``xraypipe.train``, predict in batches.

A model file holds the best-by-validation weights and, for checkpoint (``ensemble_top_k``) or seed
(``ensemble_seeds``) ensembles, every member's weights; loading it gives one module whose sigmoid is the
prediction (an ensemble's mean probability, U-MultiClass's positive score). Everything that predicts (the predict
stage, cross-validation, localization, detection, ``xraypipe-predict``) and the trainer's own validation go
through here, so training and inference score a model the same way. This module never imports the trainer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xraypipe.atomic import write_csv
from xraypipe.data import CacheBatches
from xraypipe.encodings import eval_labels
from xraypipe.model_files import load_torch_file
from xraypipe.models import build_model


def select_device(preference: str = "auto"):
    import torch

    if preference == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("training.device is 'cuda' but no CUDA device is available")
    if preference in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


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
    if len(batches.index):
        probs, _, _ = predict_batches(model, batches, device)
    else:  # an empty split still gets its (header-only) file
        probs = np.zeros((0, len(pathologies)))
    frame = batches.index[["image_id", "patient_id"]].copy()
    for j, p in enumerate(pathologies):
        frame[f"label_{p}"] = eval_labels(batches.index[p].to_numpy(dtype=float))  # uncertain -> unknown
        frame[f"prob_{p}"] = probs[:, j]
    write_csv(out_csv, frame)
    return frame
