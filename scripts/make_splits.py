"""Stage make_splits: read the raw dataset into a manifest with patient-wise train/val/test splits."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run without installing the package
from xraypipe import cli, stages


def main():
    p = cli.parser(__doc__)
    p.add_argument("--dataset", required=True)
    p.add_argument("--raw", required=True, help="the raw dataset directory")
    p.add_argument("--manifest", required=True, help="output: the manifest CSV")
    p.add_argument("--summary", required=True, help="output: per-split counts CSV")
    args = p.parse_args()
    config = cli.stage_config(args, "splits", dataset=args.dataset)
    stages.make_splits(config["datasets"][args.dataset], args.raw, args.manifest, args.summary)


if __name__ == "__main__":
    cli.run(main)
