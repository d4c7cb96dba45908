"""Stage auroc_table: results/tables/auroc.csv (+ .md, .html), one row per dataset x variant of the experiment,
with the published rows (and differences) for datasets whose reader has published figures, and mean ± sd over
seeds; and results/metrics_summary.json, DVC's top-level metric (`dvc exp show`): mean AUROC and CI per dataset x
variant, taken from the metrics files."""
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run without installing the package
from xraypipe import cli
from xraypipe.metrics import seed_groups
from xraypipe.tables import write_auroc_table
from xraypipe.workflow import expand_pattern


def write_summary(files: dict, out: str) -> dict:
    """``{dataset: {variant: {mean_auroc, ci_low, ci_high}}}`` (4 decimals; null where undefined) from each
    evaluate metrics file's mean over labels: the few numbers `dvc exp show` compares experiments by."""
    from xraypipe.atomic import write_text

    def r4(x):
        return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 4)

    summary: dict = {}
    for (dataset, variant), path in files.items():
        mean = json.loads(Path(path).read_text()).get("mean") or {}
        summary.setdefault(dataset, {})[variant] = {
            "mean_auroc": r4(mean.get("auroc")), "ci_low": r4(mean.get("ci_low")), "ci_high": r4(mean.get("ci_high"))}
    write_text(out, json.dumps(summary, indent=1, sort_keys=True) + "\n")
    return summary


def main():
    p = cli.parser(__doc__)
    p.add_argument("--metrics", required=True, help="path pattern of the metrics files ({dataset}, {variant}: every dataset x variant of the experiment)")
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-md", required=True)
    p.add_argument("--out-html", required=True)
    p.add_argument("--out-summary", required=True, help="mean AUROC and CI per dataset x variant (JSON: DVC's metric)")
    args = p.parse_args()
    config = cli.stage_config(args, "table")
    files = {(k["dataset"], k["variant"]): path for k, path in expand_pattern(args.metrics, config)}
    readers = {d: config["datasets"][d]["reader"] for d in config["experiment"]["datasets"]}
    groups = seed_groups({v: config["variants"][v] for v in config["experiment"]["variants"]})
    write_summary(files, args.out_summary)
    table = write_auroc_table(files, args.out_csv, args.out_md, config["evaluation"]["ci_level"],
                              readers=readers, groups=groups, html_out=args.out_html)
    print(table[["dataset", "variant", "kind", "mean_auroc", "mean_ci_low", "mean_ci_high"]].to_string(index=False))


if __name__ == "__main__":
    cli.run(main)
