"""Stage evaluate: per-pathology AUROC with a seeded bootstrap CI from test-split predictions."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run without installing the package
from xraypipe import cli, stages


def main():
    p = cli.parser(__doc__)
    p.add_argument("--predictions", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    config = cli.resolve_config(args)
    result = stages.evaluate(args.predictions, config.get("evaluation", {}), args.out)
    print(f"mean AUROC {result['mean']['auroc']}")


if __name__ == "__main__":
    cli.run(main)
