# One rule per figure (PNG, matplotlib Agg); each is listed in the report (`snakemake --report report.html`).


rule roc_figure:
    """ROC curves per label on the test split, all variants overlaid."""
    input:
        lambda wildcards: expand(PATHS["predictions"], dataset=wildcards.dataset, variant=VARIANTS, split="test"),
    output:
        report(PATHS["fig_roc"], caption="../report/roc.rst", category="Figures",
               labels={"figure": "ROC curves", "dataset": "{dataset}"}),
    params:
        cfg=params_json("figures"),
    log:
        "results/logs/figures/roc_{dataset}.log",
    threads: 1
    conda:
        ENV
    shell:
        "python scripts/figures.py roc --config-json {params.cfg:q} --dataset {wildcards.dataset} --out {output} > {log} 2>&1"


rule label_distribution_figure:
    """Label prevalence per split."""
    input:
        PATHS["manifest"],
    output:
        report(PATHS["fig_labels"], caption="../report/label_distribution.rst", category="Figures",
               labels={"figure": "label distribution", "dataset": "{dataset}"}),
    params:
        cfg=params_json("figures"),
    log:
        "results/logs/figures/labels_{dataset}.log",
    threads: 1
    conda:
        ENV
    shell:
        "python scripts/figures.py labels --config-json {params.cfg:q} --dataset {wildcards.dataset} --out {output} > {log} 2>&1"


rule training_curves_figure:
    """Train/validation loss and validation mean AUROC per epoch, all variants."""
    input:
        lambda wildcards: expand(PATHS["history"], dataset=wildcards.dataset, variant=VARIANTS),
    output:
        report(PATHS["fig_training"], caption="../report/training.rst", category="Figures",
               labels={"figure": "training curves", "dataset": "{dataset}"}),
    params:
        cfg=params_json("figures"),
    log:
        "results/logs/figures/training_{dataset}.log",
    threads: 1
    conda:
        ENV
    shell:
        "python scripts/figures.py training --config-json {params.cfg:q} --dataset {wildcards.dataset} --out {output} > {log} 2>&1"


rule confusion_figure:
    """Confusion matrices per label at the validation-chosen thresholds."""
    input:
        PATHS["metrics"],
    output:
        report(PATHS["fig_confusion"], caption="../report/confusion.rst", category="Figures",
               labels={"figure": "confusion matrices", "dataset": "{dataset}", "variant": "{variant}"}),
    params:
        cfg=params_json("figures"),
    log:
        "results/logs/figures/confusion_{dataset}_{variant}.log",
    threads: 1
    conda:
        ENV
    shell:
        "python scripts/figures.py confusion --config-json {params.cfg:q} --dataset {wildcards.dataset} "
        "--variant {wildcards.variant} --out {output} > {log} 2>&1"


rule gradcam_figure:
    """Grad-CAM overlays with detected and ground-truth boxes for a few test images per finding."""
    input:
        heatmaps=PATHS["loc_heatmaps"],
        scored=PATHS["loc_scored"],
        detected=PATHS["loc_detected"],
        info=PATHS["loc_info"],
        array=PATHS["cache_array"].replace("{split}", "test"),
    output:
        report(PATHS["fig_gradcam"], caption="../report/gradcam.rst", category="Figures",
               labels={"figure": "Grad-CAM overlays", "dataset": "{dataset}", "variant": "{variant}"}),
    params:
        cfg=params_json("figures"),
    log:
        "results/logs/figures/gradcam_{dataset}_{variant}.log",
    threads: 1
    conda:
        ENV
    shell:
        "python scripts/figures.py gradcam --config-json {params.cfg:q} --dataset {wildcards.dataset} "
        "--variant {wildcards.variant} --out {output} > {log} 2>&1"
