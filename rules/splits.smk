rule make_splits:
    """Manifest (one row per image, NaN = unknown label) with patient-wise train/val/test splits."""
    input:
        PATHS["raw"],
    output:
        manifest=PATHS["manifest"],
        summary=PATHS["split_summary"],
    params:
        cfg=params_json("splits"),
    log:
        "results/logs/make_splits/{dataset}.log",
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        ENV
    shell:
        "python scripts/make_splits.py --config-json {params.cfg:q} --dataset {wildcards.dataset} "
        "--raw {input} --out {output.manifest} --summary {output.summary} > {log} 2>&1"
