"""Stage pixel_stats: per-pixel mean and std images of the cached training split (normalization: per_pixel)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run without installing the package
import numpy as np

from xraypipe import cli, standardize


def main():
    p = cli.parser(__doc__)
    p.add_argument("--cache-dir", required=True)
    p.add_argument("--stats", required=True, help="output: the statistics (.npz)")
    p.add_argument("--chunk-rows", type=int, default=256, help="images per streamed chunk (bounds the memory)")
    args = p.parse_args()
    cli.stage_config(args, "pixel_stats")  # validated like every stage (the statistics depend on no config key)
    stats = standardize.write_pixel_stats(args.cache_dir, args.stats, chunk_rows=args.chunk_rows)
    print(f"per-pixel statistics of {int(stats['count'])} training images -> {args.stats} "
          f"(mean {float(stats['mean'].mean()):.4f}, median std {float(np.median(stats['std'])):.4f})")


if __name__ == "__main__":
    cli.run(main)
