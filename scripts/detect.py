"""Stage detect: the trained detector's boxes on the scoring images, kept for the classifier's positive findings,
scored with the same IoU / T(IoBB) / false-positive code as the Grad-CAM boxes."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run without installing the package
from xraypipe import cli
from xraypipe.detection import detect


def main():
    p = cli.parser(__doc__)
    p.add_argument("--dataset", required=True)
    p.add_argument("--detector", required=True)
    p.add_argument("--predictions", required=True, help="the classifier's test-split predictions")
    p.add_argument("--thresholds", required=True, help="the classifier's thresholds.json (chosen on validation)")
    p.add_argument("--cache-dir", required=True)
    p.add_argument("--raw", required=True, help="the dataset's raw directory (BBox_List_2017.csv, if any)")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    config = cli.resolve_config(args)
    resize = config["datasets"][args.dataset].get("preprocess", {}).get("resize", "pad")
    info = detect(detector_path=args.detector, cache_dir=args.cache_dir,
                  boxes_csv=Path(args.raw) / "BBox_List_2017.csv", predictions_csv=args.predictions,
                  thresholds_json=args.thresholds, resize=resize,
                  cfg=config.get("evaluation", {}).get("localization", {}), out_dir=args.out_dir,
                  threads=args.threads, device_preference=config.get("training", {}).get("device", "auto"))
    print(info)


if __name__ == "__main__":
    cli.run(main)
