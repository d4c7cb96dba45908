rule pixel_stats:
    """Per-pixel mean and std images of the cached training split (streamed, float64), for
    normalization: per_pixel."""
    input:
        unpack(stage_input("pixel_stats")),
    output:
        **stage_output("pixel_stats"),
    params:
        cfg=stage_params("pixel_stats"),
    log:
        "results/logs/pixel_stats/{dataset}.log",
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        ENV
    shell:
        stage_shell("pixel_stats")
