"""Model registry. Builders import torch lazily so that config validation stays fast.

Every builder takes ``num_classes``, ``in_channels`` (1 for the cached grayscale tensors) and ``weights``
and returns an ``nn.Module`` mapping (B, in_channels, S, S) to (B, num_classes) logits (one sigmoid logit
per label; a 2-way softmax head is expressed as its logit difference, which is the same model).

Grayscale input for networks designed for RGB (``input_mode`` in ``model_args``):
- ``adapt`` (default): the first convolution takes 1 channel; pretrained RGB filters are summed, which gives
  exactly the response the RGB network has to a gray image replicated to three channels;
- ``replicate``: the gray channel is repeated to RGB in front of the unchanged network.

The zoo covers the five studies: ResNet-18 (the ChestX-ray8 and NIH localization studies), DenseNet-121 with
CheXNet's single linear head (the CheXpert study), DenseNet-169, the flatten+dense baseline and Conv2/Conv3/Conv4
(the MURA study), the simple 2-conv CNN and the VGG-like 1-channel network (the ChestX-ray8 study), VGG16-partial
transfer (the pediatric pneumonia study), and a small GAP CNN.
"""

from __future__ import annotations

from pathlib import Path

from xraypipe.registry import Registry

MODELS: Registry = Registry("model")

INPUT_MODES = ("adapt", "replicate")


def _nn():
    import torch.nn as nn

    return nn


# --------------------------------------------------------------------------------------------- helpers
def _adapt_first_conv(conv, in_channels: int):
    """A copy of ``conv`` taking ``in_channels`` inputs; RGB filters summed (1 channel) or averaged (others)."""
    import torch

    nn = _nn()
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, conv.bias is not None)
    with torch.no_grad():
        if in_channels == 1:
            new.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
        else:
            new.weight.copy_(conv.weight.mean(dim=1, keepdim=True).repeat(1, in_channels, 1, 1))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def _replicate_channels(channels: int = 3):
    """A module repeating a 1-channel input to ``channels`` (gray -> RGB) in front of an RGB network."""
    nn = _nn()

    class ReplicateChannels(nn.Module):
        def forward(self, x):
            return x.expand(-1, channels, -1, -1) if x.shape[1] == 1 else x

    return ReplicateChannels()


def _gray_input(model, first_conv_path: str, in_channels: int, input_mode: str, pretrained: bool = True):
    """Apply the configured grayscale handling to a torchvision RGB network (after its weights are loaded).

    Without pretrained weights the adapted convolution is freshly initialised (He/Kaiming, as torchvision
    does) instead of summing three random filters, which would triple the initial variance.
    """
    nn = _nn()
    if input_mode not in INPUT_MODES:
        raise ValueError(f"unknown input_mode {input_mode!r}; use one of {INPUT_MODES}")
    if in_channels == 3:
        return model
    if input_mode == "replicate":
        if in_channels != 1:
            raise ValueError("input_mode 'replicate' needs 1-channel input")
        return nn.Sequential(_replicate_channels(3), model)
    parent = model
    *path, last = first_conv_path.split(".")
    for name in path:
        parent = getattr(parent, name)
    conv = _adapt_first_conv(getattr(parent, last), in_channels)
    if not pretrained:
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    setattr(parent, last, conv)
    return model


def _torchvision_backbone(builder, tv_name: str, num_classes: int, in_channels: int, weights, first_conv: str,
                          head: str, input_mode: str = "adapt", **kwargs):
    """Build a torchvision classifier, load RGB weights (if any), replace the head, adapt the input."""
    nn = _nn()
    model = builder(weights=None, **kwargs)
    if weights:
        state = load_weights(weights, model_name=tv_name)
        missing, unexpected = model.load_state_dict(state, strict=False)
        head_keys = [k for k in missing if k.startswith(head + ".")]
        if set(missing) - set(head_keys) or unexpected:
            raise ValueError(f"weights {weights!r} do not fit {tv_name}: missing {sorted(set(missing) - set(head_keys))[:5]}, "
                             f"unexpected {list(unexpected)[:5]}")
    old_head = getattr(model, head)
    setattr(model, head, nn.Linear(old_head.in_features, num_classes))
    return _gray_input(model, first_conv, in_channels, input_mode, pretrained=bool(weights))


