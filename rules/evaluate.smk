rule evaluate:
    """Per-pathology AUROC with a seeded 95% bootstrap CI (patient-clustered by default) on the test split."""
    input:
        test=PATHS["predictions"].replace("{split}", "test"),
        val=PATHS["predictions"].replace("{split}", "val"),
    output:
        PATHS["metrics"],
    params:
        cfg=params_json("evaluate"),
    log:
        "results/logs/evaluate/{dataset}/{variant}.log",
    threads: 1
    conda:
        ENV
    shell:
        "python scripts/evaluate.py --config-json {params.cfg:q} --predictions {input.test} "
        "--out {output} > {log} 2>&1"
