localrules:
    auroc_table,


rule auroc_table:
    """One row per dataset x variant: mean and per-pathology AUROC with CIs, published rows and differences."""
    input:
        unpack(stage_input("auroc_table")),
    output:
        **stage_output("auroc_table", out_html=as_report("auroc.rst", "Tables", table="AUROC")),
    log:
        "results/logs/auroc_table.log",
    conda:
        ENV
    threads: 1
    params:
        cfg=stage_params("auroc_table"),
        config_digest=stage_params_digest("auroc_table"),
    shell:
        # the table on the console when the run ends (the script's own output goes to the log)
        stage_shell("auroc_table") + " && cat {output.out_md}"


localrules:
    classification_table,


rule classification_table:
    """Per label: AUPRC, sensitivity, specificity, precision, F1, accuracy, balanced error, kappa, confusion counts."""
    input:
        unpack(stage_input("classification_table")),
    output:
        **stage_output(
            "classification_table", out_html=as_report("classification.rst", "Tables", table="classification")
        ),
    log:
        "results/logs/classification_table.log",
    conda:
        ENV
    threads: 1
    params:
        cfg=stage_params("classification_table"),
        config_digest=stage_params_digest("classification_table"),
    shell:
        stage_shell("classification_table")


localrules:
    iobb_table,


rule iobb_table:
    """Localization accuracy at T(IoBB) and false positives per image, Wang et al.'s layout and published row."""
    input:
        unpack(stage_input("iobb_table")),
    output:
        **stage_output("iobb_table", out_html=as_report("iobb.rst", "Tables", table="IoBB")),
    log:
        "results/logs/iobb_table.log",
    conda:
        ENV
    threads: 1
    params:
        cfg=stage_params("iobb_table"),
        config_digest=stage_params_digest("iobb_table"),
    shell:
        stage_shell("iobb_table")


localrules:
    study_table,


rule study_table:
    """Study-level metrics (mean of a study's image probabilities) per body part, for datasets with studies."""
    input:
        unpack(stage_input("study_table")),
    output:
        **stage_output("study_table", out_html=as_report("study_level.rst", "Tables", table="study level")),
    log:
        "results/logs/study_table.log",
    conda:
        ENV
    threads: 1
    params:
        cfg=stage_params("study_table"),
        config_digest=stage_params_digest("study_table"),
    shell:
        stage_shell("study_table")


localrules:
    reproduction_table,


rule reproduction_table:
    """One study's published figures beside ours on the same metric, with CIs, and what differs."""
    input:
        unpack(stage_input("reproduction_table")),
    output:
        **stage_output(
            "reproduction_table", out_html=as_report("reproduction.rst", "Tables", table="reproduction {study}")
        ),
    log:
        "results/logs/reproduction_table/{study}.log",
    conda:
        ENV
    threads: 1
    params:
        cfg=stage_params("reproduction_table"),
        config_digest=stage_params_digest("reproduction_table"),
    shell:
        stage_shell("reproduction_table") + " && cat {output.out_md}"
