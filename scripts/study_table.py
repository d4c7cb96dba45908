"""Stage study_table: results/tables/study_level.csv (+ .md): study-level (mean of the study's image probabilities)
metrics per group (MURA body part) for datasets whose manifest has a study column; empty otherwise."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run without installing the package
from xraypipe import cli
from xraypipe.evaluation import study_level_rows
from xraypipe.tables import write_study_table
from xraypipe.workflow import PATHS, experiment_pairs


def main():
    p = cli.parser(__doc__)
    p.add_argument("--out-csv", default=PATHS["study_table"])
    p.add_argument("--out-md", default=PATHS["study_markdown"])
    p.add_argument("--out-html", default=PATHS["study_html"])
    args = p.parse_args()
    config = cli.resolve_config(args)
    evaluation = config.get("evaluation", {})
    parts = []
    for d, v in experiment_pairs(config):
        pred = PATHS["predictions"]
        parts.append(study_level_rows(d, v, pred.format(dataset=d, variant=v, split="test"),
                                      pred.format(dataset=d, variant=v, split="val"),
                                      PATHS["cache_index"].format(dataset=d), evaluation))
    readers = {d: config["datasets"][d]["reader"] for d in config["experiment"]["datasets"]}
    table = write_study_table(parts, args.out_csv, args.out_md, readers, html_out=args.out_html)
    print(table.to_string(index=False) if len(table) else "no dataset with studies")


if __name__ == "__main__":
    cli.run(main)
