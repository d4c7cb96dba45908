"""Standardisation options (variants.<v>.normalization) and Xavier initialisation (variants.<v>.init)."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from xraypipe.config import ConfigError, validate_config
from xraypipe.data import CacheBatches
from xraypipe.models import apply_init
from xraypipe.standardize import (IMAGENET_GRAY, STD_FLOOR, Normalization, load_pixel_stats, pixel_stats,
                                  write_pixel_stats)

PATHOLOGIES = ["Mass", "Effusion"]


def _bright_images(n=37, size=9, seed=0):
    """uint8 images near 255 (where a float32 E[x^2] - E[x]^2 cancels catastrophically) with a constant
    black border (padding: std 0)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(246, 256, size=(n, size, size), dtype=np.uint8)
    images[:, :, :2] = 0
    return images


@pytest.mark.parametrize("chunk_rows", [1, 5, 8, 37, 100])
def test_streamed_pixel_stats_equal_numpy(chunk_rows):
    images = _bright_images()
    mean, std, count = pixel_stats(images, chunk_rows=chunk_rows)  # 37 rows: 5 and 8 do not divide it
    x = images.astype(np.float64)
    assert count == 37
    np.testing.assert_allclose(mean, x.mean(0), rtol=0, atol=1e-10)
    np.testing.assert_allclose(std, x.std(0), rtol=0, atol=1e-9)
    assert np.all(std[:, :2] == 0)


def test_naive_float32_moments_would_fail_the_same_check():
    """The check above is tight enough to catch the naive method the streamed one replaces."""
    images = _bright_images(n=4000, seed=1)
    x32 = images.astype(np.float32)
    naive_var = (x32 * x32).mean(0, dtype=np.float32) - x32.mean(0, dtype=np.float32) ** 2
    naive_std = np.sqrt(np.maximum(naive_var, 0))
    exact = images.astype(np.float64).std(0)
    assert np.abs(naive_std - exact).max() > 1e-3
    _, std, _ = pixel_stats(images, chunk_rows=333)
    assert np.abs(std - exact).max() < 1e-9


def _cache(path, n=(37, 11, 7), size=9):
    rng = np.random.default_rng(2)
    path.mkdir(parents=True, exist_ok=True)
    rows = []
    for split, count in zip(("train", "val", "test"), n):
        images = rng.integers(0, 256, size=(count, size, size), dtype=np.uint8)
        images[:, :, :2] = 0  # padding
        np.save(path / f"{split}.npy", images)
        for i in range(count):
            rows.append({"cache_row": i, "image_id": f"{split}{i}", "path": "", "patient_id": f"{split}{i}",
                         "follow_up": 0, "view": "PA", "sex": "F", "age": 40, "official_split": "", "split": split,
                         "Mass": float(rng.integers(0, 2)), "Effusion": float(rng.integers(0, 2))})
    pd.DataFrame(rows).to_csv(path / "index.csv", index=False)
    return path


def test_pixel_stats_file_and_loader_apply_them(tmp_path):
    cache = _cache(tmp_path / "cache")
    out = cache / "pixel_stats.npz"
    write_pixel_stats(cache, out, chunk_rows=4)
    assert not list(cache.glob("*.tmp*")), "no temporary file may be left behind"
    stats = load_pixel_stats(out)
    train = np.load(cache / "train.npy").astype(np.float64) / 255
    np.testing.assert_allclose(stats["mean"], train.mean(0), atol=1e-6)
    np.testing.assert_allclose(stats["std"], train.std(0), atol=1e-6)
    assert int(stats["count"]) == 37 and str(stats["split"]) == "train"

    norm = Normalization.for_variant("per_pixel", out)
    batches = CacheBatches(cache, "val", PATHOLOGIES, batch_size=4, normalization=norm)
    val = np.load(cache / "val.npy").astype(np.float64) / 255
    expected = (val - train.mean(0)) / np.maximum(train.std(0), STD_FLOOR)
    got = np.concatenate([x[:, 0].numpy() for x, _, _, _ in batches])
    np.testing.assert_allclose(got, expected, atol=2e-5)
    assert np.all(got[:, :, :2] == 0)  # constant padding: floored std, mapped to 0, never inf/nan
    # the same from the model file's metadata (what predict/Grad-CAM receive)
    again = CacheBatches(cache, "val", PATHOLOGIES, batch_size=4, normalization=norm.to_meta())
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again))


