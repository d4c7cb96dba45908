rule make_splits:
    """Manifest (one row per image, NaN = unknown label) with patient-wise train/val/test splits."""
    input:
        unpack(stage_input("make_splits")),
    output:
        **stage_output("make_splits"),
    params:
        cfg=stage_params("make_splits"),
    log:
        "results/logs/make_splits/{dataset}.log",
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        ENV
    shell:
        stage_shell("make_splits")
