rule localize:
    """Grad-CAM (or CAM) heatmaps on the test images with ground-truth boxes; boxes; IoU/IoBB scores (Wang et al.)."""
    input:
        model=PATHS["model"],
        array=PATHS["cache_array"].replace("{split}", "test"),
        index=PATHS["cache_index"],
        raw=PATHS["raw"],
    output:
        summary=PATHS["loc_summary"],
        scored=PATHS["loc_scored"],
        detected=PATHS["loc_detected"],
        heatmaps=PATHS["loc_heatmaps"],
        info=PATHS["loc_info"],
    params:
        cfg=params_json("localize"),
        cache_dir=lambda wildcards, input: os.path.dirname(input.index),
        out_dir=lambda wildcards, output: os.path.dirname(output.summary),
    log:
        "results/logs/localize/{dataset}/{variant}.log",
    benchmark:
        "results/benchmarks/localize/{dataset}/{variant}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        ENV
    shell:
        "python scripts/localize.py --config-json {params.cfg:q} --dataset {wildcards.dataset} --model {input.model} "
        "--cache-dir {params.cache_dir} --raw {input.raw} --out-dir {params.out_dir} --threads {threads} > {log} 2>&1"
