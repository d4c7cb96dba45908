"""Figures: one subcommand per figure rule (roc, labels, training, confusion, gradcam); PNG via matplotlib Agg."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run without installing the package
from xraypipe import cli
from xraypipe import figures
from xraypipe.workflow import PATHS


def main():
    p = cli.parser(__doc__)
    p.add_argument("figure", choices=["roc", "labels", "training", "confusion", "gradcam"])
    p.add_argument("--dataset", required=True)
    p.add_argument("--variant", help="for confusion and gradcam")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    config = cli.resolve_config(args)
    d, v = args.dataset, args.variant
    variants = config["experiment"]["variants"]
    if args.figure == "roc":
        files = {w: PATHS["predictions"].format(dataset=d, variant=w, split="test") for w in variants}
        figures.roc_figure(files, args.out, f"ROC curves on the {d} test split (AUROC in the legend)")
    elif args.figure == "labels":
        figures.label_distribution_figure(PATHS["manifest"].format(dataset=d), args.out, f"{d}: label prevalence per split")
    elif args.figure == "training":
        files = {w: PATHS["history"].format(dataset=d, variant=w) for w in variants}
        figures.training_curves_figure(files, args.out, f"{d}: training curves")
    elif args.figure == "confusion":
        figures.confusion_figure(PATHS["metrics"].format(dataset=d, variant=v), args.out)
    else:
        figures.gradcam_figure(PATHS["loc_summary"].format(dataset=d, variant=v).rsplit("/", 1)[0],
                               PATHS["cache_index"].format(dataset=d).rsplit("/", 1)[0], args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    cli.run(main)
