rule localize:
    """Grad-CAM (or CAM) heatmaps on the test images with ground-truth boxes; boxes; IoU/IoBB scores (Wang et al.)."""
    input:
        unpack(stage_input("localize")),
    output:
        **stage_output("localize"),
    log:
        "results/logs/localize/{dataset}/{variant}.log",
    benchmark:
        "results/benchmarks/localize/{dataset}/{variant}.tsv"
    conda:
        ENV
    threads: stage_threads("localize")
    resources:
        mem_mb=4000,
    params:
        cfg=stage_params("localize"),
        config_digest=stage_params_digest("localize"),
    shell:
        stage_shell("localize")
