"""``xraypipe-predict``: score image files with a trained variant (the user flow of the NIH localization study).

    xraypipe-predict --model results/models/nih_synthetic/resnet18/model.pt image1.png image2.jpg

For each image: the per-finding probability, the validation-chosen threshold (``thresholds.json`` written by the
evaluate stage beside ``model.pt``, or ``--thresholds``) and the decision; an overlay PNG (``--out-dir``) shows the
Grad-CAM heatmap and boxes of each positive finding. Exit status 1 with one ``error: ...`` line naming the file for
a missing or wrong model file, a missing thresholds file, or an unreadable image or one of the wrong kind (a colour
photograph, an animation).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from xraypipe.standardize import Normalization

DISPLAY_SIZE = 448
MIN_SIDE = 16             # px: smaller images hold no radiograph worth a score
MAX_ASPECT = 4.0          # longer side / shorter side: beyond it an image is no chest film (and resizing would smear it)
COLOR_SPREAD_LIMIT = 12.0  # mean |R-G|, |G-B| on 0..255 above which an image is a colour photograph, not a film


class PredictError(ValueError):
    """A user-facing problem with the inputs of xraypipe-predict; the message names the file."""


def load_model(model_path: Path):
    """(model, metadata), with clear errors for a missing file or a file that is not a trained xraypipe model."""
    from xraypipe.model_files import ModelFileError, load_torch_file
    from xraypipe.inference import model_from_saved

    if not model_path.exists():
        raise PredictError(f"{model_path}: model file not found (train the variant first, e.g. snakemake "
                           f"results/models/<dataset>/<variant>/model.pt)")
    try:
        saved = load_torch_file(model_path)
    except ModelFileError as exc:
        raise PredictError(str(exc)) from None
    if not isinstance(saved, dict) or "metadata" not in saved or "state_dict" not in saved:
        hint = " (this is a resume checkpoint; use the finished model.pt)" if isinstance(saved, dict) and \
            "fingerprint" in saved else ""
        raise PredictError(f"{model_path}: not a trained xraypipe model (no metadata/state_dict){hint}")
    return model_from_saved(saved)


def load_thresholds(path: Path, pathologies) -> dict:
    if not path.exists():
        raise PredictError(f"{path}: thresholds file not found (run the evaluate rule for this variant, or pass "
                           f"--thresholds)")
    try:
        data = json.loads(path.read_text())
        thresholds = data["thresholds"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise PredictError(f"{path}: not a thresholds file ({exc})") from None
    missing = [p for p in pathologies if p not in thresholds]
    if missing:
        raise PredictError(f"{path}: no threshold for {missing} (was it written for another model?)")
    return {p: (float("nan") if thresholds[p] is None else float(thresholds[p])) for p in pathologies}


def check_image_kind(path: Path, allow_color: bool = False) -> None:
    """Refuse files that are not single-frame radiograph-like images (the decoder's errors name the file)."""
    from PIL import Image, UnidentifiedImageError

    from xraypipe.preprocess import ImageDecodeError

    if not path.exists():
        raise ImageDecodeError(f"{path}: image file not found")
    try:
        with Image.open(path) as image:
            if getattr(image, "n_frames", 1) > 1:
                raise PredictError(f"{path}: has {image.n_frames} frames; expected a single radiograph")
            width, height = image.size
            if min(width, height) < MIN_SIDE:
                raise PredictError(f"{path}: {width} x {height} px is too small to score (at least {MIN_SIDE} px a side)")
            if max(width, height) / min(width, height) > MAX_ASPECT:
                raise PredictError(f"{path}: {width} x {height} px has an aspect ratio beyond {MAX_ASPECT:g}:1; "
                                   "not a radiograph")
            if image.mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr") and not allow_color:
                image.draft("RGB", (256, 256))
                rgb = np.asarray(image.convert("RGB").resize((128, 128)), dtype=np.float32)
                spread = float((np.abs(rgb[..., 0] - rgb[..., 1]) + np.abs(rgb[..., 1] - rgb[..., 2])).mean() / 2)
                if spread > COLOR_SPREAD_LIMIT:
                    raise PredictError(f"{path}: a colour image (mean channel difference {spread:.1f}), not a "
                                       "radiograph; pass --allow-color to score it anyway")
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ImageDecodeError(f"{path}: cannot decode image ({type(exc).__name__}: {exc})") from None


def predict_images(model, meta, paths, thresholds: dict, resize: str = "pad", allow_color: bool = False):
    """Per image: (input array S x S uint8, {finding: probability}, {finding: decision})."""
    import torch

    from xraypipe.preprocess import load_image

    size = int(meta["image_size"])
    norm = Normalization.from_meta(meta.get("normalization"))  # the transform the model was trained with
    arrays = []
    for path in paths:
        check_image_kind(Path(path), allow_color)
        arrays.append(load_image(path, size, resize))
    x = norm.apply(np.stack(arrays))
    with torch.inference_mode():
        probs = torch.sigmoid(model(x).float()).numpy()
    results = []
    for array, row in zip(arrays, probs):
        p = {f: float(v) for f, v in zip(meta["pathologies"], row)}
        decision = {f: bool(np.isfinite(thresholds[f]) and p[f] >= thresholds[f]) for f in p}
        results.append((array, p, decision))
    return results


def write_overlay(path: Path, out_png: Path, model, meta, array: np.ndarray, probs: dict, decision: dict,
                  thresholds: dict, resize: str, method: str = "gradcam") -> None:
    """One panel per positive finding (heatmap + boxes), or the image alone when no finding is positive."""
    from xraypipe.figures import _plt, _save, draw_overlay
    from xraypipe.localization import heatmaps, threshold_boxes
    from xraypipe.preprocess import load_image

    plt = _plt()
    positives = [f for f in meta["pathologies"] if decision[f]]
    display = load_image(path, DISPLAY_SIZE, resize)
    scale = DISPLAY_SIZE / array.shape[0]
    maps = heatmaps(model, np.repeat(array[None], len(positives), 0), [meta["pathologies"].index(f) for f in positives],
                    method=method, normalization=meta.get("normalization")) if positives else []
    n = max(1, len(positives))
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.9), squeeze=False)
    if not positives:
        draw_overlay(axes[0, 0], display, None, title=f"{path.name}\nno finding above its threshold")
    for ax, finding, heat in zip(axes[0], positives, maps):
        from PIL import Image

        big = np.asarray(Image.fromarray((heat * 255).astype(np.uint8)).resize((DISPLAY_SIZE,) * 2,
                                                                               Image.Resampling.BILINEAR)) / 255.0
        boxes = [(b["x"] * scale, b["y"] * scale, b["w"] * scale, b["h"] * scale) for b in threshold_boxes(heat)]
        draw_overlay(ax, display, big, detected=boxes,
                     title=f"{finding}: p={probs[finding]:.3f} (threshold {thresholds[finding]:.3f})")
    fig.suptitle(f"{path.name} — {meta['model']} ({method}); red: boxes from the heatmap", fontsize=9)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    _save(fig, out_png)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xraypipe-predict", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", type=Path, help="image files (PNG/JPEG/TIFF; 8/16-bit gray, RGB, RGBA, palette)")
    p.add_argument("--model", required=True, type=Path, help="a trained model.pt (results/models/<dataset>/<variant>/)")
    p.add_argument("--thresholds", type=Path, help="thresholds JSON (default: thresholds.json beside the model)")
    p.add_argument("--out-dir", type=Path, default=Path("."), help="where to write <image>.overlay.png (default: .)")
    p.add_argument("--no-overlay", action="store_true", help="do not write overlay PNGs")
    p.add_argument("--resize", choices=["pad", "crop", "stretch"], default="pad",
                   help="how to square the image; use the dataset's preprocess.resize (default pad)")
    p.add_argument("--method", choices=["gradcam", "cam"], default="gradcam", help="heatmap method for the overlay")
    p.add_argument("--allow-color", action="store_true", help="score colour images too")
    p.add_argument("--json", action="store_true", help="print one JSON object per image instead of a table")
    return p


