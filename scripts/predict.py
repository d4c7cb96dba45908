"""Stage predict: per-image probabilities of a trained variant on one cached split."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run without installing the package
from xraypipe import cli
from xraypipe.inference import predict_split


def main():
    p = cli.parser(__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--cache-dir", required=True)
    p.add_argument("--split", required=True, choices=["train", "val", "test"])
    p.add_argument("--predictions", required=True, help="output: the predictions CSV")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    config = cli.stage_config(args, "predict")
    predict_split(model_path=args.model, cache_dir=args.cache_dir, split=args.split, out_csv=args.predictions,
                  threads=cli.threads(args, "predict"), device_preference=config["training"]["device"])


if __name__ == "__main__":
    cli.run(main)
