"""Comparison tables: published reference rows and differences, Wang et al.'s IoBB layout, study-level table."""

import json

import numpy as np
import pandas as pd
import pytest

from xraypipe.references import NIH_AUROC, WANG_IOBB_ACC
from xraypipe.tables import (markdown_table, study_table, with_auroc_references, write_auroc_table,
                             write_classification_table, write_iobb_table)


def _metrics(path, a, b):
    labels = {"Mass": {"auroc": a, "ci_low": a - 0.1, "ci_high": a + 0.1},
              "Nodule": {"auroc": b, "ci_low": b - 0.1, "ci_high": b + 0.1}}
    cls = {"method": "youden", "thresholds": {"Mass": 0.5, "Nodule": 0.4},
           "labels": {k: {"threshold": 0.5, "auroc": v["auroc"], "auprc": 0.5, "sensitivity": 0.8, "specificity": 0.7,
                          "precision": 0.4, "f1": 0.5, "accuracy": 0.7, "balanced_error": 0.25, "kappa": 0.3,
                          "tp": 8, "fp": 12, "tn": 28, "fn": 2, "n": 50, "n_positive": 10} for k, v in labels.items()},
           "macro": {"auroc": (a + b) / 2, "f1": 0.5}}
    path.write_text(json.dumps({"n_images": 50, "n_patients": 20, "labels": labels,
                                "mean": {"auroc": (a + b) / 2, "ci_low": 0.5, "ci_high": 0.9}, "classification": cls}))
    return path


def test_auroc_table_reference_rows_and_differences(tmp_path):
    files = {("nih_synthetic", "r"): _metrics(tmp_path / "r.json", 0.9, 0.7),
             ("nih_synthetic", "r_s1"): _metrics(tmp_path / "r1.json", 0.8, 0.6)}
    table = write_auroc_table(files, tmp_path / "a.csv", tmp_path / "a.md", readers={"nih_synthetic": "nih"},
                              groups={"r": "r", "r_s1": "r"}, html_out=tmp_path / "a.html").set_index("variant")
    chexnet = NIH_AUROC["CheXNet (Rajpurkar et al. 2017)"]
    ref = table.loc["published: CheXNet (Rajpurkar et al. 2017)"]
    assert ref["Mass"] == chexnet["Mass"] and ref["mean_auroc"] == pytest.approx((chexnet["Mass"] + chexnet["Nodule"]) / 2)
    # Wang et al.'s own 8-class row (CVPR Table 3) beside it, on the labels both have, labelled with its table
    from xraypipe.references import WANG_CVPR_TABLE_3

    wang8 = table.loc[f"published: {WANG_CVPR_TABLE_3}"]
    assert (wang8["Mass"], wang8["Nodule"]) == (0.56, 0.71) and "CVPR Table 3" in WANG_CVPR_TABLE_3
    diff = table.loc["r - CheXNet (Rajpurkar et al. 2017)"]
    assert diff["kind"] == "difference" and diff["Mass"] == pytest.approx(0.9 - chexnet["Mass"])
    seeds = table.loc["r (mean ± sd over 2 seeds)"]
    assert seeds["Mass"] == pytest.approx(0.85) and seeds["Mass_sd"] == pytest.approx(np.std([0.9, 0.8], ddof=1))
    md = (tmp_path / "a.md").read_text()
    assert "| nih_synthetic | r | 50 (20) | 0.800 [0.500, 0.900] |" in md and "real* dataset" in md
    assert "<table" in (tmp_path / "a.html").read_text()
    # no published figures for an unknown reader: measured rows only
    plain = with_auroc_references(pd.read_csv(tmp_path / "a.csv").query("kind == 'measured'").drop(columns="kind"),
                                  {"nih_synthetic": "other"})
    assert set(plain["kind"]) == {"measured"}


def test_classification_table_has_macro_and_seed_rows(tmp_path):
    files = {("d", "r"): _metrics(tmp_path / "r.json", 0.9, 0.7), ("d", "r2"): _metrics(tmp_path / "r2.json", 0.7, 0.7)}
    table = write_classification_table(files, tmp_path / "c.csv", tmp_path / "c.md", {"r": "r", "r2": "r"})
    measured = table[table["kind"] == "measured"]
    assert len(measured) == 6 and set(measured["label"]) == {"Mass", "Nodule", "macro"}
    mean = table[(table["kind"] == "seeds_mean") & (table["label"] == "Mass")].iloc[0]
    assert mean["auroc"] == pytest.approx(0.8)
    assert "| d | r | measured | Mass | youden | 0.500 |" in (tmp_path / "c.md").read_text()


