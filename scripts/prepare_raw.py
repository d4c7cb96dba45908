"""Stage raw: generate a dataset's synthetic twin, or link a local copy, into results/raw/<dataset>."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run without installing the package
from xraypipe import cli, stages


def main():
    p = cli.parser(__doc__)
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    config = cli.resolve_config(args)
    summary = stages.prepare_raw(config["datasets"][args.dataset], args.out)
    print(f"{args.dataset}: {summary}")


if __name__ == "__main__":
    cli.run(main)
