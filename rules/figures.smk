# One rule per figure (PNG, matplotlib Agg); each is listed in the report (`snakemake --report report.html`).


rule roc_figure:
    """ROC curves per label on the test split, all variants overlaid."""
    input:
        unpack(stage_input("roc_figure")),
    output:
        **stage_output(
            "roc_figure",
            out=as_report("roc.rst", "Figures", subcategory="{dataset}", figure="ROC curves", dataset="{dataset}"),
        ),
    log:
        "results/logs/figures/roc_{dataset}.log",
    conda:
        ENV
    threads: 1
    params:
        cfg=stage_params("roc_figure"),
        config_digest=stage_params_digest("roc_figure"),
    shell:
        stage_shell("roc_figure")


rule label_distribution_figure:
    """Label prevalence per split."""
    input:
        unpack(stage_input("label_distribution_figure")),
    output:
        **stage_output(
            "label_distribution_figure",
            out=as_report(
                "label_distribution.rst",
                "Figures",
                subcategory="{dataset}",
                figure="label distribution",
                dataset="{dataset}",
            ),
        ),
    log:
        "results/logs/figures/labels_{dataset}.log",
    conda:
        ENV
    threads: 1
    params:
        cfg=stage_params("label_distribution_figure"),
        config_digest=stage_params_digest("label_distribution_figure"),
    shell:
        stage_shell("label_distribution_figure")


rule training_curves_figure:
    """Train/validation loss and validation mean AUROC per epoch, all variants."""
    input:
        unpack(stage_input("training_curves_figure")),
    output:
        **stage_output(
            "training_curves_figure",
            out=as_report(
                "training.rst", "Figures", subcategory="{dataset}", figure="training curves", dataset="{dataset}"
            ),
        ),
    log:
        "results/logs/figures/training_{dataset}.log",
    conda:
        ENV
    threads: 1
    params:
        cfg=stage_params("training_curves_figure"),
        config_digest=stage_params_digest("training_curves_figure"),
    shell:
        stage_shell("training_curves_figure")


rule confusion_figure:
    """Confusion matrices per label at the validation-chosen thresholds."""
    input:
        unpack(stage_input("confusion_figure")),
    output:
        **stage_output(
            "confusion_figure",
            out=as_report(
                "confusion.rst",
                "Figures",
                subcategory="{dataset}",
                figure="confusion matrices",
                dataset="{dataset}",
                variant="{variant}",
            ),
        ),
    log:
        "results/logs/figures/confusion_{dataset}_{variant}.log",
    conda:
        ENV
    threads: 1
    params:
        cfg=stage_params("confusion_figure"),
        config_digest=stage_params_digest("confusion_figure"),
    shell:
        stage_shell("confusion_figure")


rule gradcam_figure:
    """Grad-CAM overlays with detected and ground-truth boxes for a few test images per finding."""
    input:
        unpack(stage_input("gradcam_figure")),
    output:
        **stage_output(
            "gradcam_figure",
            out=as_report(
                "gradcam.rst",
                "Figures",
                subcategory="{dataset}",
                figure="Grad-CAM overlays",
                dataset="{dataset}",
                variant="{variant}",
            ),
        ),
    log:
        "results/logs/figures/gradcam_{dataset}_{variant}.log",
    conda:
        ENV
    threads: 1
    params:
        cfg=stage_params("gradcam_figure"),
        config_digest=stage_params_digest("gradcam_figure"),
    shell:
        stage_shell("gradcam_figure")
