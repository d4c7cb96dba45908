"""The model zoo: every registered model builds and trains a step; grayscale adaptation is exact;
weights come from local files or torchvision's weights API with an actionable offline error."""

import urllib.error

import pytest
import torch

from xraypipe.models import MODELS, build_model, load_weights

torch.set_num_threads(1)
SMALLER = {"dense_baseline": {"resize_to": 32}}  # its study size flattens 512 x 512 pixels (134 M weights)


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_builds_runs_and_backpropagates(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=3, in_channels=1, **SMALLER.get(name, {}))
    x = torch.randn(2, 1, 64, 64)
    out = model(x)
    assert out.shape == (2, 3)
    out.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)


def _save_rgb_state(tmp_path, builder_name, **kwargs):
    import torchvision.models as tvm

    torch.manual_seed(1)
    model = getattr(tvm, builder_name)(weights=None, **kwargs)
    path = tmp_path / f"{builder_name}.pt"
    torch.save(model.state_dict(), path)
    return model, path


@pytest.mark.parametrize("name,first_conv,head", [("resnet18", "conv1", "fc"),
                                                  ("densenet121", "features.conv0", "classifier")])
def test_adapted_first_conv_equals_replicating_gray_to_rgb(tmp_path, name, first_conv, head):
    rgb, path = _save_rgb_state(tmp_path, name)
    adapted = build_model(name, num_classes=2, weights=str(path), input_mode="adapt").eval()
    replicated = build_model(name, num_classes=2, weights=str(path), input_mode="replicate").eval()
    conv = adapted.get_submodule(first_conv)
    assert conv.in_channels == 1
    torch.testing.assert_close(conv.weight, rgb.get_submodule(first_conv).weight.sum(dim=1, keepdim=True))
    # same head in both, then a gray image gives the same logits either way
    replicated[1].get_submodule(head).load_state_dict(adapted.get_submodule(head).state_dict())
    x = torch.rand(2, 1, 64, 64)
    torch.testing.assert_close(adapted(x), replicated(x), rtol=1e-4, atol=1e-5)


def test_vgg16_partial_takes_the_first_vgg16_convs_and_has_a_two_way_head(tmp_path):
    rgb, path = _save_rgb_state(tmp_path, "vgg16")
    model = build_model("vgg16_partial", num_classes=1, weights=str(path), vgg_layers=10)
    convs = [m for m in model[0].modules() if isinstance(m, torch.nn.Conv2d)]
    rgb_convs = [m for m in rgb.features if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 4  # blocks 1-2 of VGG16
    torch.testing.assert_close(convs[0].weight, rgb_convs[0].weight.sum(dim=1, keepdim=True))
    for a, b in zip(convs[1:], rgb_convs[1:4], strict=True):
        torch.testing.assert_close(a.weight, b.weight)
    depthwise = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert depthwise and all(m.groups == m.in_channels for m in depthwise)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    two_way = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    assert two_way.out_features == 2
    # the logit is the difference of the two-way outputs: sigmoid(l1 - l0) == softmax([l0, l1])[1]
    model.eval()
    x = torch.rand(3, 1, 64, 64)
    pre_head = torch.nn.Sequential(*list(model.children())[:-1])
    pair = pre_head(x)
    torch.testing.assert_close(torch.sigmoid(model(x)[:, 0]), torch.softmax(pair, dim=1)[:, 1])


def test_vgg16_partial_as_the_pediatric_pneumonia_study_writes_it():
    """conv1_1-conv2_2, two blocks of three depthwise-separable 3x3 convolutions (256, then 512) with batch norm and a
    max-pool, flatten (14 x 14 at 224 px), Dense 1024 -> dropout 0.7 -> Dense 512 -> dropout 0.5 -> 2-way."""
    model = build_model("vgg16_partial", num_classes=1, vgg_layers=10, separable=[256, 512], convs_per_block=3,
                        hidden=[1024, 512], dropout=[0.7, 0.5], pooling="flatten")
    blocks = list(model.children())[1:]
    depthwise = [m for m in blocks if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    pointwise = [m.out_channels for m in blocks if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1)]
    assert len(depthwise) == 6 and all(m.kernel_size == (3, 3) for m in depthwise)
    assert pointwise == [256] * 3 + [512] * 3
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in blocks) == 6
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in blocks) == 2
    linears = [m for m in blocks if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512 * 14 * 14, 1024), (1024, 512), (512, 2)]
    assert [m.p for m in blocks if isinstance(m, torch.nn.Dropout)] == [0.7, 0.5]
    # at 224 px the flattened map is the last block's own 14 x 14 grid (the pool before the flatten is an identity)
    trunk = torch.nn.Sequential(*list(model.children())[:-10]).eval()  # up to the last max-pool
    with torch.no_grad():
        assert trunk(torch.zeros(1, 1, 224, 224)).shape[-2:] == (14, 14)
    assert model.eval()(torch.zeros(2, 1, 64, 64)).shape == (2, 1)
    with pytest.raises(ValueError, match="dropout rate"):
        build_model("vgg16_partial", num_classes=1, hidden=[1024, 512], dropout=[0.7])


