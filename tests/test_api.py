"""The Python API (xraypipe.api, docs/api.md) on hand-made model files and caches: known probabilities, the calls
at the thresholds, the Dataset's images, labels and normalisation."""

import json
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import xraypipe
from xraypipe.api import CacheDataset, TrainedModel, load_model, predict_images
from xraypipe.model_files import save_torch_file
from xraypipe.models import build_model
from xraypipe.predict_cli import PredictError

PATHOLOGIES = ["Mass", "Effusion", "Nodule"]
P = [0.8, 0.3, 0.55]  # what the constant model predicts for any image


def _model_file(path, size=32, normalization=None, brightness_weight=0.0):
    """A small_cnn whose last layer ignores the features (weight 0) and whose bias is logit(P): it predicts P for
    any image. ``brightness_weight``: instead, Mass's logit grows with the image's mean pixel (through the features
    of a net whose convs are all identity-like positive filters)."""
    net = build_model("small_cnn", num_classes=len(PATHOLOGIES), in_channels=1, widths=[4, 8])
    with torch.no_grad():
        net[-1].weight.zero_()
        net[-1].bias.copy_(torch.logit(torch.tensor(P)))
        if brightness_weight:
            for m in net.modules():
                if isinstance(m, torch.nn.Conv2d):
                    m.weight.fill_(1.0 / m.weight[0].numel())
            net[-1].weight[0].fill_(brightness_weight)
            net[-1].bias[0] = 0.0
    meta = {"model": "small_cnn", "model_args": {"widths": [4, 8]}, "pathologies": PATHOLOGIES, "in_channels": 1,
            "image_size": size, "normalization": normalization or {"method": "fixed", "mean": 0.5, "std": 0.25}}
    save_torch_file({"state_dict": net.state_dict(), "metadata": meta}, path)
    return path


def _thresholds(path, values):
    path.write_text(json.dumps({"thresholds": dict(zip(PATHOLOGIES, values))}))


def test_load_model_knows_its_labels_size_and_thresholds(tmp_path):
    model_path = _model_file(tmp_path / "m" / "model.pt", size=24)
    bare = load_model(model_path)
    assert isinstance(bare, TrainedModel) and bare.pathologies == bare.labels == PATHOLOGIES
    assert bare.image_size == 24 and bare.thresholds is None and bare.normalization.method == "fixed"
    assert not bare.module.training and bare.device == torch.device("cpu")
    _thresholds(tmp_path / "m" / "thresholds.json", [0.5, 0.5, None])
    auto = load_model(model_path)  # thresholds.json beside the model is found
    assert auto.thresholds["Mass"] == 0.5 and np.isnan(auto.thresholds["Nodule"])
    given = load_model(model_path, thresholds={"Mass": 0.9, "Effusion": 0.1, "Nodule": 0.6})
    assert given.thresholds == {"Mass": 0.9, "Effusion": 0.1, "Nodule": 0.6}
    assert load_model(model_path, thresholds=None).thresholds is None
    assert "small_cnn" in repr(auto) and "3 labels" in repr(auto)
    assert xraypipe.load_model is load_model  # the lazy re-export


def test_load_model_errors_name_the_file(tmp_path):
    with pytest.raises(PredictError, match="missing.pt: model file not found"):
        load_model(tmp_path / "missing.pt")
    save_torch_file({"state_dict": {}, "fingerprint": "x"}, tmp_path / "last.pt")
    with pytest.raises(PredictError, match="resume checkpoint"):
        load_model(tmp_path / "last.pt")
    model_path = _model_file(tmp_path / "model.pt")
    with pytest.raises(PredictError, match="other.json: thresholds file not found"):
        load_model(model_path, thresholds=tmp_path / "other.json")
    with pytest.raises(PredictError, match="Nodule"):
        load_model(model_path, thresholds={"Mass": 0.5, "Effusion": 0.5})


