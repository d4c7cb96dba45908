"""Comparison tables: one row per dataset x variant, with a Markdown twin."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from xraypipe.atomic import write_csv, write_text


def auroc_table(metric_files: dict[tuple[str, str], str | Path]) -> pd.DataFrame:
    """Rows: dataset, variant, n_test_images, n_test_patients, mean AUROC + CI, then AUROC + CI per pathology."""
    rows = []
    for (dataset, variant), path in metric_files.items():
        metrics = json.loads(Path(path).read_text())
        row = {"dataset": dataset, "variant": variant, "n_test_images": metrics["n_images"],
               "n_test_patients": metrics["n_patients"], "mean_auroc": metrics["mean"]["auroc"],
               "mean_ci_low": metrics["mean"]["ci_low"], "mean_ci_high": metrics["mean"]["ci_high"]}
        for label, values in metrics["labels"].items():
            row[label] = values["auroc"]
            row[f"{label}_ci_low"] = values["ci_low"]
            row[f"{label}_ci_high"] = values["ci_high"]
        rows.append(row)
    return pd.DataFrame(rows)


def _fmt(value, digits=3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def auroc_markdown(table: pd.DataFrame, ci_level: float = 0.95) -> str:
    """AUROC [CI] per cell; pathologies as columns."""
    fixed = {"dataset", "variant", "n_test_images", "n_test_patients", "mean_auroc", "mean_ci_low", "mean_ci_high"}
    labels = [c for c in table.columns if c not in fixed and not c.endswith(("_ci_low", "_ci_high"))]
    header = ["dataset", "variant", "test images (patients)", "mean AUROC"] + labels
    lines = [f"AUROC on the test split, {int(round(ci_level * 100))}% bootstrap CI in brackets.", "",
             "| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|"]
    for _, r in table.iterrows():
        cells = [str(r["dataset"]), str(r["variant"]), f"{r['n_test_images']} ({r['n_test_patients']})",
                 f"{_fmt(r['mean_auroc'])} [{_fmt(r['mean_ci_low'])}, {_fmt(r['mean_ci_high'])}]"]
        cells += [f"{_fmt(r[p])} [{_fmt(r[f'{p}_ci_low'])}, {_fmt(r[f'{p}_ci_high'])}]" for p in labels]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_auroc_table(metric_files: dict, csv_out, md_out, ci_level: float = 0.95) -> pd.DataFrame:
    table = auroc_table(metric_files)
    write_csv(csv_out, table, float_format="%.4f")
    write_text(md_out, auroc_markdown(table, ci_level))
    return table