# --------------------------------------------------------------------------------------------- torchvision zoo
@MODELS.register("resnet18")
def build_resnet18(num_classes: int, in_channels: int = 1, weights: str | None = None, input_mode: str = "adapt"):
    """ResNet-18 (the ChestX-ray8 and NIH localization studies); single linear head."""
    from torchvision.models import resnet18

    return _torchvision_backbone(resnet18, "resnet18", num_classes, in_channels, weights, "conv1", "fc", input_mode)


@MODELS.register("densenet121")
def build_densenet121(num_classes: int, in_channels: int = 1, weights: str | None = None, input_mode: str = "adapt"):
    """DenseNet-121 with CheXNet's head: the classifier replaced by one linear layer (sigmoid in the loss)."""
    from torchvision.models import densenet121

    return _torchvision_backbone(densenet121, "densenet121", num_classes, in_channels, weights, "features.conv0",
                                 "classifier", input_mode)


@MODELS.register("densenet169")
def build_densenet169(num_classes: int, in_channels: int = 1, weights: str | None = None, input_mode: str = "adapt"):
    """DenseNet-169, the MURA baseline (Rajpurkar et al.), single linear head."""
    from torchvision.models import densenet169

    return _torchvision_backbone(densenet169, "densenet169", num_classes, in_channels, weights, "features.conv0",
                                 "classifier", input_mode)


# --------------------------------------------------------------------------------------------- small nets
def _conv_bn_relu(nn, cin, cout, kernel=3, batchnorm=True):
    layers = [nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=not batchnorm)]
    if batchnorm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ReLU(inplace=True))
    return layers


@MODELS.register("small_cnn")
def build_small_cnn(num_classes: int, in_channels: int = 1, weights: str | None = None, widths=(16, 32, 64, 128),
                    dropout: float = 0.2, stem: int = 0):
    """Four conv-BN-ReLU-maxpool blocks, global average pooling and one linear layer (CAM-compatible).

    ``stem`` > 0 puts one stride-2 conv-BN-ReLU with that many channels first: it halves the resolution the
    blocks see, which makes 128-224 px inputs affordable on a CPU (the full-resolution convs dominate the cost).
    """
    nn = _nn()
    layers, channels = [], in_channels
    if stem:
        layers += [nn.Conv2d(channels, stem, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(stem),
                   nn.ReLU(inplace=True)]
        channels = stem
    for width in widths:
        layers += _conv_bn_relu(nn, channels, width) + _conv_bn_relu(nn, width, width) + [nn.MaxPool2d(2)]
        channels = width
    model = nn.Sequential(
        *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, num_classes))
    return _maybe_load(model, weights, "small_cnn")


