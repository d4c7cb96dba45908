# Patient-wise k-fold cross-validation (config cross_validation; xraypipe.cv). Every variant listed in
# cross_validation.variants is trained once per fold on every experiment dataset; each fold is its own job (on
# Slurm: its own GPU job, with train's resources), so the folds run in parallel.


rule cv_folds:
    """Patient-grouped, seeded, label-stratified k folds of the pooled train + val images (test untouched)."""
    input:
        unpack(stage_input("cv_folds")),
    output:
        **stage_output("cv_folds"),
    log:
        "results/logs/cv_folds/{dataset}/{variant}.log",
    conda:
        ENV
    threads: 1
    params:
        cfg=stage_params("cv_folds"),
        config_digest=stage_params_digest("cv_folds"),
    shell:
        stage_shell("cv_folds")


rule train_fold:
    """Train a fresh model on every fold but {fold}; best epoch and metrics on fold {fold}; resumable."""
    input:
        unpack(stage_input("train_fold")),
    output:
        **stage_output("train_fold"),
    log:
        "results/logs/train_fold/{dataset}/{variant}/fold{fold}.log",
    benchmark:
        "results/benchmarks/train_fold/{dataset}/{variant}/fold{fold}.tsv"
    conda:
        ENV
    threads: stage_threads("train_fold")
    resources:
        mem_mb=8000,
    params:
        cfg=stage_params("train_fold"),
        config_digest=stage_params_digest("train_fold"),
    shell:
        stage_shell("train_fold")


localrules:
    cv_table,


rule cv_table:
    """One row per dataset x fold (held-out AUROC, sizes, best epoch) and mean ± sd over the folds per dataset."""
    input:
        unpack(stage_input("cv_table")),
    output:
        **stage_output(
            "cv_table",
            out_html=as_report("cross_validation.rst", "Tables", table="cross-validation", variant="{variant}"),
        ),
    log:
        "results/logs/cv_table/{variant}.log",
    conda:
        ENV
    threads: 1
    params:
        cfg=stage_params("cv_table"),
        config_digest=stage_params_digest("cv_table"),
    shell:
        stage_shell("cv_table")
