"""Stage cv_table: results/tables/cross_validation_<variant>.csv (+ .md, .html): the held-out AUROC of every
fold of every experiment dataset, and the mean ± sd over the folds."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run without installing the package
from xraypipe import cli
from xraypipe.workflow import PATHS


def main():
    p = cli.parser(__doc__)
    p.add_argument("--variant", required=True)
    p.add_argument("--out-csv", default=None)
    p.add_argument("--out-md", default=None)
    p.add_argument("--out-html", default=None)
    args = p.parse_args()
    config = cli.resolve_config(args)
    from xraypipe.cv import check_fold_ids, write_cv_table

    names = {"variant": args.variant}
    folds = range(check_fold_ids((config.get("cross_validation") or {}).get("folds", range(5))))
    files = {(d, args.variant, f): PATHS["cv_metrics"].format(dataset=d, variant=args.variant, fold=f)
             for d in config["experiment"]["datasets"] for f in folds}
    table = write_cv_table(files, args.out_csv or PATHS["cv_table"].format(**names),
                           args.out_md or PATHS["cv_markdown"].format(**names),
                           args.out_html or PATHS["cv_html"].format(**names))
    summary = table[table["fold"].isin(["mean", "sd"])]
    print(summary[["dataset", "variant", "fold", "mean_auroc"]].to_string(index=False))


if __name__ == "__main__":
    cli.run(main)