@MODELS.register("simple_cnn")
def build_simple_cnn(num_classes: int, in_channels: int = 1, weights: str | None = None, filters=(32, 64),
                     hidden: int = 128, dropout: float = 0.5, pool_to: int = 8):
    """The ChestX-ray8 study's simple CNN: two conv+ReLU+max-pool layers, a dense layer with dropout, the output layer.

    The feature map is average-pooled to ``pool_to`` x ``pool_to`` before flattening so that the network
    works at any input size.
    """
    nn = _nn()
    layers, channels = [], in_channels
    for f in filters:
        layers += [nn.Conv2d(channels, f, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        channels = f
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(pool_to), nn.Flatten(),
                          nn.Linear(channels * pool_to * pool_to, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                          nn.Linear(hidden, num_classes))
    return _maybe_load(model, weights, "simple_cnn")


@MODELS.register("vgg_like")
def build_vgg_like(num_classes: int, in_channels: int = 1, weights: str | None = None,
                   blocks=((64, 64), (128, 128), (256, 256, 256), (512, 512, 512)), fc_units: int = 2048,
                   dropout: float = 0.5, batchnorm: bool = True, pool_to: int = 2):
    """The ChestX-ray8 study's VGG-like 1-channel network: VGG16's conv blocks (the last one trimmed by default) on a
    1-channel input, then two ``fc_units`` (2048) fully connected layers with dropout."""
    nn = _nn()
    layers, channels = [], in_channels
    for block in blocks:
        for width in block:
            layers += _conv_bn_relu(nn, channels, width, batchnorm=batchnorm)
            channels = width
        layers.append(nn.MaxPool2d(2))
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(pool_to), nn.Flatten(),
                          nn.Linear(channels * pool_to * pool_to, fc_units), nn.ReLU(inplace=True), nn.Dropout(dropout),
                          nn.Linear(fc_units, fc_units), nn.ReLU(inplace=True), nn.Dropout(dropout),
                          nn.Linear(fc_units, num_classes))
    return _maybe_load(model, weights, "vgg_like")


@MODELS.register("dense_baseline")
def build_dense_baseline(num_classes: int, in_channels: int = 1, weights: str | None = None, resize_to: int = 512,
                         hidden=(512, 64, 32), dropout: float = 0.5):
    """The MURA study's flatten + dense baseline (its section 5.1): the 512 x 512 image flattened, dense layers of
    512, 64 and 32 units (ReLU, each followed by dropout), one output. ``resize_to``: the grid the image is
    average-pooled to before flattening (an identity at the study's 512 px; smaller in tests)."""
    nn = _nn()
    layers, width = [nn.AdaptiveAvgPool2d(int(resize_to)), nn.Flatten()], in_channels * int(resize_to) ** 2
    for units in hidden:
        layers += [nn.Linear(width, int(units)), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        width = int(units)
    model = nn.Sequential(*layers, nn.Linear(width, num_classes))
    return _maybe_load(model, weights, "dense_baseline")


# The MURA study's ConvN networks (its section 5.2), per block (filters, kernel, pool), then flatten, one hidden
# dense layer with dropout and the output. Conv3 is given in full by the study; Conv2 and Conv4 only in outline
# (what the report leaves open is chosen as its description implies and can be overridden in model_args):
# - conv2: "three blocks" of conv / pool / dropout at 512 px, "fewer filters and a small kernel first, then
#   gradually increased" (here Conv3's own progression, 2 -> 4 -> 8 filters, kernels 3 -> 5 -> 7, pools 2), Dense 32;
# - conv3: filters (2, 2, 4, 4, 8), kernels (3, 3, 5, 5, 7), pools (2, 2, 2, 2, 4), dropout blocks, Dense 64, 224 px;
# - conv4: Conv3's five blocks and pools with batch norm instead of dropout, one kernel size (3) and filters
#   rising "with a steeper curve" (doubling: 8 -> 128), Dense 64, 224 px.
# flatten_grid: the last block's map at the study's input size (512 / 8 = 64; 224 / 64 = 3); other input sizes
# are average-pooled to that grid, so the dense layer keeps the study's shape.
CONVN_PRESETS = {
    "conv2": {"filters": (2, 4, 8), "kernels": (3, 5, 7), "pools": (2, 2, 2), "regularization": "dropout",
              "hidden": 32, "flatten_grid": 64},
    "conv3": {"filters": (2, 2, 4, 4, 8), "kernels": (3, 3, 5, 5, 7), "pools": (2, 2, 2, 2, 4),
              "regularization": "dropout", "hidden": 64, "flatten_grid": 3},
    "conv4": {"filters": (8, 16, 32, 64, 128), "kernels": (3, 3, 3, 3, 3), "pools": (2, 2, 2, 2, 4),
              "regularization": "batchnorm", "hidden": 64, "flatten_grid": 3},
}


def build_convn(num_classes: int, in_channels: int = 1, weights: str | None = None, *, filters, kernels, pools,
                regularization: str = "dropout", dropout: float = 0.25, hidden: int = 64, dense_dropout: float = 0.5,
                flatten_grid: int = 3, name: str = "convN"):
    """Blocks of conv + ReLU + max-pool followed by dropout (``dropout``) or with batch norm after the conv
    (``batchnorm``), the map average-pooled to ``flatten_grid`` (an identity at the design size) and flattened, a
    dense layer of ``hidden`` units with dropout ``dense_dropout``, and the output. A pool larger than the map
    (a small test input) pools the whole map."""
    from xraypipe.model_layers import CappedMaxPool2d

    nn = _nn()
    if not (len(filters) == len(kernels) == len(pools)):
        raise ValueError(f"{name}: filters, kernels and pools need one entry per block")
    if regularization not in ("batchnorm", "dropout"):
        raise ValueError(f"{name}: regularization must be 'batchnorm' or 'dropout', not {regularization!r}")
    layers, channels = [], in_channels
    for f, k, p in zip(filters, kernels, pools, strict=True):
        layers += _conv_bn_relu(nn, channels, int(f), int(k), batchnorm=regularization == "batchnorm")
        layers.append(CappedMaxPool2d(int(p)))
        if regularization == "dropout":
            layers.append(nn.Dropout(dropout))
        channels = int(f)
    grid = int(flatten_grid)
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(grid), nn.Flatten(), nn.Linear(channels * grid * grid, hidden),
                          nn.ReLU(inplace=True), nn.Dropout(dense_dropout), nn.Linear(hidden, num_classes))
    return _maybe_load(model, weights, name)


def _register_convn(preset: str):
    def builder(num_classes: int, in_channels: int = 1, weights: str | None = None, **overrides):
        args = {**CONVN_PRESETS[preset], **overrides}
        return build_convn(num_classes, in_channels, weights, name=preset, **args)

    builder.__doc__ = f"The MURA study's {preset.capitalize()}: {CONVN_PRESETS[preset]} (override any in model_args)."
    MODELS.register(preset)(builder)


for _preset in CONVN_PRESETS:
    _register_convn(_preset)


@MODELS.register("vgg16_partial")
def build_vgg16_partial(num_classes: int, in_channels: int = 1, weights: str | None = None, vgg_layers: int = 10,
                        separable=(256, 512), convs_per_block: int = 1, hidden=256, dropout=0.5,
                        pooling: str = "global", flatten_grid: int = 14, input_mode: str = "adapt",
                        two_way_head: bool = True):
    """The pediatric pneumonia study's VGG16-partial transfer network.

    The first ``vgg_layers`` modules of torchvision's VGG16 ``features`` (10 = blocks 1-2 with their pool: conv1_1
    to conv2_2, initialised from ``weights``, e.g. IMAGENET1K_V1), then one block per ``separable`` width of
    ``convs_per_block`` depthwise-separable 3 x 3 convolutions (each with batch norm and ReLU) and a 2 x 2 max-pool;
    then ``pooling`` ``flatten`` (the study: the feature map flattened; it is ``flatten_grid`` x ``flatten_grid``,
    14 at 224 px, and other input sizes are average-pooled to that grid) or ``global`` (average), dense layers of ``hidden`` units (an int or a
    list, e.g. [1024, 512]) each followed by dropout (``dropout``: one rate or one per layer, e.g. [0.7, 0.5]),
    and a 2-way output. The 2-way softmax output is returned as the logit difference l1 - l0 per label, so BCE on
    it equals cross-entropy on the two-unit softmax.
    """
    from torchvision.models import vgg16

    nn = _nn()
    base = vgg16(weights=None)
    if weights:
        state = load_weights(weights, model_name="vgg16")
        feature_state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        if not feature_state:
            raise ValueError(f"weights {weights!r} hold no VGG16 'features.*' tensors")
        base.features.load_state_dict(feature_state)
    features = nn.Sequential(*list(base.features.children())[:vgg_layers])
    channels = [m for m in features if isinstance(m, nn.Conv2d)][-1].out_channels
    features = _gray_input(features, "0", in_channels, input_mode, pretrained=bool(weights))
    blocks = []
    for width in separable:
        for _ in range(int(convs_per_block)):
            blocks += [nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),  # depthwise
                       nn.Conv2d(channels, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            channels = width
        blocks.append(nn.MaxPool2d(2))
    out_units = 2 * num_classes if two_way_head else num_classes
    widths = [int(hidden)] if isinstance(hidden, (int, float)) else [int(h) for h in hidden]
    rates = [float(dropout)] * len(widths) if isinstance(dropout, (int, float)) else [float(r) for r in dropout]
    if len(rates) != len(widths):
        raise ValueError(f"vgg16_partial: {len(widths)} hidden layer(s) {widths} but {len(rates)} dropout rate(s)")

    class TwoWayToLogit(nn.Module):
        def forward(self, x):
            pairs = x.view(x.shape[0], -1, 2)
            return pairs[..., 1] - pairs[..., 0]

    if pooling == "global":
        head = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    elif pooling == "flatten":
        head = [nn.AdaptiveAvgPool2d(int(flatten_grid)), nn.Flatten()]  # an identity at 224 px
        channels = channels * int(flatten_grid) ** 2
    else:
        raise ValueError(f"vgg16_partial: pooling {pooling!r}; choose global or flatten")
    for width, rate in zip(widths, rates):
        head += [nn.Linear(channels, width), nn.ReLU(inplace=True), nn.Dropout(rate)]
        channels = width
    head.append(nn.Linear(channels, out_units))
    if two_way_head:
        head.append(TwoWayToLogit())
    return nn.Sequential(features, *blocks, *head)


def _maybe_load(model, weights, name):
    if weights:
        model.load_state_dict(load_weights(weights, model_name=name))
    return model


# --------------------------------------------------------------------------------------------- weights
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
            f"could not fetch {model_name} weights {weights} ({type(exc).__name__}: {exc}). Offline? On a machine "
            f"with network access run\n"
            f"  python -c \"from torchvision.models import get_model_weights as g; g('{model_name}')['{weights}'].get_state_dict()\"\n"
            f"and copy $TORCH_HOME/hub/checkpoints (default ~/.cache/torch/hub/checkpoints) to this machine, "
            f"or save the state dict to a .pt file and set weights: to its path.") from None


def build_model(name: str, num_classes: int, in_channels: int = 1, weights: str | None = None,
                input_size: int | None = None, **model_args):
    """The registered model ``name``; ``input_size`` (a ``model_args`` key of any model): the network is wrapped
    so that every input is resampled (bilinear, antialiased) to ``input_size`` x ``input_size`` first -- a model
    designed for 224 px trains on a 512-px cache, and the model file carries the resampling with it."""
    model = MODELS.get(name)(num_classes=num_classes, in_channels=in_channels, weights=weights, **model_args)
    if input_size is None:
        return model
    from xraypipe.model_layers import ResampledInput

    return ResampledInput(model, int(input_size))


# ------------------------------------------------------------------------------------------------ initialisation
INITS = ("default", "xavier")


def apply_init(model, init: str, weights=None) -> bool | None:
    """``variants.<v>.init`` on a freshly built model: ``xavier`` re-initialises a model trained from scratch
    (returns True); a model built from pretrained ``weights`` is left untouched (returns False); ``default``
    keeps the builders' own initialisation (returns None)."""
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose one of {', '.join(INITS)}")
    if init == "default":
        return None
    if weights:
        return False
    xavier_init(model)
    return True


def xavier_init(model) -> int:
    """Xavier (Glorot) uniform weights and zero biases for every Conv and Linear layer of ``model``; batch-norm
    layers keep their defaults. Returns the number of layers initialised."""
    import torch.nn as nn

    count = 0
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
            count += 1
    return count
