"""Stage model_card: a short markdown card beside the model file: what it was trained on, its validation and test
AUROCs with bootstrap CIs, the thresholds chosen on validation, its intended use, code version and config hash."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run without installing the package
from xraypipe import cli
from xraypipe.model_card import write_model_card


def main():
    p = cli.parser(__doc__)
    p.add_argument("--dataset", required=True)
    p.add_argument("--variant", required=True)
    p.add_argument("--model", required=True, help="the trained model file")
    p.add_argument("--metrics", required=True, help="the evaluate stage's metrics JSON")
    p.add_argument("--thresholds", required=True, help="the thresholds chosen on validation (JSON)")
    p.add_argument("--val-predictions", required=True, help="validation-split predictions CSV")
    p.add_argument("--split-summary", required=True, help="per-split counts CSV (make_splits)")
    p.add_argument("--card", required=True, help="output: the model card (markdown)")
    args = p.parse_args()
    config = cli.stage_config(args, "model_card", dataset=args.dataset, variant=args.variant)
    write_model_card(model=args.model, metrics=args.metrics, thresholds=args.thresholds,
                     val_predictions=args.val_predictions, split_summary=args.split_summary, config=config,
                     dataset=args.dataset, variant=args.variant, out=args.card)
    print(f"wrote {args.card}")


if __name__ == "__main__":
    cli.run(main)
