"""Stage iobb_table: results/tables/iobb.csv (+ .md) in Wang et al.'s layout: Grad-CAM threshold and heuristic
boxes and the detector side by side, the published Wang et al. rows, and the box split's counts."""
import json
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
    pairs = experiment_pairs(config)
    # per dataset x classifier variant: the Grad-CAM box methods (localize) and the detector (detect)
    files = {(d, v): [PATHS[key].format(dataset=d, variant=v) for key in ("loc_summary", "det_summary")]
             for d, v in pairs}
    readers = {d: config["datasets"][d]["reader"] for d in config["experiment"]["datasets"]}
    # the box split is the same for every variant of a dataset: its counts from the first variant's detect run
    split_counts = {}
    for d, v in pairs:
        if d not in split_counts:
            split_counts[d] = json.loads(Path(PATHS["det_info"].format(dataset=d, variant=v)).read_text())["box_split"]
    table = write_iobb_table(files, args.out_csv, args.out_md, readers, html_out=args.out_html,
                             split_counts=split_counts)
    print(table.to_string(index=False))


if __name__ == "__main__":
    cli.run(main)
