rule evaluate:
    """Test metrics at thresholds chosen on the validation predictions (written beside the model for xraypipe-predict)."""
    input:
        test=PATHS["predictions"].replace("{split}", "test"),
        val=PATHS["predictions"].replace("{split}", "val"),
    output:
        metrics=PATHS["metrics"],
        thresholds=PATHS["thresholds"],
    params:
        cfg=params_json("evaluate"),
    log:
        "results/logs/evaluate/{dataset}/{variant}.log",
    threads: 1
    conda:
        ENV
    shell:
        "python scripts/evaluate.py --config-json {params.cfg:q} --predictions {input.test} --val {input.val} "
        "--out {output.metrics} --thresholds {output.thresholds} > {log} 2>&1"
