localrules:
    auroc_table,
    classification_table,
    iobb_table,
    study_table,


rule auroc_table:
    """One row per dataset x variant: mean and per-pathology AUROC with CIs, published rows and differences."""
    input:
        all_metrics,
    output:
        csv=PATHS["auroc_table"],
        md=PATHS["auroc_markdown"],
        html=report(PATHS["auroc_html"], caption="../report/auroc.rst", category="Tables",
                    labels={"table": "AUROC"}),
    params:
        cfg=params_json("table"),
    log:
        "results/logs/auroc_table.log",
    threads: 1
    conda:
        ENV
    shell:
        "python scripts/auroc_table.py --config-json {params.cfg:q} --out-csv {output.csv} "
        "--out-md {output.md} --out-html {output.html} > {log} 2>&1 && cat {output.md}"


rule classification_table:
    """Per label: AUPRC, sensitivity, specificity, precision, F1, accuracy, balanced error, kappa, confusion counts."""
    input:
        all_metrics,
    output:
        csv=PATHS["classification_table"],
        md=PATHS["classification_markdown"],
        html=report(PATHS["classification_html"], caption="../report/classification.rst", category="Tables",
                    labels={"table": "classification"}),
    params:
        cfg=params_json("table"),
    log:
        "results/logs/classification_table.log",
    threads: 1
    conda:
        ENV
    shell:
        "python scripts/classification_table.py --config-json {params.cfg:q} --out-csv {output.csv} "
        "--out-md {output.md} --out-html {output.html} > {log} 2>&1"


rule iobb_table:
    """Localization accuracy at T(IoBB) and false positives per image, Wang et al.'s layout and published row."""
    input:
        # Grad-CAM boxes (localize) and the detector (detect, whose info.json holds the box split's counts)
        lambda wildcards: [PATHS[key].format(dataset=d, variant=v) for d, v in experiment_pairs(config)
                           for key in ("loc_summary", "det_summary", "det_info")],
    output:
        csv=PATHS["iobb_table"],
        md=PATHS["iobb_markdown"],
        html=report(PATHS["iobb_html"], caption="../report/iobb.rst", category="Tables",
                    labels={"table": "IoBB"}),
    params:
        cfg=params_json("table"),
    log:
        "results/logs/iobb_table.log",
    threads: 1
    conda:
        ENV
    shell:
        "python scripts/iobb_table.py --config-json {params.cfg:q} --out-csv {output.csv} "
        "--out-md {output.md} --out-html {output.html} > {log} 2>&1"


rule study_table:
    """Study-level metrics (mean of a study's image probabilities) per body part, for datasets with studies."""
    input:
        lambda wildcards: [PATHS["predictions"].format(dataset=d, variant=v, split=s)
                           for d, v in experiment_pairs(config) for s in ("val", "test")]
        + [PATHS["cache_index"].format(dataset=d) for d in DATASETS],
    output:
        csv=PATHS["study_table"],
        md=PATHS["study_markdown"],
        html=report(PATHS["study_html"], caption="../report/study_level.rst", category="Tables",
                    labels={"table": "study level"}),
    params:
        cfg=params_json("study_table"),
    log:
        "results/logs/study_table.log",
    threads: 1
    conda:
        ENV
    shell:
        "python scripts/study_table.py --config-json {params.cfg:q} --out-csv {output.csv} "
        "--out-md {output.md} --out-html {output.html} > {log} 2>&1"
