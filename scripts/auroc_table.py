"""Stage table: results/tables/auroc.csv (+ .md), one row per dataset x variant of the experiment, with the
published rows (and differences) for datasets whose reader has published figures, and mean ± sd over seeds."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run without installing the package
from xraypipe import cli
from xraypipe.metrics import seed_groups
from xraypipe.tables import write_auroc_table
from xraypipe.workflow import PATHS, experiment_pairs


def main():
    p = cli.parser(__doc__)
    p.add_argument("--out-csv", default=PATHS["auroc_table"])
    p.add_argument("--out-md", default=PATHS["auroc_markdown"])
    p.add_argument("--out-html", default=PATHS["auroc_html"])
    args = p.parse_args()
    config = cli.resolve_config(args)
    files = {(d, v): PATHS["metrics"].format(dataset=d, variant=v) for d, v in experiment_pairs(config)}
    readers = {d: config.get("datasets", {}).get(d, {}).get("reader") for d in config["experiment"]["datasets"]}
    groups = seed_groups({v: config.get("variants", {}).get(v, {}) for v in config["experiment"]["variants"]})
    table = write_auroc_table(files, args.out_csv, args.out_md, config.get("evaluation", {}).get("ci_level", 0.95),
                              readers=readers, groups=groups, html_out=args.out_html)
    print(table[["dataset", "variant", "kind", "mean_auroc", "mean_ci_low", "mean_ci_high"]].to_string(index=False))


if __name__ == "__main__":
    cli.run(main)
