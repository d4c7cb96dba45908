"""Stage train: train one variant on one dataset's cache (resumes from its checkpoint if killed; DDP via torchrun
when training.distributed is enabled)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run without installing the package
from xraypipe import cli


def main():
    p = cli.parser(__doc__)
    p.add_argument("--dataset", default=None, help="the dataset's name (recorded in the model file)")
    p.add_argument("--variant", required=True)
    p.add_argument("--cache-dir", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--history", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    config = cli.stage_config(args, "train", dataset=args.dataset, variant=args.variant)
    training = config["training"]
    # training.distributed with >1 process: become `torchrun --standalone --nproc-per-node=N scripts/train.py ...`
    from xraypipe.train import relaunch_under_torchrun, train_stage

    relaunch_under_torchrun(training, str(Path(__file__).resolve()), sys.argv[1:])
    train_stage(config["variants"][args.variant], training, args.cache_dir, args.model, args.history,
                args.checkpoint, threads=cli.threads(args, "train"), dataset=args.dataset, variant_name=args.variant,
                stage_config=config)


if __name__ == "__main__":
    cli.run(main)
