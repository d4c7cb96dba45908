"""Stage iobb_table: results/tables/iobb.csv (+ .md, .html) in Wang et al.'s layout: Grad-CAM threshold and
heuristic boxes and the detector side by side, the published Wang et al. rows, and the box split's counts."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run without installing the package
from xraypipe import cli
from xraypipe.tables import write_iobb_table
from xraypipe.workflow import expand_pattern


def main():
    p = cli.parser(__doc__)
    pattern = "path pattern ({dataset}, {variant}: every dataset x variant of the experiment) of "
    p.add_argument("--gradcam-summary", required=True, help=pattern + "the localize stage's summaries")
    p.add_argument("--detector-summary", required=True, help=pattern + "the detect stage's summaries")
    p.add_argument("--detector-info", required=True, help=pattern + "the detect stage's info.json (box split counts)")
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-md", required=True)
    p.add_argument("--out-html", required=True)
    args = p.parse_args()
    config = cli.stage_config(args, "table")
    key = lambda k: (k["dataset"], k["variant"])  # noqa: E731
    gradcam = {key(k): path for k, path in expand_pattern(args.gradcam_summary, config)}
    detector = {key(k): path for k, path in expand_pattern(args.detector_summary, config)}
    files = {pair: [gradcam[pair], detector[pair]] for pair in gradcam}
    # the box split is the same for every variant of a dataset: its counts from the first variant's detect run
    split_counts = {}
    for k, path in expand_pattern(args.detector_info, config):
        split_counts.setdefault(k["dataset"], json.loads(Path(path).read_text())["box_split"])
    readers = {d: config["datasets"][d]["reader"] for d in config["experiment"]["datasets"]}
    table = write_iobb_table(files, args.out_csv, args.out_md, readers, html_out=args.out_html,
                             split_counts=split_counts)
    print(table.to_string(index=False))


if __name__ == "__main__":
    cli.run(main)
