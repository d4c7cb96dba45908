"""Stage reproduction_table: results/tables/reproduction_<study>.csv (+ .md, .html): the study's published figures
beside ours on the same metric with CIs, and what differs (xraypipe.reproduction)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run without installing the package
from xraypipe import cli
from xraypipe.reproduction import STUDIES, reproduction_rows
from xraypipe.tables import write_reproduction_table
from xraypipe.workflow import expand_pattern


def main():
    p = cli.parser(__doc__)
    pattern = "path pattern ({dataset}, {variant}: every dataset x variant of the experiment) of "
    p.add_argument("--study", required=True)
    p.add_argument("--metrics", required=True, help=pattern + "the metrics files")
    p.add_argument("--test-predictions", required=True, help=pattern + "the test-split predictions")
    p.add_argument("--history", required=True, help=pattern + "the training histories")
    p.add_argument("--cache-index", required=True, help="path pattern ({dataset}) of the cache indexes")
    p.add_argument("--iobb", required=True, help="the IoBB table (iobb.csv)")
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-md", required=True)
    p.add_argument("--out-html", required=True)
    args = p.parse_args()
    config = cli.stage_config(args, "reproduction")
    paths: dict = {"iobb": args.iobb}
    for key, pattern_arg in (("metrics", args.metrics), ("predictions", args.test_predictions),
                             ("history", args.history)):
        for k, path in expand_pattern(pattern_arg, config):
            paths.setdefault((k["dataset"], k["variant"]), {})[key] = path
    for k, path in expand_pattern(args.cache_index, config):
        paths.setdefault(k["dataset"], {})["index"] = path
    table = reproduction_rows(args.study, config, paths)
    write_reproduction_table(table, STUDIES[args.study].title, args.out_csv, args.out_md, args.out_html,
                             ci_level=config["evaluation"]["ci_level"], protocol=STUDIES[args.study].protocol)
    print(table.to_string(index=False))


if __name__ == "__main__":
    cli.run(main)
