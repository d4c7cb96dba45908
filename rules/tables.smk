localrules:
    auroc_table,


rule auroc_table:
    """One row per dataset x variant: mean and per-pathology AUROC with CIs (CSV + Markdown)."""
    input:
        all_metrics,
    output:
        csv=PATHS["auroc_table"],
        md=PATHS["auroc_markdown"],
    params:
        cfg=params_json("table"),
    log:
        "results/logs/auroc_table.log",
    threads: 1
    conda:
        ENV
    shell:
        "python scripts/auroc_table.py --config-json {params.cfg:q} --out-csv {output.csv} "
        "--out-md {output.md} > {log} 2>&1"