def main(argv=None) -> int:
    from xraypipe.preprocess import ImageDecodeError

    args = build_parser().parse_args(argv)
    try:
        import torch

        torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
        model, meta = load_model(args.model)
        thresholds = load_thresholds(args.thresholds or args.model.parent / "thresholds.json", meta["pathologies"])
        results = predict_images(model, meta, args.images, thresholds, args.resize, args.allow_color)
        for path, (array, probs, decision) in zip(args.images, results):
            overlay = None
            if not args.no_overlay:
                overlay = args.out_dir / f"{path.stem}.overlay.png"
                write_overlay(path, overlay, model, meta, array, probs, decision, thresholds, args.resize, args.method)
            if args.json:
                print(json.dumps({"image": str(path), "probabilities": probs, "thresholds": thresholds,
                                  "positive": [f for f in probs if decision[f]],
                                  "overlay": str(overlay) if overlay else None}))
                continue
            print(f"{path}")
            print(f"  {'finding':<20} {'probability':>11} {'threshold':>9}  decision")
            for f in meta["pathologies"]:
                print(f"  {f:<20} {probs[f]:>11.4f} {thresholds[f]:>9.4f}  {'POSITIVE' if decision[f] else 'negative'}")
            if overlay:
                print(f"  overlay: {overlay}")
    except (PredictError, ImageDecodeError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
