"""Stage study_table: results/tables/study_level.csv (+ .md, .html): study-level (mean of the study's image
probabilities) metrics per group (MURA body part) for datasets whose manifest has a study column; empty otherwise."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run without installing the package
from xraypipe import cli
from xraypipe.evaluation import study_level_rows
from xraypipe.tables import write_study_table
from xraypipe.workflow import expand_pattern


def main():
    p = cli.parser(__doc__)
    pattern = "path pattern ({dataset}, {variant}: every dataset x variant of the experiment) of "
    p.add_argument("--test-predictions", required=True, help=pattern + "the test-split predictions")
    p.add_argument("--val-predictions", required=True, help=pattern + "the validation-split predictions")
    p.add_argument("--cache-index", required=True, help="path pattern ({dataset}) of the cache indexes")
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-md", required=True)
    p.add_argument("--out-html", required=True)
    args = p.parse_args()
    config = cli.stage_config(args, "study_table")
    val = {(k["dataset"], k["variant"]): path for k, path in expand_pattern(args.val_predictions, config)}
    index = {k["dataset"]: path for k, path in expand_pattern(args.cache_index, config)}
    parts = [study_level_rows(k["dataset"], k["variant"], test, val[k["dataset"], k["variant"]], index[k["dataset"]],
                              config["evaluation"])
             for k, test in expand_pattern(args.test_predictions, config)]
    readers = {d: config["datasets"][d]["reader"] for d in config["experiment"]["datasets"]}
    table = write_study_table(parts, args.out_csv, args.out_md, readers, html_out=args.out_html)
    print(table.to_string(index=False) if len(table) else "no dataset with studies")


if __name__ == "__main__":
    cli.run(main)
