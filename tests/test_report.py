"""`snakemake --report` on a small run of the tiny config, opened in headless Chromium: the AUROC table (an HTML
table inside the report's iframe) and a figure (a decoded PNG) must render. Also: every table and figure exists."""

import json

import pandas as pd
import pytest

from xraypipe.references import WANG_LOCALIZATION_SOURCE
from chromium import Browser, chromium_or_skip
from workflow_copy import BIN, load_tiny_config, make_workflow_copy, run

CLICK_LINK = '''(async (t) => { const el = [...document.querySelectorAll("a")].find(e => e.textContent.trim() === t);
  if (!el) return false; el.click(); await new Promise(r => setTimeout(r, 800)); return true; })'''
SHOW_ROW = '''(async (t) => { const row = [...document.querySelectorAll("tr")].find(
    r => r.cells.length && r.cells[0].textContent.trim() === t);
  if (!row) return false; row.querySelector("a").click(); await new Promise(r => setTimeout(r, 1500)); return true; })'''


def _walk(node):
    yield node
    for child in node.get("children", []) + ([node["contentDocument"]] if "contentDocument" in node else []):
        yield from _walk(child)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    cfg = load_tiny_config()
    cfg["datasets"]["nih_synthetic"]["synthetic"].update(n_patients=120)
    cfg["variants"]["resnet18"]["epochs"] = 2
    cfg["variants"]["small_cnn"]["epochs"] = 2
    cfg["evaluation"] = {"bootstrap_samples": 50, "localization": {"max_images": 30, "overlays_per_finding": 1}}
    wf = make_workflow_copy(tmp_path_factory.mktemp("report") / "wf", cfg)
    # the main job (`make run`'s target), then `make report`'s two commands: the report of what is built
    run([str(BIN / "snakemake"), "--cores", "2", "results/tables/auroc.csv"], wf, timeout=1500)
    _make_report(wf, "report_main.html")
    run([str(BIN / "snakemake"), "--cores", "2"], wf, timeout=1500)
    _make_report(wf, "report.html")
    return wf


def _make_report(wf, name):
    """What `make report` runs: the built tables and figures as the report's targets."""
    targets = run([str(BIN / "python"), "-m", "xraypipe.report_targets", "--config", "config.yaml"], wf).stdout.split()
    assert targets, "no report targets"
    run([str(BIN / "snakemake"), "--report", name, "--cores", "1", *targets], wf, timeout=600)
    (wf / f"{name}.targets").write_text("\n".join(targets))


@pytest.mark.slow
def test_report_after_the_main_job_holds_the_auroc_table_only(finished_run):
    targets = (finished_run / "report_main.html.targets").read_text().split()
    assert set(targets) == {"results/tables/auroc.csv", "results/tables/auroc.md", "results/tables/auroc.html"}
    html = (finished_run / "report_main.html").read_text()
    assert "auroc.html" in html and "roc_nih_synthetic.png" not in html


@pytest.mark.slow
def test_report_targets_after_a_full_run_are_every_table_and_figure(finished_run):
    targets = set((finished_run / "report.html.targets").read_text().split())
    built = {str(p.relative_to(finished_run)) for d in ("tables", "figures")
             for p in (finished_run / "results" / d).iterdir()}
    assert targets == built


