"""Stage predict: per-image probabilities of a trained variant on one cached split."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run without installing the package
from xraypipe import cli, stages


def main():
    p = cli.parser(__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--cache-dir", required=True)
    p.add_argument("--split", required=True, choices=["train", "val", "test"])
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    config = cli.resolve_config(args)
    stages.predict(args.model, args.cache_dir, args.split, args.out,
                   device=config.get("training", {}).get("device", "auto"), threads=args.threads)


if __name__ == "__main__":
    cli.run(main)
