rule build_cache:
    """Decode each image once into uint8 arrays per split (memory-mapped by every variant)."""
    input:
        unpack(stage_input("build_cache")),
    output:
        **stage_output("build_cache"),
    log:
        "results/logs/build_cache/{dataset}.log",
    benchmark:
        "results/benchmarks/build_cache/{dataset}.tsv"
    conda:
        ENV
    threads: stage_threads("build_cache")
    resources:
        mem_mb=4000,
    params:
        cfg=stage_params("build_cache"),
        config_digest=stage_params_digest("build_cache"),
    shell:
        stage_shell("build_cache")
