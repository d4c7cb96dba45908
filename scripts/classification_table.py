"""Stage classification_table: results/tables/classification.csv (+ .md), per dataset x variant x label."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run without installing the package
from xraypipe import cli
from xraypipe.metrics import seed_groups
from xraypipe.tables import write_classification_table
from xraypipe.workflow import PATHS, experiment_pairs


def main():
    p = cli.parser(__doc__)
    p.add_argument("--out-csv", default=PATHS["classification_table"])
    p.add_argument("--out-md", default=PATHS["classification_markdown"])
    p.add_argument("--out-html", default=PATHS["classification_html"])
    args = p.parse_args()
    config = cli.resolve_config(args)
    files = {(d, v): PATHS["metrics"].format(dataset=d, variant=v) for d, v in experiment_pairs(config)}
    groups = seed_groups({v: config["variants"][v] for v in config["experiment"]["variants"]})
    table = write_classification_table(files, args.out_csv, args.out_md, groups, html_out=args.out_html)
    print(table[table["label"] == "macro"].to_string(index=False))


if __name__ == "__main__":
    cli.run(main)
