rule build_cache:
    """Decode each image once into uint8 arrays per split (memory-mapped by every variant)."""
    input:
        PATHS["manifest"],
    output:
        arrays=expand(PATHS["cache_array"], split=SPLITS, allow_missing=True),
        index=PATHS["cache_index"],
        skipped=PATHS["cache_skipped"],
    params:
        cfg=params_json("cache"),
        out_dir=lambda wildcards, output: os.path.dirname(output.index),
    log:
        "results/logs/build_cache/{dataset}.log",
    benchmark:
        "results/benchmarks/build_cache/{dataset}.tsv"
    threads: config["preprocess_threads"]
    resources:
        mem_mb=4000,
    conda:
        ENV
    shell:
        "python scripts/build_cache.py --config-json {params.cfg:q} --dataset {wildcards.dataset} "
        "--manifest {input} --out-dir {params.out_dir} --threads {threads} > {log} 2>&1"
