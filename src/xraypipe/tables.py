"""Comparison tables: one row per dataset x variant, with a Markdown twin."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from xraypipe.atomic import write_csv, write_text
from xraypipe.metrics import TOO_FEW_POSITIVES


# columns of the AUROC table that are not a label's AUROC (its CI columns end in _ci_low/_ci_high)
AUROC_FIXED_COLUMNS = {"dataset", "variant", "kind", "n_test_images", "n_test_patients", "mean_auroc", "mean_ci_low",
                       "mean_ci_high", "too_few_positives"}


def auroc_table(metric_files: dict[tuple[str, str], str | Path]) -> pd.DataFrame:
    """Rows: dataset, variant, n_test_images, n_test_patients, mean AUROC + CI, then AUROC + CI per pathology."""
    rows = []
    for (dataset, variant), path in metric_files.items():
        metrics = json.loads(Path(path).read_text())
        row = {"dataset": dataset, "variant": variant, "n_test_images": metrics["n_images"],
               "n_test_patients": metrics["n_patients"], "mean_auroc": metrics["mean"]["auroc"],
               "mean_ci_low": metrics["mean"]["ci_low"], "mean_ci_high": metrics["mean"]["ci_high"]}
        too_few = []
        for label, values in metrics["labels"].items():
            row[label] = values["auroc"]
            row[f"{label}_ci_low"] = values["ci_low"]
            row[f"{label}_ci_high"] = values["ci_high"]
            if values.get("status") == TOO_FEW_POSITIVES:
                too_few.append(f"{label} ({values['n_positive']})")
        row["too_few_positives"] = "; ".join(too_few)
        rows.append(row)
    return pd.DataFrame(rows)


def _fmt(value, digits=3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def auroc_markdown(table: pd.DataFrame, ci_level: float = 0.95) -> str:
    """AUROC [CI] per cell; pathologies as columns. Published and difference rows (``kind``) show the value only;
    seed summaries show mean ± sd."""
    labels = [c for c in table.columns if c not in AUROC_FIXED_COLUMNS and not c.endswith(("_ci_low", "_ci_high", "_sd"))]
    header = ["dataset", "variant", "test images (patients)", "mean AUROC"] + labels
    lines = [f"AUROC on the test split, {int(round(ci_level * 100))}% bootstrap CI in brackets.", "",
             "| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|"]
    for _, r in table.iterrows():
        kind = r.get("kind", "measured")
        if kind == "measured":
            n = f"{int(r['n_test_images'])} ({int(r['n_test_patients'])})"
            cells = [f"{_fmt(r['mean_auroc'])} [{_fmt(r['mean_ci_low'])}, {_fmt(r['mean_ci_high'])}]"]
            too_few = _too_few_positives(r)
            cells += [f"{TOO_FEW_POSITIVES} ({too_few[p]})" if p in too_few
                      else f"{_fmt(r[p])} [{_fmt(r[f'{p}_ci_low'])}, {_fmt(r[f'{p}_ci_high'])}]" for p in labels]
        elif kind == "seeds":
            n = ""
            cells = [f"{_fmt(r[c])} ± {_fmt(r.get(f'{c}_sd'))}" for c in ["mean_auroc", *labels]]
        else:
            n = ""
            sign = "+" if kind == "difference" else ""
            cells = [_fmt_signed(r[c]) if sign else _fmt(r[c]) for c in ["mean_auroc", *labels]]
        lines.append("| " + " | ".join([str(r["dataset"]), str(r["variant"]), n, *cells]) + " |")
    if "kind" in table.columns and (table["kind"] != "measured").any():
        lines += ["", REFERENCE_NOTE]
    if (table.get("kind", pd.Series("measured", index=table.index)).eq("measured") & table["n_test_images"].eq(0)).any():
        lines += ["", NO_TEST_NOTE]
    if any(_too_few_positives(r) for _, r in table.iterrows()):
        lines += ["", TOO_FEW_NOTE]
    return "\n".join(lines) + "\n"


def _too_few_positives(row) -> dict[str, str]:
    """label -> its test positive count, for the labels a row reports as too few positives to score."""
    text = row.get("too_few_positives")
    if not isinstance(text, str) or not text:
        return {}
    return {item.rsplit(" (", 1)[0]: item.rsplit(" (", 1)[1].rstrip(")") for item in text.split("; ")}


TOO_FEW_NOTE = (
    f"'{TOO_FEW_POSITIVES} (n)': the test split holds n positives of that finding, fewer than "
    "evaluation.min_test_positives; no AUROC is given for it and it is left out of the mean.")


NO_TEST_NOTE = (
    "Rows with 0 test images: the source has no test split (e.g. a MedMNIST file holding only train and val, with "
    "split.test_fraction 0). Nothing was scored; results/metrics/<dataset>/<variant>.json holds the validation "
    "AUROC, which is optimistic (the model was selected on it).")


def _fmt_signed(value, digits=3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:+.{digits}f}"


REFERENCE_NOTE = (
    "Published rows are the papers' figures on the *real* dataset (see xraypipe.references for the citations); "
    "difference rows are this row minus the published one, over the same labels. For a synthetic twin the "
    "comparison shows the table's format, not a like-for-like result.")


def with_auroc_references(table: pd.DataFrame, readers: dict | None = None, groups: dict | None = None) -> pd.DataFrame:
    """Add ``kind`` (measured), then per dataset the published rows of its reader with the difference of each
    measured variant, and mean ± sd rows over variants that differ only by seed (``groups``: variant -> group)."""
    from xraypipe.metrics import summarise_over_seeds
    from xraypipe.references import AUROC_REFERENCES_BY_READER

    table = table.copy()
    table.insert(2, "kind", "measured")
    labels = [c for c in table.columns if c not in AUROC_FIXED_COLUMNS and not c.endswith(("_ci_low", "_ci_high"))]
    extra = []
    for dataset, measured in table.groupby("dataset", sort=False):
        refs = AUROC_REFERENCES_BY_READER.get((readers or {}).get(dataset), {})
        for source, values in refs.items():
            shared = [p for p in labels if p in values and measured[p].notna().any()]
            if not shared:
                continue
            ref = {"dataset": dataset, "variant": f"published: {source}", "kind": "published",
                   "mean_auroc": sum(values[p] for p in shared) / len(shared), **{p: values[p] for p in shared}}
            extra.append(ref)
            for _, r in measured.iterrows():
                diff = {"dataset": dataset, "variant": f"{r['variant']} - {source}", "kind": "difference",
                        **{p: r[p] - values[p] for p in shared}}
                diff["mean_auroc"] = float(pd.Series([r[p] for p in shared]).mean()) - ref["mean_auroc"]
                extra.append(diff)
    if groups:
        summary = summarise_over_seeds(table, groups, ["dataset"], ["mean_auroc", *labels])
        for _, s in summary.iterrows():
            row = {"dataset": s["dataset"], "variant": f"{s['group']} (mean ± sd over {s['n_seeds']} seeds)",
                   "kind": "seeds"}
            for c in ["mean_auroc", *labels]:
                row[c], row[f"{c}_sd"] = s[f"{c}_mean"], s[f"{c}_sd"]
            extra.append(row)
    return pd.concat([table, pd.DataFrame(extra)], ignore_index=True) if extra else table


def write_auroc_table(metric_files: dict, csv_out, md_out, ci_level: float = 0.95, readers: dict | None = None,
                      groups: dict | None = None, html_out=None) -> pd.DataFrame:
    table = with_auroc_references(auroc_table(metric_files), readers, groups)
    write_csv(csv_out, table, float_format="%.4f")
    write_text(md_out, auroc_markdown(table, ci_level))
    if html_out:
        write_html_table(html_out, table, f"AUROC on the test split with {int(round(ci_level * 100))}% bootstrap CIs "
                                          "(ci_low/ci_high); published rows and differences where available.")
    return table


# ---------------------------------------------------------------------------------------------- HTML twin
def write_html_table(path, frame: pd.DataFrame, caption: str, digits: int = 3) -> None:
    """A self-contained HTML page with the table (shown inline by `snakemake --report`, which does not render CSV)."""
    import html

    body = frame.to_html(index=False, na_rep="n/a", float_format=lambda v: f"{v:.{digits}f}", border=0,
                         classes="xraypipe-table")
    write_text(path, "<!DOCTYPE html><html><head><meta charset='utf-8'><title>{t}</title><style>"
               "body{{font-family:sans-serif;font-size:13px}} table{{border-collapse:collapse}}"
               "td,th{{padding:2px 6px;border-bottom:1px solid #ddd;text-align:right}}"
               "td:first-child,th:first-child{{text-align:left}}</style></head><body><p>{t}</p>{b}</body></html>\n"
               .format(t=html.escape(caption), b=body))


# ---------------------------------------------------------------------------------------------- generic Markdown
COUNT_COLUMNS = {"tp", "fp", "tn", "fn", "n", "n_positive", "n_studies", "n_images", "n_seeds"}


def markdown_table(frame: pd.DataFrame, caption: str = "", digits: int = 3, note: str = "") -> str:
    """A plain pipe table (floats to ``digits``; NaN as n/a) with a caption line and an optional note."""
    cols = list(frame.columns)
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) for c in cols]
    lines = ([caption, ""] if caption else []) + ["| " + " | ".join(map(str, cols)) + " |",
                                                  "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    for _, r in frame.iterrows():
        cells = []
        counts_row = r.get("metric") in ("n_boxes", "n_images") or r.get("kind") == "counts"
        for c in cols:
            v = r[c]
            if isinstance(v, (float, np.floating, int, np.integer)) and not isinstance(v, bool):
                v = float(v)
                if np.isnan(v):
                    cells.append("n/a")
                elif (c in COUNT_COLUMNS or counts_row) and v.is_integer():
                    cells.append(str(int(v)))
                else:
                    cells.append(f"{v:.{digits}f}")
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- classification
CLASSIFICATION_COLUMNS = ["threshold", "auroc", "auroc_ci_low", "auroc_ci_high", "auprc", "sensitivity",
                          "specificity", "precision", "f1", "accuracy", "balanced_error", "kappa", "tp", "fp", "tn",
                          "fn", "n", "n_positive"]


def classification_table(metric_files: dict, groups: dict | None = None) -> pd.DataFrame:
    """One row per dataset x variant x label (and a ``macro`` row): the evaluate stage's test metrics at the
    validation-chosen thresholds; plus mean ± sd rows (kind ``seeds_mean``/``seeds_sd``) over seed groups."""
    from xraypipe.metrics import summarise_over_seeds

    rows = []
    for (dataset, variant), path in metric_files.items():
        metrics = json.loads(Path(path).read_text())
        # the validation-chosen operating point, then any fixed ones (evaluation.fixed_thresholds)
        for report in [metrics["classification"], *metrics.get("classification_fixed", [])]:
            for label, values in report["labels"].items():
                ci = metrics["labels"].get(label, {})
                rows.append({"dataset": dataset, "variant": variant, "kind": "measured", "label": label,
                             "threshold_method": report["method"],
                             **{k: values.get(k) for k in CLASSIFICATION_COLUMNS},
                             "auroc_ci_low": ci.get("ci_low"), "auroc_ci_high": ci.get("ci_high")})
            macro = report["macro"]
            rows.append({"dataset": dataset, "variant": variant, "kind": "measured", "label": "macro",
                         "threshold_method": report["method"], **{k: macro.get(k) for k in CLASSIFICATION_COLUMNS},
                         "auroc_ci_low": metrics["mean"]["ci_low"], "auroc_ci_high": metrics["mean"]["ci_high"]})
    table = pd.DataFrame(rows, columns=["dataset", "variant", "kind", "label", "threshold_method",
                                        *CLASSIFICATION_COLUMNS]).astype({c: float for c in CLASSIFICATION_COLUMNS})
    if groups:
        values = ["auroc", "auprc", "sensitivity", "specificity", "precision", "f1", "accuracy", "balanced_error",
                  "kappa"]
        summary = summarise_over_seeds(table, groups, ["dataset", "label", "threshold_method"], values)
        extra = []
        for _, s in summary.iterrows():
            for stat in ("mean", "sd"):
                extra.append({"dataset": s["dataset"], "variant": f"{s['group']} ({s['n_seeds']} seeds)",
                              "kind": f"seeds_{stat}", "label": s["label"], "threshold_method": s["threshold_method"],
                              **{v: s[f"{v}_{stat}"] for v in values}})
        if extra:
            table = pd.concat([table, pd.DataFrame(extra)], ignore_index=True)
    return table


def write_classification_table(metric_files: dict, csv_out, md_out, groups: dict | None = None,
                               html_out=None) -> pd.DataFrame:
    table = classification_table(metric_files, groups)
    write_csv(csv_out, table, float_format="%.4f")
    shown = table[["dataset", "variant", "kind", "label", "threshold_method", "threshold", "auroc", "auprc",
                   "sensitivity", "specificity",
                   "precision", "f1", "accuracy", "balanced_error", "kappa", "tp", "fp", "tn", "fn"]]
    method = ", ".join(sorted(m for m in table["threshold_method"].dropna().unique() if not m.startswith("fixed")))
    method = method or "n/a"
    caption = (f"Test-split classification metrics at operating thresholds chosen on the validation split ({method}; "
               "'fixed t' rows: the same threshold t for every label, e.g. a study's own 0.5 rule, chosen on no "
               "split); balanced error = 1 - (sensitivity + specificity) / 2; kappa = Cohen's kappa.")
    write_text(md_out, markdown_table(shown, caption=caption))
    if html_out:
        write_html_table(html_out, shown, caption)
    return table


# ---------------------------------------------------------------------------------------------- localization
def iobb_table(summary_files: dict, readers: dict | None = None, split_counts: dict | None = None) -> pd.DataFrame:
    """Wang et al.'s layout: rows (dataset, variant, localizer, T, metric), columns the boxed findings; plus the
    published Wang et al. rows (acc) and each localizer's difference from them, for datasets of a reader with
    published figures.

    ``summary_files``: (dataset, variant) -> a summary.csv path or a list of them (the localize stage's Grad-CAM
    box methods, the detect stage's detector); a ``localizer`` column in a summary names its rows.
    ``split_counts``: dataset -> ``xraypipe.detection.box_split`` counts; adds ``kind`` = counts rows (boxes,
    images and patients per finding used for detector training and for scoring)."""
    from xraypipe.references import LOCALIZATION_REFERENCES_BY_READER

    parts = []
    for (dataset, variant), paths in summary_files.items():
        for path in [paths] if isinstance(paths, (str, Path)) else list(paths):
            summary = pd.read_csv(path)
            if "localizer" not in summary.columns:
                summary.insert(0, "localizer", "")
            if summary.drop(columns=["localizer", "T", "metric"]).empty:
                continue
            summary = summary[["localizer"] + [c for c in summary.columns if c != "localizer"]]
            summary.insert(1, "kind", "measured")
            summary.insert(0, "variant", variant)
            summary.insert(0, "dataset", dataset)
            parts.append(summary)
            findings = list(summary.columns[6:])
            for source, ref in LOCALIZATION_REFERENCES_BY_READER.get((readers or {}).get(dataset), {}).items():
                known = [f for f in findings if f in next(iter(ref.values()))]
                for localizer, rows in summary.groupby("localizer", sort=False):
                    if not comparable_with_wang(localizer):
                        continue
                    for t, values in ref.items():
                        measured = rows[(rows["metric"] == "acc") & (rows["T"].round(4) == round(t, 4))]
                        if measured.empty:
                            continue
                        parts.append(pd.DataFrame([{"dataset": dataset, "variant": f"{variant} - {source}",
                                                    "localizer": localizer, "kind": "difference", "T": t,
                                                    "metric": "acc",
                                                    **{f: measured.iloc[0][f] - values[f] for f in known}}]))
    columns = ["dataset", "variant", "localizer", "kind", "T", "metric"]
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    refs = []
    for dataset in table["dataset"].unique():
        for source, ref in LOCALIZATION_REFERENCES_BY_READER.get((readers or {}).get(dataset), {}).items():
            for t, values in ref.items():
                refs.append({"dataset": dataset, "variant": f"published: {source}", "localizer": "heatmap (Wang)",
                             "kind": "published", "T": t, "metric": "acc",
                             **{f: v for f, v in values.items() if f in table.columns}})
    if refs:
        table = pd.concat([table, pd.DataFrame(refs)], ignore_index=True)
    order = {"measured": 0, "published": 1, "difference": 2}
    if len(table):
        table = table.assign(_k=table["kind"].map(order),
                             _m=table["metric"].map({m: i for i, m in enumerate(LOCALIZATION_METRICS)}).fillna(99))
        table = table.sort_values(["dataset", "_m", "T", "_k"], kind="stable").drop(columns=["_k", "_m"])
    counts = []
    for dataset, c in (split_counts or {}).items():
        if dataset not in set(table["dataset"]):
            continue
        for role, label in (("detector_train", "train"), ("scoring", "scored")):
            for unit in ("boxes", "images", "patients"):
                counts.append({"dataset": dataset, "variant": f"box split: {c['source']}", "localizer": "",
                               "kind": "counts", "T": np.nan, "metric": f"{label}_{unit}",
                               **{f: v[unit] for f, v in c[role]["per_finding"].items() if f in table.columns}})
    if counts:
        table = pd.concat([table, pd.DataFrame(counts)], ignore_index=True)
    return table.reset_index(drop=True)


LOCALIZATION_METRICS = ("acc", "acc_ci_low", "acc_ci_high", "afp", "acc_iou", "acc_iou_ci_low", "acc_iou_ci_high",
                        "afp_iou", "mean_iobb", "mean_iou", "n_boxes", "n_images")


def comparable_with_wang(localizer: str) -> bool:
    """Wang et al. explain the ground-truth class of each box: difference rows only for the oracle-class heatmap
    localizers (a classifier-conditioned row also pays for the classifier's misses)."""
    return localizer.endswith("(oracle class)")


def with_intervals(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """The Markdown view of a localization table: each measured hit fraction with its CI in one cell
    ("0.450 [0.380, 0.520]") and the CI rows dropped; other rows as they are."""
    keys = ["dataset", "variant", "localizer", "T"]
    findings = [c for c in table.columns if c not in (*keys, "kind", "metric")]
    out = table.copy()
    out[findings] = out[findings].astype(object)
    is_ci = table["metric"].str.contains("_ci_")
    ci = table[is_ci].set_index(keys + ["metric"])
    for i, row in table[~is_ci & table["metric"].isin(["acc", "acc_iou"]) & (table["kind"] == "measured")].iterrows():
        key = tuple(row[k] for k in keys)
        for f in findings:
            v = row[f]
            try:
                low, high = ci.loc[key + (f"{row['metric']}_ci_low",), f], ci.loc[key + (f"{row['metric']}_ci_high",), f]
            except KeyError:
                continue
            if pd.notna(v) and pd.notna(low) and pd.notna(high):
                out.at[i, f] = f"{v:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
    return out[~is_ci].reset_index(drop=True)


def split_counts_note(split_counts: dict | None) -> str:
    """One sentence per dataset: boxes / images / patients for detector training and for scoring."""
    lines = []
    for dataset, c in (split_counts or {}).items():
        tr, sc = c["detector_train"], c["scoring"]
        lines.append(f"{dataset}: detector trained on {tr['boxes']} boxes / {tr['images']} images / {tr['patients']} "
                     f"patients ({c['source']}); every localizer scored on {sc['boxes']} boxes / {sc['images']} images"
                     f" / {sc['patients']} patients" + (f" ({c['not_scored']['images']} more boxed images over "
                                                        "max_images not scored)" if c["not_scored"]["images"] else "")
                     + ".")
    return "\n".join(lines)


def write_iobb_table(summary_files: dict, csv_out, md_out, readers: dict | None = None, html_out=None,
                     split_counts: dict | None = None) -> pd.DataFrame:
    table = iobb_table(summary_files, readers, split_counts)
    write_csv(csv_out, table, float_format="%.4f")
    caption = ("Localization on the scored images with ground-truth boxes (Wang et al. 2017 layout): acc = fraction "
               "of ground-truth boxes with IoBB > T (IoBB = intersection / detected box area), with its 95% "
               "patient-clustered bootstrap CI in brackets; acc_iou = the same with IoU > T (the NIH localization "
               "study's criterion); afp / afp_iou = false-positive boxes of the finding (IoBB / IoU <= T, or a box "
               "of a finding the image has no box of) per scored image with a box of that finding; mean_iobb / "
               "mean_iou = best match per box; n_images = the AFP denominator. Localizers: <heatmap>/threshold "
               "(connected components of the thresholded heatmap), <heatmap>/heuristic (the NIH localization "
               "study's mean-box-size heuristic), <heatmap>/wang60 and /wang180 (Wang et al.'s rule: every region "
               "above 60 / 180 of the map scaled to 0-255), each for the findings the classifier calls positive at "
               "its validation-chosen threshold (a finding it misses is a miss) and, '(oracle class)', for the "
               "ground-truth findings (Wang et al.'s setting: difference rows only for these); maskrcnn or "
               "fasterrcnn (a detector trained on the boxes, kept for the findings the classifier calls positive; "
               "/unconditioned: all its boxes).")
    shown = set(table["dataset"]) if len(table) else set()
    notes = [n for n in (split_counts_note({d: c for d, c in (split_counts or {}).items() if d in shown}),
                         REFERENCE_NOTE if (table.get("kind") == "published").any() else "") if n]
    write_text(md_out, markdown_table(with_intervals(table), caption=caption, note="\n\n".join(notes))
               if len(table) else caption + "\n\nNo dataset of this experiment has ground-truth boxes.\n")
    if html_out:
        write_html_table(html_out, with_intervals(table), caption)
    return table


# ---------------------------------------------------------------------------------------------- study level
def study_table(parts: list[pd.DataFrame], readers: dict | None = None) -> pd.DataFrame:
    """Rows per dataset x variant x level (study, image) x threshold rule x group x label, with the published
    MURA row for MURA datasets and the differences from it: for the study-level overall rows at the fixed 0.5
    threshold when the run reports it (the published figures' rule), else at the validation-chosen one."""
    from xraypipe.references import STUDY_REFERENCES_BY_READER

    parts = [p for p in parts if len(p)]
    columns = ["dataset", "variant", "kind", "level", "threshold_method", "group", "label", "n", "n_studies",
               "threshold", "auroc", "auprc", "sensitivity", "specificity", "precision", "f1", "accuracy",
               "balanced_error", "kappa", "tp", "fp", "tn", "fn"]
    if not parts:
        return pd.DataFrame(columns=columns)
    table = pd.concat(parts, ignore_index=True)
    for column, default in (("level", "study"), ("threshold_method", "")):
        if column not in table.columns:
            table[column] = default
    table["kind"] = "measured"
    extra = []
    for dataset in table["dataset"].unique():
        for source, values in STUDY_REFERENCES_BY_READER.get((readers or {}).get(dataset), {}).items():
            extra.append({"dataset": dataset, "variant": f"published: {source}", "kind": "published",
                          "level": "study", "threshold_method": "fixed 0.5", "group": "all", **values})
            overall = table[(table["dataset"] == dataset) & (table["group"] == "all") & (table["level"] == "study")]
            if (overall["threshold_method"] == "fixed 0.5").any():
                overall = overall[overall["threshold_method"] == "fixed 0.5"]
            for _, r in overall.iterrows():
                extra.append({"dataset": dataset, "variant": f"{r['variant']} - {source}", "kind": "difference",
                              "level": "study", "threshold_method": r["threshold_method"], "group": "all",
                              "label": r["label"], **{k: r[k] - v for k, v in values.items()}})
    if extra:
        table = pd.concat([table, pd.DataFrame(extra)], ignore_index=True)
    return table[[c for c in columns if c in table.columns]]


def write_study_table(parts: list[pd.DataFrame], csv_out, md_out, readers: dict | None = None,
                      html_out=None) -> pd.DataFrame:
    table = study_table(parts, readers)
    write_csv(csv_out, table, float_format="%.4f")
    caption = ("Study-level metrics (level study: a study's probability = the mean over its images) and image-level "
               "metrics (level image), per body part and overall, at thresholds chosen on the validation split "
               "(studies or images) and, 'fixed t' rows, at the same threshold t for every study (the MURA study's "
               "0.5 vote; evaluation.fixed_thresholds).")
    write_text(md_out, markdown_table(table, caption=caption) if len(table) else
               caption + "\n\nNo dataset of this experiment has studies (a study_id column in its manifest).\n")
    if html_out:
        write_html_table(html_out, table, caption if len(table) else
                         caption + " No dataset of this experiment has studies (a study_id column in its manifest).")
    return table


def write_reproduction_table(table: pd.DataFrame, title: str, csv_out, md_out, html_out=None,
                             ci_level: float = 0.95, protocol: str = "") -> pd.DataFrame:
    """``xraypipe.reproduction.reproduction_rows``'s table as CSV, and as Markdown/HTML with "ours" in one cell
    ("0.712 [0.650, 0.770]") beside the published figure and its source."""
    write_csv(csv_out, table, float_format="%.4f")
    view = table.drop(columns=["study"]).copy()
    view["ours"] = [
        ("not run" if pd.isna(variant) else "no such images") if pd.isna(v) else
        (f"{v:.3f}" if pd.isna(lo) or pd.isna(hi) else f"{v:.3f} [{lo:.3f}, {hi:.3f}]")
        for v, lo, hi, variant in zip(table["ours"], table["ours_ci_low"], table["ours_ci_high"], table["variant"])]
    view = view.drop(columns=["ours_ci_low", "ours_ci_high"]).astype(object)
    view = view.where(view.notna(), "")  # a threshold-free metric has no threshold, a classifier metric no T
    caption = (f"Reproduction of {title}: the figures its report gives (published, with the table or figure they "
               f"come from) and ours on the same metric, scope and decision rule, with {ci_level:.0%} "
               "patient-clustered bootstrap intervals; 'differs' says what is not as in the study."
               + (f" Protocol, for every row: {protocol}." if protocol else ""))
    write_text(md_out, markdown_table(view, caption=caption))
    if html_out:
        write_html_table(html_out, view, caption)
    return table
