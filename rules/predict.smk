rule predict:
    """Per-image probabilities on one split (val: for thresholds later; test: for the reported metrics)."""
    input:
        model=PATHS["model"],
        array=PATHS["cache_array"],
        index=PATHS["cache_index"],
    output:
        PATHS["predictions"],
    params:
        cfg=params_json("predict"),
        cache_dir=lambda wildcards, input: os.path.dirname(input.index),
    log:
        "results/logs/predict/{dataset}/{variant}/{split}.log",
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        ENV
    shell:
        "python scripts/predict.py --config-json {params.cfg:q} --model {input.model} "
        "--cache-dir {params.cache_dir} --split {wildcards.split} --out {output} --threads {threads} > {log} 2>&1"
