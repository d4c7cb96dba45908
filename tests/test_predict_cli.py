"""xraypipe-predict end to end: train a tiny model on a toy cache, choose thresholds on its validation predictions
(the evaluate stage), then score PNG/JPEG files of several modes through the installed console script."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from config_sections import validated_section
from test_train_resume import PATHOLOGIES, TRAINING, VARIANT, make_cache
from workflow_copy import BIN, env
from xraypipe.evaluation import evaluate
from xraypipe.inference import predict_split
from xraypipe.train import train_variant


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    cache = make_cache(root / "cache", n=(200, 80, 20))  # 16 px
    model_dir = root / "models" / "toy"
    train_variant(cache_dir=cache, pathologies=PATHOLOGIES, variant=dict(VARIANT, epochs=5), training=TRAINING,
                  model_out=model_dir / "model.pt", history_out=model_dir / "history.csv",
                  checkpoint_path=root / "last.pt", threads=1, progress=False)
    for split in ("val", "test"):
        predict_split(model_path=model_dir / "model.pt", cache_dir=cache, split=split,
                      out_csv=root / f"{split}.csv", device_preference="cpu")
    evaluation = validated_section("evaluation", bootstrap_samples=20, threshold_method="youden")
    evaluate(root / "test.csv", root / "val.csv", evaluation, root / "metrics.json", model_dir / "thresholds.json")
    return root, model_dir


def _image(mass: bool, size=64, seed=0):
    """A toy radiograph like the cache's: 'Mass' brightens the centre (the cache's 16 px layout, upscaled)."""
    rng = np.random.default_rng(seed)
    image = rng.normal(100, 20, (16, 16))
    if mass:
        image[6:10, 6:10] += 80
    image = np.clip(image, 0, 255).astype(np.uint8)
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.NEAREST))


def _cli(*args, cwd):
    exe = shutil.which("xraypipe-predict", path=str(BIN)) or None
    cmd = [exe] if exe else [sys.executable, "-m", "xraypipe.predict_cli"]
    return subprocess.run([*cmd, *map(str, args)], cwd=cwd, env=env(), capture_output=True, text=True, timeout=300)


def test_predict_command_scores_images_of_any_mode(trained, tmp_path):
    root, model_dir = trained
    positive, negative = _image(True, seed=1), _image(False, seed=2)
    Image.fromarray(positive).save(tmp_path / "pos_gray.png")
    Image.fromarray((positive.astype(np.uint16) * 64)).save(tmp_path / "pos_16bit.png")  # 16-bit gray (I;16)
    Image.fromarray(np.stack([positive] * 3, -1)).convert("RGBA").save(tmp_path / "pos_rgba.png")
    Image.fromarray(np.stack([negative] * 3, -1)).save(tmp_path / "neg_rgb.jpg", quality=95)
    thresholds = json.loads((model_dir / "thresholds.json").read_text())["thresholds"]

    proc = _cli("--model", model_dir / "model.pt", "--out-dir", tmp_path / "out", "--json",
                *(tmp_path / n for n in ("pos_gray.png", "pos_16bit.png", "pos_rgba.png", "neg_rgb.jpg")), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["image"].rsplit("/", 1)[1] for r in rows] == ["pos_gray.png", "pos_16bit.png", "pos_rgba.png",
                                                            "neg_rgb.jpg"]
    for r in rows:
        assert set(r["probabilities"]) == set(PATHOLOGIES) and r["thresholds"] == pytest.approx(thresholds)
        assert r["positive"] == [f for f in PATHOLOGIES if r["probabilities"][f] >= thresholds[f]]
        overlay = Image.open(r["overlay"])
        assert overlay.size[0] > 200 and overlay.mode in ("RGB", "RGBA")
    assert all("Mass" in r["positive"] for r in rows[:3]), rows
    assert "Mass" not in rows[3]["positive"], rows[3]
    assert rows[0]["probabilities"]["Mass"] > rows[3]["probabilities"]["Mass"]

    table = _cli("--model", model_dir / "model.pt", "--no-overlay", tmp_path / "pos_gray.png", cwd=tmp_path)
    assert table.returncode == 0 and "Mass" in table.stdout and "POSITIVE" in table.stdout


def test_predict_command_errors_name_the_file(trained, tmp_path):
    root, model_dir = trained
    good = tmp_path / "ok.png"
    Image.fromarray(_image(True)).save(good)
    model = model_dir / "model.pt"

    def fails(*args, match):
        proc = _cli(*args, cwd=tmp_path)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert proc.stderr.startswith("error: ") and match in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr

    fails("--model", tmp_path / "missing.pt", good, match="missing.pt: model file not found")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    fails("--model", junk, good, match="junk.pt: not a PyTorch file")
    ckpt = tmp_path / "last.pt"
    torch.save({"fingerprint": "x", "epoch": 2}, ckpt)
    fails("--model", ckpt, good, match="resume checkpoint")
    fails("--model", model, tmp_path / "nope.png", match="nope.png: image file not found")
    broken = tmp_path / "broken.png"
    broken.write_text("this is not a PNG")
    fails("--model", model, broken, match="broken.png: cannot decode image")
    rng = np.random.default_rng(0)
    photo = tmp_path / "photo.jpg"
    Image.fromarray(rng.integers(0, 255, (40, 40, 3)).astype(np.uint8)).save(photo)
    fails("--model", model, photo, match="photo.jpg: a colour image")
    fails("--model", model, "--thresholds", tmp_path / "t.json", good, match="t.json: thresholds file not found")
