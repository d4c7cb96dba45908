rule pixel_stats:
    """Per-pixel mean and std images of the cached training split (streamed, float64), for normalization:
    per_pixel; the train rule needs it only for the variants that use it."""
    input:
        array=PATHS["cache_array"].replace("{split}", "train"),
        index=PATHS["cache_index"],
    output:
        PATHS["pixel_stats"],
    params:
        cfg=params_json("pixel_stats"),
        cache_dir=lambda wildcards, input: os.path.dirname(input.index),
    log:
        "results/logs/pixel_stats/{dataset}.log",
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        ENV
    shell:
        "python scripts/pixel_stats.py --config-json {params.cfg:q} --cache-dir {params.cache_dir} "
        "--out {output} > {log} 2>&1"
