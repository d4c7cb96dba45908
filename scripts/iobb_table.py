"""Stage iobb_table: results/tables/iobb.csv (+ .md) in Wang et al.'s layout, with the published Wang et al. rows."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run without installing the package
from xraypipe import cli
from xraypipe.tables import write_iobb_table
from xraypipe.workflow import PATHS, experiment_pairs


def main():
    p = cli.parser(__doc__)
    p.add_argument("--out-csv", default=PATHS["iobb_table"])
    p.add_argument("--out-md", default=PATHS["iobb_markdown"])
    p.add_argument("--out-html", default=PATHS["iobb_html"])
    args = p.parse_args()
    config = cli.resolve_config(args)
    files = {(d, v): PATHS["loc_summary"].format(dataset=d, variant=v) for d, v in experiment_pairs(config)}
    readers = {d: config["datasets"][d]["reader"] for d in config["experiment"]["datasets"]}
    table = write_iobb_table(files, args.out_csv, args.out_md, readers, html_out=args.out_html)
    print(table.to_string(index=False))


if __name__ == "__main__":
    cli.run(main)
