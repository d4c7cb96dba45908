"""Figures: one subcommand per figure rule (roc, labels, training, confusion, gradcam); PNG via matplotlib Agg."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run without installing the package
from xraypipe import cli
from xraypipe import figures
from xraypipe.workflow import expand_pattern


def main():
    p = cli.parser(__doc__)
    p.add_argument("figure", choices=["roc", "labels", "training", "confusion", "gradcam"])
    p.add_argument("--dataset", required=True)
    p.add_argument("--variant", help="confusion and gradcam")
    p.add_argument("--predictions", help="roc: path pattern ({variant}) of the test-split predictions")
    p.add_argument("--history", help="training: path pattern ({variant}) of the training histories")
    p.add_argument("--manifest", help="labels: the manifest CSV")
    p.add_argument("--metrics", help="confusion: the metrics JSON")
    for name in ("heatmaps", "scored", "detected", "info", "array"):
        p.add_argument(f"--{name}", help="gradcam: the localize stage's file / the cached test split")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    config = cli.stage_config(args, "figures")
    d = args.dataset
    needed = {"roc": ["predictions"], "training": ["history"], "labels": ["manifest"], "confusion": ["metrics"],
              "gradcam": ["heatmaps", "scored", "detected", "info", "array"]}[args.figure]
    missing = [f"--{n}" for n in needed if getattr(args, n) is None]
    if missing:
        p.error(f"{args.figure} needs {', '.join(missing)}")
    if args.figure == "roc":
        files = {k["variant"]: path for k, path in expand_pattern(args.predictions, config)}
        figures.roc_figure(files, args.out, f"ROC curves on the {d} test split (AUROC in the legend)")
    elif args.figure == "labels":
        figures.label_distribution_figure(args.manifest, args.out, f"{d}: label prevalence per split")
    elif args.figure == "training":
        files = {k["variant"]: path for k, path in expand_pattern(args.history, config)}
        figures.training_curves_figure(files, args.out, f"{d}: training curves")
    elif args.figure == "confusion":
        figures.confusion_figure(args.metrics, args.out)
    else:
        figures.gradcam_figure(args.heatmaps, args.scored, args.detected, args.info, args.array, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    cli.run(main)
