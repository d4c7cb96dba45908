# One rule per figure (PNG, matplotlib Agg); each is listed in the report (`snakemake --report report.html`).


rule roc_figure:
    """ROC curves per label on the test split, all variants overlaid."""
    input:
        unpack(stage_input("roc_figure")),
    output:
        **stage_output("roc_figure", out=as_report("roc.rst", "Figures", figure="ROC curves", dataset="{dataset}")),
    params:
        cfg=stage_params("roc_figure"),
    log:
        "results/logs/figures/roc_{dataset}.log",
    threads: 1
    conda:
        ENV
    shell:
        stage_shell("roc_figure")


rule label_distribution_figure:
    """Label prevalence per split."""
    input:
        unpack(stage_input("label_distribution_figure")),
    output:
        **stage_output("label_distribution_figure", out=as_report("label_distribution.rst", "Figures", figure="label distribution", dataset="{dataset}")),
    params:
        cfg=stage_params("label_distribution_figure"),
    log:
        "results/logs/figures/labels_{dataset}.log",
    threads: 1
    conda:
        ENV
    shell:
        stage_shell("label_distribution_figure")


rule training_curves_figure:
    """Train/validation loss and validation mean AUROC per epoch, all variants."""
    input:
        unpack(stage_input("training_curves_figure")),
    output:
        **stage_output("training_curves_figure", out=as_report("training.rst", "Figures", figure="training curves", dataset="{dataset}")),
    params:
        cfg=stage_params("training_curves_figure"),
    log:
        "results/logs/figures/training_{dataset}.log",
    threads: 1
    conda:
        ENV
    shell:
        stage_shell("training_curves_figure")


rule confusion_figure:
    """Confusion matrices per label at the validation-chosen thresholds."""
    input:
        unpack(stage_input("confusion_figure")),
    output:
        **stage_output("confusion_figure", out=as_report("confusion.rst", "Figures", figure="confusion matrices", dataset="{dataset}", variant="{variant}")),
    params:
        cfg=stage_params("confusion_figure"),
    log:
        "results/logs/figures/confusion_{dataset}_{variant}.log",
    threads: 1
    conda:
        ENV
    shell:
        stage_shell("confusion_figure")


rule gradcam_figure:
    """Grad-CAM overlays with detected and ground-truth boxes for a few test images per finding."""
    input:
        unpack(stage_input("gradcam_figure")),
    output:
        **stage_output("gradcam_figure", out=as_report("gradcam.rst", "Figures", figure="Grad-CAM overlays", dataset="{dataset}", variant="{variant}")),
    params:
        cfg=stage_params("gradcam_figure"),
    log:
        "results/logs/figures/gradcam_{dataset}_{variant}.log",
    threads: 1
    conda:
        ENV
    shell:
        stage_shell("gradcam_figure")
