rule make_splits:
    """Manifest (one row per image, NaN = unknown label) with patient-wise train/val/test splits."""
    input:
        unpack(stage_input("make_splits")),
    output:
        **stage_output("make_splits"),
    log:
        "results/logs/make_splits/{dataset}.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
    params:
        cfg=stage_params("make_splits"),
        config_digest=stage_params_digest("make_splits"),
    shell:
        stage_shell("make_splits")
