# issue 8: patient-wise k-fold cross-validation (config cross_validation; xraypipe.cv). Every variant listed in
# cross_validation.variants is trained once per fold on every experiment dataset; each fold is its own job (on
# Slurm: its own GPU job, with train's resources), so the folds run in parallel.


rule cv_folds:
    """Patient-grouped, seeded, label-stratified k folds of the pooled train + val images (test untouched)."""
    input:
        index=PATHS["cache_index"],
    output:
        folds=PATHS["cv_folds"],
    params:
        cfg=params_json("cv_folds"),
        cache_dir=lambda wildcards, input: os.path.dirname(input.index),
    log:
        "results/logs/cv_folds/{dataset}/{variant}.log",
    threads: 1
    conda:
        ENV
    shell:
        "python scripts/cv_folds.py --config-json {params.cfg:q} --cache-dir {params.cache_dir} "
        "--out {output.folds} > {log} 2>&1"


rule train_fold:
    """Train a fresh model on every fold but {fold}; best epoch and metrics on fold {fold}; resumable."""
    input:
        arrays=expand(PATHS["cache_array"], split=["train", "val"], allow_missing=True),
        index=PATHS["cache_index"],
        folds=PATHS["cv_folds"],
        # normalization: per_pixel reads the training split's statistics beside the cache (as rule train)
        stats=lambda w: [PATHS["pixel_stats"].format(dataset=w.dataset)]
        if config["variants"][w.variant].get("normalization") == "per_pixel" else [],
    output:
        model=PATHS["cv_model"],
        history=PATHS["cv_history"],
        metrics=PATHS["cv_metrics"],
    params:
        cfg=params_json("train_fold"),
        cache_dir=lambda wildcards, input: os.path.dirname(input.index),
        checkpoint=lambda wildcards: PATHS["cv_checkpoint"].format(**wildcards),
    log:
        "results/logs/train_fold/{dataset}/{variant}/fold{fold}.log",
    benchmark:
        "results/benchmarks/train_fold/{dataset}/{variant}/fold{fold}.tsv"
    threads: config["training"]["threads"]
    resources:
        mem_mb=8000,
    conda:
        ENV
    shell:
        "python scripts/train_fold.py --config-json {params.cfg:q} --variant {wildcards.variant} "
        "--fold {wildcards.fold} --cache-dir {params.cache_dir} --folds {input.folds} --model {output.model} "
        "--history {output.history} --metrics {output.metrics} --checkpoint {params.checkpoint} "
        "--threads {threads} > {log} 2>&1"


localrules:
    cv_table,


rule cv_table:
    """One row per dataset x fold (held-out AUROC, sizes, best epoch) and mean ± sd over the folds per dataset."""
    input:
        lambda wildcards: [PATHS["cv_metrics"].format(dataset=d, variant=v, fold=f)
                           for d, v, f in cv_runs(config) if v == wildcards.variant],
    output:
        csv=PATHS["cv_table"],
        md=PATHS["cv_markdown"],
        html=report(PATHS["cv_html"], caption="../report/cross_validation.rst", category="Tables",
                    labels={"table": "cross-validation", "variant": "{variant}"}),
    params:
        cfg=params_json("cv_table"),
    log:
        "results/logs/cv_table/{variant}.log",
    threads: 1
    conda:
        ENV
    shell:
        "python scripts/cv_table.py --config-json {params.cfg:q} --variant {wildcards.variant} "
        "--out-csv {output.csv} --out-md {output.md} --out-html {output.html} > {log} 2>&1"
