"""Stage train_fold: train one variant on all cross-validation folds but one, from a fresh model (best epoch by
the mean AUROC of an inner validation split of those folds' patients), and score it on the held-out fold;
resumes from its checkpoint if killed; DDP via torchrun when training.distributed is enabled."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run without installing the package
from xraypipe import cli


def main():
    p = cli.parser(__doc__)
    p.add_argument("--variant", required=True)
    p.add_argument("--fold", type=int, required=True)
    p.add_argument("--cache-dir", required=True)
    p.add_argument("--folds", required=True, help="the fold assignment CSV (cv_folds)")
    p.add_argument("--model", required=True)
    p.add_argument("--history", required=True)
    p.add_argument("--metrics", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    config = cli.stage_config(args, "train_fold", variant=args.variant)
    training = config["training"]
    from xraypipe.config import variant_config
    from xraypipe.cv import train_fold
    from xraypipe.train import relaunch_under_torchrun

    variant = variant_config(config, args.variant)
    relaunch_under_torchrun(training, str(Path(__file__).resolve()), sys.argv[1:])
    train_fold(variant=variant, training=training, cache_dir=args.cache_dir, folds_csv=args.folds, fold=args.fold,
               model_out=args.model, history_out=args.history, metrics_out=args.metrics,
               checkpoint=args.checkpoint, inner_val_fraction=config["cross_validation"]["inner_val_fraction"],
               seed=config["cross_validation"]["seed"], threads=cli.threads(args, "train_fold"))


if __name__ == "__main__":
    cli.run(main)
