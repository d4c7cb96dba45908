"""Stage auroc_table: results/tables/auroc.csv (+ .md, .html), one row per dataset x variant of the experiment,
with the published rows (and differences) for datasets whose reader has published figures, and mean ± sd over
seeds."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run without installing the package
from xraypipe import cli
from xraypipe.metrics import seed_groups
from xraypipe.tables import write_auroc_table
from xraypipe.workflow import expand_pattern


def main():
    p = cli.parser(__doc__)
    p.add_argument("--metrics", required=True, help="path pattern of the metrics files ({dataset}, {variant}: every dataset x variant of the experiment)")
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-md", required=True)
    p.add_argument("--out-html", required=True)
    args = p.parse_args()
    config = cli.stage_config(args, "table")
    files = {(k["dataset"], k["variant"]): path for k, path in expand_pattern(args.metrics, config)}
    readers = {d: config["datasets"][d]["reader"] for d in config["experiment"]["datasets"]}
    groups = seed_groups({v: config["variants"][v] for v in config["experiment"]["variants"]})
    table = write_auroc_table(files, args.out_csv, args.out_md, config["evaluation"]["ci_level"],
                              readers=readers, groups=groups, html_out=args.out_html)
    print(table[["dataset", "variant", "kind", "mean_auroc", "mean_ci_low", "mean_ci_high"]].to_string(index=False))


if __name__ == "__main__":
    cli.run(main)