def test_predict_images_gives_the_probabilities_and_calls(tmp_path):
    model_path = _model_file(tmp_path / "model.pt")
    _thresholds(tmp_path / "thresholds.json", [0.5, 0.5, None])
    model = load_model(model_path)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 40), dtype=np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (30, 30, 3), dtype=np.uint8)).save(tmp_path / "b.jpg")
    images = [tmp_path / "a.png", str(tmp_path / "b.jpg"), np.zeros((20, 28), np.uint8),
              np.linspace(0, 1, 400).reshape(20, 20), np.arange(900, dtype=np.uint16).reshape(30, 30),
              np.full((16, 16, 3), 90, np.uint8)]
    frame = predict_images(model, images, allow_color=True, batch_size=4)
    assert isinstance(frame, pd.DataFrame) and len(frame) == 6
    assert list(frame.columns) == ["image", *(f"prob_{p}" for p in PATHOLOGIES),
                                   *(f"positive_{p}" for p in PATHOLOGIES)]
    assert frame["image"].tolist() == [str(tmp_path / "a.png"), str(tmp_path / "b.jpg"), "array[2]", "array[3]",
                                       "array[4]", "array[5]"]
    np.testing.assert_allclose(frame[[f"prob_{p}" for p in PATHOLOGIES]].to_numpy(), np.tile(P, (6, 1)), atol=1e-6)
    assert frame["positive_Mass"].all() and not frame["positive_Effusion"].any()
    assert not frame["positive_Nodule"].any()  # NaN threshold: never positive
    # the model's own call, a single path, a N x H x W stack; no thresholds: probabilities only
    assert model(tmp_path / "a.png")["prob_Mass"].iloc[0] == pytest.approx(0.8, abs=1e-6)
    bare = load_model(model_path, thresholds=None)
    stack = predict_images(bare, np.zeros((3, 20, 20), np.uint8))
    assert len(stack) == 3 and list(stack.columns) == ["image", *(f"prob_{p}" for p in PATHOLOGIES)]


def test_predict_images_uses_the_images_and_the_cli_decoding(tmp_path):
    """A brighter image gets a higher Mass score, and a file and its decoded array score alike."""
    model = load_model(_model_file(tmp_path / "model.pt", brightness_weight=4.0), thresholds=None)
    dark, bright = np.full((32, 32), 40, np.uint8), np.full((32, 32), 200, np.uint8)
    frame = predict_images(model, [dark, bright])
    assert frame["prob_Mass"].iloc[1] > frame["prob_Mass"].iloc[0] + 0.05
    np.testing.assert_allclose(frame["prob_Effusion"], P[1], atol=1e-6)
    Image.fromarray(bright).save(tmp_path / "bright.png")
    from_file = predict_images(model, tmp_path / "bright.png")
    assert from_file["prob_Mass"].iloc[0] == pytest.approx(frame["prob_Mass"].iloc[1], abs=1e-6)


def test_predict_images_refuses_bad_inputs(tmp_path):
    model = load_model(_model_file(tmp_path / "model.pt"))
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "tiny.png")
    with pytest.raises(PredictError, match="tiny.png: 8 x 8 px is too small"):
        predict_images(model, [tmp_path / "tiny.png"])
    with pytest.raises(ValueError, match=r"array\[0\]: a float image must hold values in \[0, 1\]"):
        predict_images(model, [np.full((20, 20), 3.0)])
    with pytest.raises(ValueError, match=r"array\[0\]: expected a 2-D gray image"):
        predict_images(model, [np.zeros((4, 20, 20), np.uint8)])
    with pytest.raises(TypeError, match="TrainedModel"):
        predict_images(model.module, [np.zeros((20, 20), np.uint8)])


