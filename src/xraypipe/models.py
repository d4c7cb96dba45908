"""Model registry. Builders import torch lazily so that config validation stays fast.

Every builder takes ``num_classes`` and ``in_channels`` (1 for the cached grayscale tensors) and
returns an ``nn.Module`` mapping (B, in_channels, S, S) to (B, num_classes) logits.
"""

from __future__ import annotations

from pathlib import Path

from xraypipe.registry import Registry

MODELS: Registry = Registry("model")


@MODELS.register("resnet18")
def build_resnet18(num_classes: int, in_channels: int = 1, weights: str | None = None, **kwargs):
    import torch
    from torchvision.models import resnet18

    model = resnet18(weights=None, num_classes=num_classes, **kwargs)
    if weights:
        state = load_weights(weights, model_name="resnet18")
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        rgb = state.get("conv1.weight")
        if rgb is not None and in_channels == 1:
            # grayscale: summing the RGB filters gives the same response as a gray image replicated to RGB
            state["conv1.weight"] = rgb.sum(dim=1, keepdim=True)
        elif rgb is not None and in_channels != 3:
            state["conv1.weight"] = rgb.mean(dim=1, keepdim=True).repeat(1, in_channels, 1, 1)
    if in_channels != 3:
        model.conv1 = torch.nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    if weights:
        missing, unexpected = model.load_state_dict(state, strict=False)
        bad = [k for k in missing if not k.startswith("fc.")]
        if bad or unexpected:
            raise ValueError(f"weights {weights!r} do not fit resnet18: missing {bad[:5]}, unexpected {unexpected[:5]}")
    return model


@MODELS.register("small_cnn")
def build_small_cnn(num_classes: int, in_channels: int = 1, weights: str | None = None, widths=(16, 32, 64, 128),
                    dropout: float = 0.2):
    """Four conv-BN-ReLU-maxpool blocks, global average pooling and one linear layer (CAM-compatible)."""
    import torch.nn as nn

    layers, channels = [], in_channels
    for width in widths:
        layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                   nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                   nn.MaxPool2d(2)]
        channels = width
    model = nn.Sequential(
        *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, num_classes))
    if weights:
        model.load_state_dict(load_weights(weights, model_name="small_cnn"))
    return model


def load_weights(weights: str, model_name: str) -> dict:
    """A state dict from a local file (``.pt``/``.pth``) or a torchvision weights name (e.g. IMAGENET1K_V1).

    torchvision names are downloaded into the torch hub cache on first use; offline, the error says how
    to pre-fetch them on a machine with network access.
    """
    import torch

    path = Path(weights)
    if path.suffix in (".pt", ".pth") or path.exists():
        if not path.exists():
            raise FileNotFoundError(f"weights file {weights!r} not found")
        state = torch.load(path, map_location="cpu", weights_only=True)
        return state.get("state_dict", state) if isinstance(state, dict) else state
    from torchvision.models import get_model_weights

    try:
        enum = get_model_weights(model_name)[weights]
    except (KeyError, ValueError):
        raise ValueError(f"unknown weights {weights!r} for {model_name}; use a local .pt file or a torchvision "
                         f"weights name such as IMAGENET1K_V1") from None
    try:
        return enum.get_state_dict(progress=False)
    except Exception as exc:  # network errors come in many types (URLError, socket errors, HTTP errors)
        raise RuntimeError(
            f"could not fetch {model_name} weights {weights} ({exc}). Offline? On a machine with network access run\n"
            f"  python -c \"from torchvision.models import get_model_weights as g; g('{model_name}')['{weights}'].get_state_dict()\"\n"
            f"and copy $TORCH_HOME/hub/checkpoints (default ~/.cache/torch/hub/checkpoints) here, "
            f"or save the state dict to a .pt file and set weights: to its path.") from None


def build_model(name: str, num_classes: int, in_channels: int = 1, weights: str | None = None, **model_args):
    return MODELS.get(name)(num_classes=num_classes, in_channels=in_channels, weights=weights, **model_args)
