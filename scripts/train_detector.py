"""Stage train_detector: a Mask R-CNN / Faster R-CNN on the dataset's ground-truth boxes (detector-training part)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run without installing the package
from xraypipe import cli, datasets
from xraypipe.detection import train_detector


def main():
    p = cli.parser(__doc__)
    p.add_argument("--dataset", required=True)
    p.add_argument("--cache-dir", required=True)
    p.add_argument("--raw", required=True, help="the raw dataset directory (its reader knows the box file)")
    p.add_argument("--model", required=True, help="output: the detector file")
    p.add_argument("--history", required=True, help="output: per-epoch losses")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    config = cli.stage_config(args, "train_detector", dataset=args.dataset)
    dataset = config["datasets"][args.dataset]
    info = train_detector(cache_dir=args.cache_dir, boxes_csv=datasets.box_file(dataset["reader"], args.raw),
                          resize=dataset["preprocess"]["resize"], cfg=config["evaluation"]["localization"],
                          out_model=args.model, out_history=args.history,
                          threads=cli.threads(args, "train_detector"),
                          device_preference=config["training"]["device"])
    print(info)


if __name__ == "__main__":
    cli.run(main)