def test_mean_image_subtracts_the_training_mean_image_only(tmp_path):
    cache = _cache(tmp_path / "cache")
    out = cache / "pixel_stats.npz"
    write_pixel_stats(cache, out, chunk_rows=4)
    norm = Normalization.for_variant("mean_image", out)
    train = np.load(cache / "train.npy").astype(np.float64) / 255
    val = np.load(cache / "val.npy").astype(np.float64) / 255
    for augment in (False, True):  # the compiled feed path and the augmented (torch) path
        batches = CacheBatches(cache, "val", PATHOLOGIES, batch_size=4, normalization=norm, augment=augment,
                               augment_args={"max_rotate_deg": 0.0, "max_shift": 0.0, "scale": (1.0, 1.0),
                                             "contrast": (1.0, 1.0), "brightness": 0.0} if augment else None)
        got = np.concatenate([x[:, 0].numpy() for x, _, _, _ in batches])
        np.testing.assert_allclose(got, val - train.mean(0), atol=2e-5)  # no division by the std image
    # the model file carries the mean image, and the same transform comes back from it
    meta = norm.to_meta()
    assert meta["method"] == "mean_image" and np.all(meta["std"] == 1.0)
    again = CacheBatches(cache, "val", PATHOLOGIES, batch_size=4, normalization=meta)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(CacheBatches(cache, "val", PATHOLOGIES, batch_size=4,
                                                                    normalization=norm), again))


def test_per_pixel_stats_of_another_size_are_refused(tmp_path):
    cache = _cache(tmp_path / "cache")
    norm = Normalization("per_pixel", np.zeros((4, 4)), np.ones((4, 4)), source="stats.npz")
    with pytest.raises(ValueError, match=r"stats.npz\) are 4x4 but the cached images of .* are 9x9"):
        CacheBatches(cache, "val", PATHOLOGIES, batch_size=4, normalization=norm)


def test_missing_stats_file_names_the_stage(tmp_path):
    with pytest.raises(FileNotFoundError, match="pixel_stats.npz: per-pixel statistics not found"):
        Normalization.for_variant("per_pixel", tmp_path / "pixel_stats.npz")


def test_imagenet_and_per_image(tmp_path):
    images = _bright_images(n=6)
    x = Normalization.for_variant("imagenet").apply(images)[:, 0].numpy()
    np.testing.assert_allclose(x, (images / 255 - IMAGENET_GRAY[0]) / IMAGENET_GRAY[1], atol=1e-5)
    y = Normalization.for_variant("per_image").apply(images)[:, 0].numpy().astype(np.float64)
    u = images / 255
    expected = (u - u.mean((1, 2), keepdims=True)) / np.maximum(u.std((1, 2), keepdims=True), STD_FLOOR)
    np.testing.assert_allclose(y, expected, atol=1e-4)
    flat = Normalization.for_variant("per_image").apply(np.full((2, 5, 5), 7, np.uint8))
    assert torch.isfinite(flat).all() and flat.abs().max() < 1e-4  # a constant image: no division by zero
    # with augmentation the transform runs on [0, 1] floats: same result
    unit = torch.from_numpy(images / 255).float().unsqueeze(1)
    torch.testing.assert_close(Normalization.for_variant("per_image").apply_unit(unit.clone())[:, 0],
                               torch.from_numpy(expected).float(), atol=1e-4, rtol=0)
    # a model file from before the option: {mean, std} only -> fixed
    old = Normalization.from_meta({"mean": 0.5, "std": 0.25})
    assert old.method == "fixed" and torch.equal(old.apply(images), Normalization().apply(images))


def test_config_options_validate():
    cfg = {"experiment": {"datasets": ["d"], "variants": ["v"]},
           "datasets": {"d": {"reader": "nih", "source": "synthetic"}},
           "variants": {"v": {"model": "small_cnn"}}}
    filled = validate_config(cfg)
    assert filled["variants"]["v"]["normalization"] == "fixed" and filled["variants"]["v"]["init"] == "default"
    cfg["variants"]["v"].update(normalization="per_pixel", init="xavier")
    assert validate_config(cfg)["variants"]["v"]["normalization"] == "per_pixel"
    cfg["variants"]["v"]["normalization"] = "zscore"
    with pytest.raises(ConfigError, match="normalization"):
        validate_config(cfg)


def _conv_linear(model):
    return [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]


