"""Stage prepare_raw: the raw dataset directory (synthetic twin, local copy or archive, or download)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run without installing the package
from xraypipe import cli, stages


def main():
    p = cli.parser(__doc__)
    p.add_argument("--dataset", required=True)
    p.add_argument("--raw", required=True, help="output: the raw dataset directory")
    p.add_argument("--threads", type=int, default=None, help="processes rendering a synthetic twin")
    args = p.parse_args()
    config = cli.stage_config(args, "raw", dataset=args.dataset)
    summary = stages.prepare_raw(config["datasets"][args.dataset], args.raw, threads=cli.threads(args, "prepare_raw"))
    print(f"{args.dataset}: {summary}")


if __name__ == "__main__":
    cli.run(main)
