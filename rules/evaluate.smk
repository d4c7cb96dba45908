rule evaluate:
    """Test metrics at thresholds chosen on the validation predictions (written beside the model for xraypipe-predict)."""
    input:
        unpack(stage_input("evaluate")),
    output:
        **stage_output("evaluate"),
    log:
        "results/logs/evaluate/{dataset}/{variant}.log",
    conda:
        ENV
    threads: 1
    params:
        cfg=stage_params("evaluate"),
        config_digest=stage_params_digest("evaluate"),
    shell:
        stage_shell("evaluate")