@pytest.mark.slow
def test_all_tables_and_figures_are_produced(finished_run):
    wf = finished_run
    for name in ("auroc", "classification", "iobb", "study_level"):
        for ext in ("csv", "md", "html"):
            assert (wf / f"results/tables/{name}.{ext}").stat().st_size > 0, (name, ext)
    auroc = pd.read_csv(wf / "results/tables/auroc.csv")
    assert set(auroc.loc[auroc["kind"] == "measured", "variant"]) == {"resnet18", "small_cnn"}
    assert "published: CheXNet (Rajpurkar et al. 2017)" in set(auroc["variant"])
    iobb = pd.read_csv(wf / "results/tables/iobb.csv")
    assert sorted(iobb.loc[iobb["metric"] == "acc", "T"].unique()) == [0.1, 0.25, 0.5, 0.75, 0.9]
    assert (iobb["variant"] == f"published: {WANG_LOCALIZATION_SOURCE}").sum() == 5
    figures = sorted(p.name for p in (wf / "results/figures").glob("*.png"))
    assert figures == sorted(["roc_nih_synthetic.png", "label_distribution_nih_synthetic.png",
                              "training_nih_synthetic.png", "confusion_nih_synthetic_resnet18.png",
                              "confusion_nih_synthetic_small_cnn.png", "gradcam_nih_synthetic_resnet18.png",
                              "gradcam_nih_synthetic_small_cnn.png"])
    assert (wf / "results/models/nih_synthetic/resnet18/thresholds.json").exists()


@pytest.mark.slow
def test_main_job_report_renders_in_headless_chromium(finished_run):
    """`make report` right after `make run`: the report opens and lists the AUROC table under Tables."""
    browser = Browser(chromium_or_skip(), (finished_run / "report_main.html").as_uri())
    try:
        browser.wait_for('document.body && document.body.innerText.includes("Results")', timeout=60)
        groups = browser.js("JSON.stringify(Object.keys(categories))")
        assert json.loads(groups) == ["Tables"], groups  # nothing else was built yet
        assert browser.js(CLICK_LINK + '("Results")')  # one category: the menu opens it directly
        assert "Tables" in browser.js("document.body.innerText")
        assert browser.js(SHOW_ROW + '("AUROC")'), "no AUROC entry under Tables"
        browser.wait_for('document.querySelector("iframe") !== null')
    finally:
        browser.close()


@pytest.mark.slow
def test_report_renders_in_headless_chromium(finished_run, tmp_path):
    exe = chromium_or_skip()
    report = finished_run / "report.html"
    browser = Browser(exe, report.as_uri())
    try:
        browser.wait_for('document.body && document.body.innerText.includes("Tables")', timeout=60)
        assert browser.js(CLICK_LINK + '("Tables")')
        # grouped by dataset (the report's subcategories; its menu skips a level with one entry)
        groups = browser.js("JSON.stringify(Object.fromEntries(Object.entries(categories).map("
                            "([c, subs]) => [c, Object.keys(subs)])))")
        assert json.loads(groups) == {"Tables": ["all datasets"], "Figures": ["nih_synthetic"]}, groups
        assert browser.js(SHOW_ROW + '("AUROC")'), "no AUROC entry under Tables"
        browser.wait_for('document.querySelector("iframe") !== null')
        # the table is inside the report's iframe (a data: URL): read it through the DevTools DOM, frames pierced
        for _ in range(40):
            doc = browser.call("DOM.getDocument", session=True, depth=-1, pierce=True)["root"]
            cells = [n for n in _walk(doc) if n.get("nodeName") == "TD"]
            texts = [c["children"][0].get("nodeValue", "") for c in cells if c.get("children")]
            if "resnet18" in texts:
                break
            import time

            time.sleep(0.25)
        assert "resnet18" in texts and "small_cnn" in texts and "nih_synthetic" in texts, texts[:20]
        assert any(t.startswith("published: CheXNet") for t in texts)
        browser.screenshot(tmp_path / "auroc.png")

        assert browser.js(CLICK_LINK + '("Results")')
        assert browser.js(CLICK_LINK + '("Figures")')
        assert browser.js(SHOW_ROW + '("ROC curves")'), "no ROC figure under Figures"
        browser.wait_for('[...document.querySelectorAll("img")].some(i => i.src.startsWith("data:image/png") '
                         '&& i.complete && i.naturalWidth > 300)')
        browser.screenshot(tmp_path / "roc.png")
        assert (tmp_path / "roc.png").stat().st_size > 10_000
    finally:
        browser.close()
