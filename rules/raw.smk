rule prepare_raw:
    """Generate the synthetic twin (source: synthetic), link/extract a local copy or archive (source: local), or
    download, verify and safely extract the release files (source: download; kept in data/downloads/<dataset>)."""
    output:
        directory(PATHS["raw"]),
    params:
        cfg=params_json("raw"),
    log:
        "results/logs/prepare_raw/{dataset}.log",
    benchmark:
        "results/benchmarks/prepare_raw/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        ENV
    shell:
        "python scripts/prepare_raw.py --config-json {params.cfg:q} --dataset {wildcards.dataset} "
        "--out {output} > {log} 2>&1"