def _cache(path, n=(3, 2), size=8):
    """train.npy / val.npy: image i of a split is constant 10 * (i + 1) (val: + 100); index.csv with two labels,
    one uncertain (-1) and one blank (NaN); rows written out of cache order."""
    path.mkdir(parents=True)
    rows = []
    for split, count, base in (("train", n[0], 0), ("val", n[1], 100)):
        np.save(path / f"{split}.npy", np.stack([np.full((size, size), base + 10 * (i + 1), np.uint8)
                                                 for i in range(count)]))
        for i in range(count):
            rows.append({"cache_row": i, "image_id": f"{split}{i}.png", "path": f"/raw/{split}{i}.png",
                         "patient_id": f"p{split}{i}", "follow_up": 0, "view": "PA", "sex": "F", "age": 50,
                         "official_split": "", "split": split, "Mass": float(i % 2), "Effusion": 1.0})
    rows[1]["Effusion"], rows[2]["Mass"] = -1.0, np.nan
    pd.DataFrame(rows[::-1]).to_csv(path / "index.csv", index=False)
    return path


def test_cache_dataset_items_are_images_and_labels(tmp_path):
    cache = _cache(tmp_path / "cache")
    data = CacheDataset(cache, "train")
    assert isinstance(data, torch.utils.data.Dataset) and len(data) == 3
    assert data.pathologies == ["Mass", "Effusion"] and data.image_size == 8
    assert data.index["image_id"].tolist() == ["train0.png", "train1.png", "train2.png"]  # cache order
    assert isinstance(data.images, np.memmap)
    x, y = data[1]
    assert x.dtype == torch.float32 and tuple(x.shape) == (1, 8, 8)
    assert torch.allclose(x, torch.full((1, 8, 8), 20 / 255))
    assert y.tolist() == [1.0, -1.0]  # uncertain stays -1
    _, y2 = data[-1]
    assert np.isnan(y2[0].item()) and y2[1].item() == 1.0  # blank: NaN
    np.testing.assert_array_equal(np.isnan(data.labels), [[False, False], [False, False], [True, False]])
    val = CacheDataset(cache, "val", pathologies=["Effusion"])
    assert len(val) == 2 and torch.allclose(val[0][0], torch.full((1, 8, 8), 110 / 255)) and val[0][1].tolist() == [1.0]
    with pytest.raises(IndexError):
        data[3]


def test_cache_dataset_normalises_transforms_and_batches(tmp_path):
    cache = _cache(tmp_path / "cache")
    fixed = CacheDataset(cache, "train", normalization="fixed")
    assert torch.allclose(fixed[0][0], torch.full((1, 8, 8), (10 / 255 - 0.5) / 0.25))
    unit = CacheDataset(cache, "train", normalization="unit")
    assert torch.allclose(unit[2][0], torch.full((1, 8, 8), 30 / 255))
    from_model = CacheDataset(cache, "train", normalization={"method": "imagenet", "mean": 0.449, "std": 0.226})
    assert torch.allclose(from_model[0][0], torch.full((1, 8, 8), (10 / 255 - 0.449) / 0.226))
    doubled = CacheDataset(cache, "train", transform=lambda x: x * 2)
    assert torch.allclose(doubled[0][0], torch.full((1, 8, 8), 20 / 255))
    loader = torch.utils.data.DataLoader(CacheDataset(cache, "train"), batch_size=2, shuffle=False)
    batches = list(loader)
    assert [tuple(x.shape) for x, _ in batches] == [(2, 1, 8, 8), (1, 1, 8, 8)]
    assert tuple(batches[0][1].shape) == (2, 2)
    restored = pickle.loads(pickle.dumps(unit))  # what a spawn DataLoader worker gets
    assert unit.__getstate__()["images"] is None and isinstance(restored.images, np.memmap)  # no pixels pickled
    assert torch.equal(restored[2][0], unit[2][0])
    with pytest.raises(FileNotFoundError, match="pixel_stats.npz"):
        CacheDataset(cache, "train", normalization="per_pixel")


def test_cache_dataset_errors_name_the_file(tmp_path):
    cache = _cache(tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match="test.npy: not found"):
        CacheDataset(cache, "test")
    np.save(cache / "val.npy", np.zeros((5, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="val.npy: 5 images but index.csv lists 2"):
        CacheDataset(cache, "val")
    with pytest.raises(ValueError, match=r"no label column\(s\) \['Cardiomegaly'\]"):
        CacheDataset(cache, "train", pathologies=["Cardiomegaly"])
