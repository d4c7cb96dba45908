"""Stage detect: the trained detector's boxes on the scoring images, kept for the classifier's positive findings,
scored with the same IoU / T(IoBB) / false-positive code as the Grad-CAM boxes."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run without installing the package
from xraypipe import cli, datasets
from xraypipe.boxes import bootstrap_settings
from xraypipe.detection import detect


def main():
    p = cli.parser(__doc__)
    p.add_argument("--dataset", required=True)
    p.add_argument("--detector", required=True)
    p.add_argument("--predictions", required=True, help="the classifier's test-split predictions")
    p.add_argument("--thresholds", required=True, help="the classifier's thresholds.json (chosen on validation)")
    p.add_argument("--cache-dir", required=True)
    p.add_argument("--raw", required=True, help="the raw dataset directory (its reader knows the box file)")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    config = cli.stage_config(args, "detect", dataset=args.dataset)
    dataset = config["datasets"][args.dataset]
    info = detect(detector_path=args.detector, cache_dir=args.cache_dir,
                  boxes_csv=datasets.box_file(dataset["reader"], args.raw), predictions_csv=args.predictions,
                  thresholds_json=args.thresholds, resize=dataset["preprocess"]["resize"],
                  cfg=config["evaluation"]["localization"], out_dir=args.out_dir,
                  threads=cli.threads(args, "detect"), device_preference=config["training"]["device"],
                  bootstrap=bootstrap_settings(config["evaluation"]))
    print(info)


if __name__ == "__main__":
    cli.run(main)
