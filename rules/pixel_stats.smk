rule pixel_stats:
    """Per-pixel mean and std images of the cached training split (streamed, float64), for
    normalization: per_pixel."""
    input:
        unpack(stage_input("pixel_stats")),
    output:
        **stage_output("pixel_stats"),
    log:
        "results/logs/pixel_stats/{dataset}.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
    params:
        cfg=stage_params("pixel_stats"),
        config_digest=stage_params_digest("pixel_stats"),
    shell:
        stage_shell("pixel_stats")
