"""Stage cv_table: results/tables/cross_validation_<variant>.csv (+ .md, .html): the held-out AUROC of every
fold of every experiment dataset, and the mean ± sd over the folds."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run without installing the package
from xraypipe import cli
from xraypipe.workflow import expand_pattern


def main():
    p = cli.parser(__doc__)
    p.add_argument("--variant", required=True)
    p.add_argument("--metrics", required=True,
                   help="path pattern ({dataset}, {fold}: every experiment dataset x fold) of the folds' metrics")
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-md", required=True)
    p.add_argument("--out-html", required=True)
    args = p.parse_args()
    config = cli.stage_config(args, "cv_table")
    from xraypipe.cv import check_fold_ids, write_cv_table

    check_fold_ids(config["cross_validation"]["folds"])
    files = {(k["dataset"], args.variant, int(k["fold"])): path for k, path in expand_pattern(args.metrics, config)}
    table = write_cv_table(files, args.out_csv, args.out_md, args.out_html)
    summary = table[table["fold"].isin(["mean", "sd"])]
    print(summary[["dataset", "variant", "fold", "mean_auroc"]].to_string(index=False))


if __name__ == "__main__":
    cli.run(main)