def test_classification_table_reports_fixed_thresholds_beside_the_chosen_one(tmp_path):
    """evaluation.fixed_thresholds (a study's own 0.5 rule): its rows sit beside the validation-chosen ones and
    are averaged over seeds apart from them."""
    from xraypipe.metrics import fixed_threshold_report

    test = pd.DataFrame({"label_Mass": [0, 0, 1, 1], "prob_Mass": [0.2, 0.6, 0.4, 0.9]})
    fixed = fixed_threshold_report(test, ["Mass"], 0.5)
    m = fixed["labels"]["Mass"]
    assert fixed["method"] == "fixed 0.5" and (m["tp"], m["fp"], m["tn"], m["fn"]) == (1, 1, 1, 1)
    files = {}
    for name, a in (("r", 0.9), ("r2", 0.7)):
        path = _metrics(tmp_path / f"{name}.json", a, 0.7)
        metrics = json.loads(path.read_text())
        metrics["classification_fixed"] = [fixed]
        path.write_text(json.dumps(metrics))
        files[("d", name)] = path
    table = write_classification_table(files, tmp_path / "c.csv", tmp_path / "c.md", {"r": "r", "r2": "r"})
    measured = table[table["kind"] == "measured"]
    assert measured.groupby("threshold_method").size().to_dict() == {"fixed 0.5": 4, "youden": 6}
    seeds = table[table["kind"] == "seeds_mean"]
    assert set(seeds["threshold_method"]) == {"youden", "fixed 0.5"}
    assert seeds[(seeds["threshold_method"] == "fixed 0.5") & (seeds["label"] == "Mass")]["accuracy"].iloc[0] == 0.5
    md = (tmp_path / "c.md").read_text()
    assert "| d | r | measured | Mass | fixed 0.5 | 0.500 |" in md and "(youden;" in md


def test_iobb_table_in_wang_layout_with_the_published_row(tmp_path):
    rows = []
    for localizer in ("gradcam/threshold", "gradcam/threshold (oracle class)"):
        for t in (0.1, 0.25, 0.5, 0.75, 0.9):
            rows.append({"localizer": localizer, "T": t, "metric": "acc", "Mass": 0.5, "Nodule": 0.25})
            rows.append({"localizer": localizer, "T": t, "metric": "acc_ci_low", "Mass": 0.4, "Nodule": 0.125})
            rows.append({"localizer": localizer, "T": t, "metric": "acc_ci_high", "Mass": 0.6, "Nodule": np.nan})
            rows.append({"localizer": localizer, "T": t, "metric": "afp", "Mass": 1.0, "Nodule": 0.0})
    pd.DataFrame(rows).to_csv(tmp_path / "s.csv", index=False)
    table = write_iobb_table({("nih_synthetic", "r"): tmp_path / "s.csv"}, tmp_path / "i.csv", tmp_path / "i.md",
                             {"nih_synthetic": "nih"})
    wang = table[table["kind"] == "published"].set_index("T")
    assert list(wang.index) == [0.1, 0.25, 0.5, 0.75, 0.9]
    assert wang.loc[0.5, "Mass"] == WANG_IOBB_ACC[0.5]["Mass"] == 0.1411
    diff = table[(table["kind"] == "difference") & (table["T"] == 0.1)]
    assert diff["localizer"].tolist() == ["gradcam/threshold (oracle class)"]  # Wang et al.'s setting only
    assert diff.iloc[0]["Nodule"] == pytest.approx(0.25 - 0.1645)
    # rows: for each T the measured, published and difference acc rows together, then the CI rows, then afp
    assert table["metric"].tolist()[:4] == ["acc"] * 4 and table["kind"].tolist()[:4] == [
        "measured", "measured", "published", "difference"]
    # Markdown: each measured hit fraction with its CI in one cell, the CI rows folded in
    md = (tmp_path / "i.md").read_text()
    assert "| nih_synthetic | r | gradcam/threshold | measured | 0.100 | acc | 0.500 [0.400, 0.600] | 0.250 |" in md
    assert "acc_ci_low" not in md and "| afp |" in md


def test_study_table_with_mura_reference():
    part = pd.DataFrame({"dataset": "mura", "variant": "r", "group": ["XR_HAND", "all"], "label": "Abnormal",
                         "n": [3, 5], "n_studies": [3, 5], "threshold": 0.5, "auroc": [0.8, 0.9], "kappa": [0.5, 0.6]})
    table = study_table([part, pd.DataFrame()], {"mura": "mura"})
    assert table["kind"].tolist() == ["measured", "measured", "published", "difference"]
    assert table.iloc[3]["kappa"] == pytest.approx(0.6 - 0.705)
    assert study_table([], {}).empty


def test_markdown_table_formats():
    text = markdown_table(pd.DataFrame({"a": ["x"], "tp": [3.0], "v": [0.12345], "w": [np.nan]}), caption="Cap")
    assert text.splitlines()[0] == "Cap" and "| x | 3 | 0.123 | n/a |" in text
