"""Stage evaluate: test-split metrics (AUROC + seeded bootstrap CI, AUPRC, sensitivity, specificity, precision, F1,
accuracy, balanced error, Cohen's kappa, confusion counts) at thresholds chosen on the validation predictions."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run without installing the package
from xraypipe import cli
from xraypipe.evaluation import evaluate


def main():
    p = cli.parser(__doc__)
    p.add_argument("--test-predictions", required=True, help="test-split predictions CSV")
    p.add_argument("--val-predictions", required=True, help="validation-split predictions CSV (thresholds are chosen here)")
    p.add_argument("--metrics", required=True, help="output: the test metrics (JSON)")
    p.add_argument("--thresholds", required=True, help="output: the chosen thresholds (JSON)")
    args = p.parse_args()
    config = cli.stage_config(args, "evaluate")
    result = evaluate(args.test_predictions, args.val_predictions, config["evaluation"], args.metrics, args.thresholds)
    auroc, f1 = result["mean"]["auroc"], result["classification"]["macro"]["f1"]
    print(f"mean AUROC {cli.rounded(auroc)}; macro F1 {cli.rounded(f1)}")


if __name__ == "__main__":
    cli.run(main)
