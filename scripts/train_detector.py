"""Stage train_detector: a Mask R-CNN / Faster R-CNN on the dataset's ground-truth boxes (detector-training part)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run without installing the package
from xraypipe import cli
from xraypipe.detection import train_detector


def main():
    p = cli.parser(__doc__)
    p.add_argument("--dataset", required=True)
    p.add_argument("--cache-dir", required=True)
    p.add_argument("--raw", required=True, help="the dataset's raw directory (BBox_List_2017.csv, if any)")
    p.add_argument("--model", required=True, help="output: the detector file")
    p.add_argument("--history", required=True, help="output: per-epoch losses")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    config = cli.resolve_config(args)
    resize = config["datasets"][args.dataset].get("preprocess", {}).get("resize", "pad")
    info = train_detector(cache_dir=args.cache_dir, boxes_csv=Path(args.raw) / "BBox_List_2017.csv", resize=resize,
                          cfg=config.get("evaluation", {}).get("localization", {}), out_model=args.model,
                          out_history=args.history, threads=args.threads,
                          device_preference=config.get("training", {}).get("device", "auto"))
    print(info)


if __name__ == "__main__":
    cli.run(main)
