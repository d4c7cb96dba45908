"""Stage localize: Grad-CAM/CAM heatmaps on the test images with ground-truth boxes, boxes, IoU/IoBB scores."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run without installing the package
from xraypipe import cli
from xraypipe.localization import localize


def main():
    p = cli.parser(__doc__)
    p.add_argument("--dataset", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--cache-dir", required=True)
    p.add_argument("--raw", required=True, help="the dataset's raw directory (BBox_List_2017.csv, if any)")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    config = cli.resolve_config(args)
    evaluation = config.get("evaluation", {})
    resize = config["datasets"][args.dataset].get("preprocess", {}).get("resize", "pad")
    info = localize(model_path=args.model, cache_dir=args.cache_dir, boxes_csv=Path(args.raw) / "BBox_List_2017.csv",
                    resize=resize, cfg=evaluation.get("localization", {}), out_dir=args.out_dir, threads=args.threads)
    print(info)


if __name__ == "__main__":
    cli.run(main)