@pytest.mark.parametrize("name,args", [("small_cnn", {"widths": [16, 32, 64, 128]}), ("resnet18", {})])
def test_xavier_init_sets_glorot_weights(name, args):
    from xraypipe.models import build_model

    torch.manual_seed(0)
    model = build_model(name, num_classes=3, **args)
    before = {id(m): m.weight.detach().std().item() for m in _conv_linear(model)}
    assert apply_init(model, "xavier", weights=None) is True
    differs = 0
    for layer in _conv_linear(model):
        w = layer.weight.detach()
        receptive = w[0, 0].numel() if w.dim() > 2 else 1
        fan_in, fan_out = w.shape[1] * receptive, w.shape[0] * receptive
        target = math.sqrt(2.0 / (fan_in + fan_out))
        bound = math.sqrt(6.0 / (fan_in + fan_out))  # uniform(-bound, bound)
        assert w.abs().max().item() <= bound + 1e-6
        if w.numel() >= 2000:
            assert w.std().item() == pytest.approx(target, rel=0.08), (type(layer).__name__, tuple(w.shape))
            differs += abs(before[id(layer)] - target) / target > 0.2
        if layer.bias is not None:
            assert torch.all(layer.bias == 0)
    assert differs > 0, "the default init already looked like Xavier: the test proves nothing"


def test_xavier_leaves_pretrained_and_default_models_untouched(tmp_path):
    from xraypipe.models import build_model

    torch.manual_seed(1)
    source = build_model("small_cnn", num_classes=2, widths=[8, 16])
    weights = tmp_path / "pretrained.pt"
    torch.save(source.state_dict(), weights)
    loaded = build_model("small_cnn", num_classes=2, weights=str(weights), widths=[8, 16])
    assert apply_init(loaded, "xavier", weights=str(weights)) is False
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert apply_init(loaded, "default", weights=None) is None
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in source.state_dict().items())
    with pytest.raises(ValueError, match="unknown init 'he'"):
        apply_init(loaded, "he")


def test_trained_model_carries_per_pixel_stats_into_prediction(tmp_path):
    """Train a tiny per_pixel model: its file stores the statistics, and predict_split / xraypipe-predict's
    predict_images / Grad-CAM all feed the model exactly the per-pixel-standardised input."""
    from xraypipe.localization import heatmaps
    from xraypipe.predict_cli import predict_images
    from test_train_resume import TRAINING, validated_variant
    from xraypipe.inference import load_trained_model, predict_split
    from xraypipe.train import train_variant

    torch.set_num_threads(1)
    cache = _cache(tmp_path / "cache", n=(24, 10, 6), size=16)
    write_pixel_stats(cache, cache / "pixel_stats.npz")
    variant = validated_variant({"model": "small_cnn", "epochs": 1, "batch_size": 8, "optimizer": "adam",
                                 "lr": 0.003, "weight_decay": 0.0, "loss": "bce", "augment": True, "seed": 0,
                                 "model_args": {"widths": [4, 8]}, "weights": None, "normalization": "per_pixel",
                                 "init": "xavier"})
    train_variant(cache_dir=cache, pathologies=PATHOLOGIES, variant=variant, training=TRAINING,
                  model_out=tmp_path / "model.pt", history_out=tmp_path / "history.csv",
                  checkpoint_path=tmp_path / "last.pt", progress=False)
    model, meta = load_trained_model(tmp_path / "model.pt")
    stats = load_pixel_stats(cache / "pixel_stats.npz")
    assert meta["normalization"]["method"] == "per_pixel"
    np.testing.assert_array_equal(meta["normalization"]["mean"], stats["mean"])

    test = np.load(cache / "test.npy")
    manual = torch.from_numpy(((test / 255 - stats["mean"]) / np.maximum(stats["std"], STD_FLOOR))
                              .astype(np.float32)).unsqueeze(1)
    with torch.inference_mode():
        expected = torch.sigmoid(model(manual)).numpy()
    frame = predict_split(model_path=tmp_path / "model.pt", cache_dir=cache, split="test", out_csv=tmp_path / "p.csv")
    np.testing.assert_allclose(frame[[f"prob_{p}" for p in PATHOLOGIES]].to_numpy(), expected, atol=1e-5)
    # fixed normalisation would give other probabilities: the comparison above is meaningful
    with torch.inference_mode():
        fixed = torch.sigmoid(model(Normalization().apply(test))).numpy()
    assert np.abs(fixed - expected).max() > 1e-4

    from PIL import Image
    png = tmp_path / "x.png"
    Image.fromarray(test[0]).save(png)
    (_, probs, _), = predict_images(model, meta, [png], {p: 0.5 for p in PATHOLOGIES})
    np.testing.assert_allclose([probs[p] for p in PATHOLOGIES], expected[0], atol=1e-5)

    maps = heatmaps(model, test[:2], [0, 1], normalization=meta["normalization"])
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from xraypipe.localization import cam_layers
    cam = GradCAM(model=model, target_layers=[cam_layers(model)[0]])
    reference = cam(input_tensor=manual[:2].clone(), targets=[ClassifierOutputTarget(0), ClassifierOutputTarget(1)])
    cam.activations_and_grads.release()
    np.testing.assert_allclose(maps, np.nan_to_num(reference), atol=1e-5)
