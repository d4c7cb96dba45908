"""What a trained model file records about itself: the code version, the config hash and the input transform.

Everything here is plain (str, int, float, bool, None, lists, dicts), so a model file loads with
``torch.load(..., weights_only=True)``, and nothing depends on the time or the host: two runs of the same commit
and config write the same bytes (tests/test_fault_injection.py compares them).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent  # src/xraypipe of the checkout (or installation) running


def config_hash(stage_config: dict) -> str:
    """sha256 of the config keys a stage receives (``cli.stage_config``: its ``STAGE_PARAMS``, defaults filled in),
    serialised like ``workflow.stage_params_json``: the same under Snakemake (--config-json) and DVC (--config)."""
    text = json.dumps(stage_config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _git(root: Path, *args: str) -> str | None:
    """stdout of ``git -C root args`` (stripped), or None when git is missing, fails or hangs."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # read only: never refresh (and lock) the index
    try:
        proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20, env=env,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def code_version(package_dir: str | os.PathLike | None = None) -> dict:
    """The code that is running: ``{"package", "version", "git_commit", "dirty"}``.

    ``git_commit``: ``git rev-parse HEAD`` of the repository whose ``src/xraypipe`` is ``package_dir`` (default:
    this package), ``dirty``: whether tracked files differ from that commit (untracked files are not looked at:
    results/, logs). Both None outside such a checkout (an installed package, a copy without git, no git at all):
    then ``version`` (the package's) is all there is. Never raises.
    """
    from xraypipe import __version__

    package_dir = Path(package_dir or PACKAGE_DIR).resolve()
    record = {"package": "xraypipe", "version": __version__, "git_commit": None, "dirty": None}
    top = _git(package_dir, "rev-parse", "--show-toplevel") if package_dir.is_dir() else None
    # only the repository that holds this very package (not one that merely contains an installed copy)
    if not top or (Path(top).resolve() / "src" / "xraypipe") != package_dir:
        return record
    commit = _git(package_dir, "rev-parse", "--verify", "HEAD")
    if not commit:  # a repository without commits
        return record
    status = _git(Path(top), "status", "--porcelain", "--untracked-files=no")
    return {**record, "git_commit": commit, "dirty": None if status is None else bool(status)}


def transform_description(image_size: int, resize: str | None, normalization: dict | None,
                          in_channels: int = 1) -> dict:
    """How an image becomes the model's input, as plain values (what ``xraypipe.preprocess`` and
    ``xraypipe.standardize`` do): 8-bit grayscale, squared to ``image_size`` by ``resize`` (pad/crop/stretch;
    None: not recorded), then ``(u / 255 - mean) / std``. Per-pixel statistics are named by method and digest:
    the images themselves are the model file's ``metadata["normalization"]``."""
    normalization = dict(normalization or {})
    norm = {"method": normalization.get("method")}
    for key in ("mean", "std"):
        value = normalization.get(key)
        if isinstance(value, (int, float)):
            norm[key] = float(value)
        elif value is not None:
            norm[key] = "per-pixel image (metadata.normalization)"
    for key in ("source", "sha256"):
        if normalization.get(key) is not None:
            norm[key] = str(normalization[key])
    return {
        "decode": "8-bit grayscale (16-bit/float min-max windowed; colour as ITU-R 601 luminance)",
        "resize": {"mode": resize, "size": [int(image_size), int(image_size)]},
        "scale": "u / 255",
        "normalization": norm,
        "channels": int(in_channels),
        "augmentation_at_inference": None,
    }
