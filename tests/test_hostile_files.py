"""Hostile and damaged files: a model file whose pickle runs code is refused (and nothing runs), a truncated
resume checkpoint is moved aside and training starts afresh, equal weights give byte-identical model files,
download names cannot leave the download folder, and predict refuses degenerate images."""

import os
import pickle
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from test_predict_cli import _cli, _image, trained  # noqa: F401  (module fixture: a tiny trained model)
from test_train_resume import PATHOLOGIES, TRAINING, VARIANT, make_cache
from xraypipe.acquire import prepare_download
from xraypipe.datasets.contract import DatasetFormatError
from xraypipe.model_files import (CorruptModelFileError, UnsafeModelFileError, load_torch_file, save_torch_file)
from xraypipe.train import train_variant


class _RunsCode:
    """Unpickling this calls os.system: what a hostile model.pt does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def evil_model_file(path, marker):
    """A real torch archive (state_dict + metadata) whose metadata unpickles into a shell command."""
    torch.save({"state_dict": {"w": torch.zeros(1)}, "metadata": _RunsCode(marker)}, path)
    return path


def test_malicious_model_file_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = evil_model_file(tmp_path / "evil.pt", marker)
    with pytest.raises(UnsafeModelFileError, match=r"evil\.pt: refused to load this model file"):
        load_torch_file(path)
    assert not marker.exists()
    raw = tmp_path / "evil.pkl"  # a bare pickle, not even a torch archive
    raw.write_bytes(pickle.dumps(_RunsCode(marker)))
    with pytest.raises((UnsafeModelFileError, CorruptModelFileError), match=r"evil\.pkl"):
        load_torch_file(raw)
    assert not marker.exists()


def test_predict_refuses_a_malicious_model_with_one_error_line(trained, tmp_path):  # noqa: F811
    marker = tmp_path / "pwned"
    path = evil_model_file(tmp_path / "model.pt", marker)
    good = tmp_path / "ok.png"
    Image.fromarray(_image(True)).save(good)
    proc = _cli("--model", path, good, cwd=tmp_path)
    assert proc.returncode == 1 and not marker.exists()
    assert proc.stderr.startswith("error: ") and "refused to load this model file" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_predict_refuses_degenerate_images(trained, tmp_path):  # noqa: F811
    root, model_dir = trained
    for name, shape in (("dot.png", (1, 1)), ("strip.png", (1, 5000)), ("thin.png", (40, 400))):
        Image.fromarray(np.full(shape, 120, np.uint8)).save(tmp_path / name)
        proc = _cli("--model", model_dir / "model.pt", "--no-overlay", tmp_path / name, cwd=tmp_path)
        assert proc.returncode == 1 and proc.stderr.startswith("error: ") and name in proc.stderr, proc.stderr
        assert "too small" in proc.stderr or "aspect ratio" in proc.stderr
    Image.fromarray(_image(False, size=64)).save(tmp_path / "fine.png")
    proc = _cli("--model", model_dir / "model.pt", "--no-overlay", tmp_path / "fine.png", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


def _train(cache, out, **variant):
    return train_variant(cache_dir=cache, pathologies=PATHOLOGIES, variant={**VARIANT, **variant}, training=TRAINING,
                         model_out=out / "model.pt", history_out=out / "history.csv",
                         checkpoint_path=out / "last.pt", threads=1, progress=False)


def test_truncated_checkpoint_is_moved_aside_and_training_starts_afresh(tmp_path, capsys):
    cache = make_cache(tmp_path / "cache")
    reference = tmp_path / "reference"
    _train(cache, reference, epochs=2)
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_bytes(b"PK\x03\x04 truncated archive")  # what a kill mid-write of a non-atomic file leaves
    _train(cache, out, epochs=2)
    printed = capsys.readouterr().out
    assert "last.pt: unreadable resume checkpoint" in printed and "starting this run afresh" in printed
    aside = list(out.glob("last.pt.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"PK")
    # it trained from scratch to the same model as an uninterrupted run, byte for byte
    assert (out / "model.pt").read_bytes() == (reference / "model.pt").read_bytes()


def test_equal_weights_give_byte_identical_model_files(tmp_path):
    state = {"state_dict": {"w": torch.arange(6.0).view(2, 3)},
             "metadata": {"pathologies": ["Mass"], "mean": np.float32(0.5), "image": np.zeros((2, 2), np.float32)}}
    a, b = save_torch_file(state, tmp_path / "a" / "model.pt"), save_torch_file(state, tmp_path / "b" / "model.pt")
    assert a.read_bytes() == b.read_bytes()
    with zipfile.ZipFile(a) as z:
        assert {n.split("/")[0] for n in z.namelist()} == {"archive"}  # no temporary file name inside
    loaded = load_torch_file(a)  # numpy values were stored as plain values: loads weights-only
    assert loaded["metadata"]["image"] == [[0.0, 0.0], [0.0, 0.0]] and loaded["metadata"]["mean"] == 0.5
    assert not list((tmp_path / "a").glob(".*tmp*"))


@pytest.mark.parametrize("name", ["../../../../elsewhere/evil.zip", "sub/evil.zip", "..", "/etc/passwd",
                                  "evil.zip\\..\\x"])
def test_download_names_are_plain_file_names(tmp_path, name):
    source = tmp_path / "payload.zip"
    with zipfile.ZipFile(source, "w") as z:
        z.writestr("a.txt", "x")
    cfg = {"reader": "kermany", "source": "download",
           "download": {"dir": str(tmp_path / "dl"), "files": [{"url": str(source), "name": name}]}}
    with pytest.raises(DatasetFormatError, match=r"download\.files\[0\]\.name: .* is not a plain file name"):
        prepare_download(cfg, tmp_path / "work" / "raw" / "kermany")
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "dl").exists()


def test_yaml_syntax_error_is_reported_with_file_and_line(tmp_path):
    """An overlay (or config.yaml) with a syntax error: the project's reader and Snakemake itself name the file,
    line and column (Snakemake reads --configfile before any workflow code; xraypipe.snakemake_hooks wraps it)."""
    import subprocess
    import sys

    from workflow_copy import BIN, env
    from xraypipe.config import ConfigError, read_config_file

    bad = tmp_path / "overlay.yaml"
    bad.write_text("datasets:\n  kermany:\n    source: local\n    root: [data/kermany\n  split: {}\n")
    with pytest.raises(ConfigError, match=r"overlay\.yaml, line 5, column 8: not valid YAML"):
        read_config_file(bad)

    (tmp_path / "Snakefile").write_text("rule all:\n    shell: 'true'\n")
    for cmd in ([str(BIN / "snakemake")], [sys.executable, "-m", "snakemake"]):
        proc = subprocess.run(cmd + ["-n", "--configfile", str(bad)], cwd=tmp_path, env=env(),
                              capture_output=True, text=True, timeout=120)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0 and f"{bad}, line 5, column 8: not valid YAML" in out, out[-2000:]
