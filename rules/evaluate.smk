rule evaluate:
    """Test metrics at thresholds chosen on the validation predictions (written beside the model for xraypipe-predict)."""
    input:
        unpack(stage_input("evaluate")),
    output:
        **stage_output("evaluate"),
    params:
        cfg=stage_params("evaluate"),
    log:
        "results/logs/evaluate/{dataset}/{variant}.log",
    threads: 1
    conda:
        ENV
    shell:
        stage_shell("evaluate")