def _layers(model, kind):
    return [m for m in model.modules() if isinstance(m, kind)]


@pytest.mark.parametrize("name,size,filters,kernels,pools,hidden,regularisation", [
    ("conv2", 512, [2, 4, 8], [3, 5, 7], [2, 2, 2], 32, "dropout"),
    ("conv3", 224, [2, 2, 4, 4, 8], [3, 3, 5, 5, 7], [2, 2, 2, 2, 4], 64, "dropout"),  # the study's section 5.2.2
    ("conv4", 224, [8, 16, 32, 64, 128], [3] * 5, [2, 2, 2, 2, 4], 64, "batchnorm"),
])
def test_convn_as_the_mura_study_writes_them(name, size, filters, kernels, pools, hidden, regularisation):
    from xraypipe.model_layers import CappedMaxPool2d

    model = build_model(name, num_classes=1).eval()
    convs = _layers(model, torch.nn.Conv2d)
    assert [m.out_channels for m in convs] == filters and [m.kernel_size[0] for m in convs] == kernels
    assert [m.kernel for m in _layers(model, CappedMaxPool2d)] == pools
    assert bool(_layers(model, torch.nn.BatchNorm2d)) == (regularisation == "batchnorm")
    block_dropouts = len(_layers(model, torch.nn.Dropout)) - 1  # the hidden dense layer's dropout
    assert block_dropouts == (len(filters) if regularisation == "dropout" else 0)
    linears = _layers(model, torch.nn.Linear)
    # flatten of the last block's own map at the study's size (the pool before the flatten is an identity there)
    grid = size
    for p in pools:
        grid //= p
    assert [(m.in_features, m.out_features) for m in linears] == [(filters[-1] * grid * grid, hidden), (hidden, 1)]
    trunk = torch.nn.Sequential(*list(model.children())[:-6])  # up to the adaptive pool
    with torch.no_grad():
        assert trunk(torch.zeros(1, 1, size, size)).shape[-2:] == (grid, grid)
        assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 1)  # a small input pools whole where a pool is larger
    with pytest.raises(ValueError, match="regularization"):
        build_model(name, num_classes=1, regularization="both")


def test_dense_baseline_flattens_the_512_px_image_into_512_64_32_1():
    model = build_model("dense_baseline", num_classes=1)
    assert [(m.in_features, m.out_features) for m in _layers(model, torch.nn.Linear)] == [
        (512 * 512, 512), (512, 64), (64, 32), (32, 1)]
    assert len(_layers(model, torch.nn.Dropout)) == 3


def test_input_size_resamples_every_input_to_the_networks_design_size():
    torch.manual_seed(0)
    wrapped = build_model("conv3", num_classes=1, input_size=224).eval()
    plain = build_model("conv3", num_classes=1).eval()
    plain.load_state_dict(wrapped.net.state_dict())
    x = torch.rand(2, 1, 512, 512)
    seen = []
    handle = wrapped.net[0].register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape[-2:])))
    with torch.no_grad():
        out = wrapped(x)
        expected = plain(torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False,
                                                          antialias=True))
        same = torch.rand(1, 1, 224, 224)
        torch.testing.assert_close(wrapped(same), plain(same))  # an input at the size is passed as it is
    handle.remove()
    assert seen[0] == (224, 224)
    torch.testing.assert_close(out, expected)


def test_vgg_like_has_two_2048_unit_layers_and_one_input_channel():
    model = build_model("vgg_like", num_classes=4)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [2048, 2048, 4]
    assert next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d)).in_channels == 1


def test_local_weights_roundtrip_for_own_models(tmp_path):
    a = build_model("small_cnn", num_classes=2)
    path = tmp_path / "small.pt"
    torch.save(a.state_dict(), path)
    b = build_model("small_cnn", num_classes=2, weights=str(path))
    for k, v in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[k], v)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        build_model("small_cnn", num_classes=2, weights=str(tmp_path / "missing.pt"))


def test_weights_that_do_not_fit_are_refused(tmp_path):
    _, path = _save_rgb_state(tmp_path, "resnet34")
    with pytest.raises(ValueError, match="do not fit resnet18"):
        build_model("resnet18", num_classes=2, weights=str(path))


def test_offline_torchvision_weights_error_says_how_to_prefetch(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError) as err:
        load_weights("IMAGENET1K_V1", "densenet121")
    msg = str(err.value)
    assert "get_model_weights" in msg and "'densenet121'" in msg and "hub/checkpoints" in msg and ".pt file" in msg
    with pytest.raises(ValueError, match="unknown weights 'IMAGENET9'"):
        load_weights("IMAGENET9", "resnet18")


def test_unknown_input_mode():
    with pytest.raises(ValueError, match="input_mode"):
        build_model("resnet18", num_classes=1, input_mode="rgb")
