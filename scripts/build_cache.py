"""Stage build_cache: decode, resize and store every image of the manifest as uint8 arrays per split."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run without installing the package
from xraypipe import cli, stages


def main():
    p = cli.parser(__doc__)
    p.add_argument("--dataset", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--out-dir", required=True, help="output: the cache directory")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    config = cli.stage_config(args, "cache", dataset=args.dataset)
    index = stages.build_cache(config["datasets"][args.dataset], args.manifest, args.out_dir,
                               cli.threads(args, "build_cache"))
    print(f"cached {len(index)} images into {args.out_dir}")


if __name__ == "__main__":
    cli.run(main)
