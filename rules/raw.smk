rule prepare_raw:
    """Generate the synthetic twin (source: synthetic), link/extract a local copy or archive (source: local), or
    download, verify and safely extract the release files (source: download; kept in data/downloads/<dataset>)."""
    input:
        unpack(stage_input("prepare_raw")),
    output:
        **stage_output("prepare_raw"),
    log:
        "results/logs/prepare_raw/{dataset}.log",
    benchmark:
        "results/benchmarks/prepare_raw/{dataset}.tsv"
    conda:
        ENV
    threads: stage_threads("prepare_raw")
    resources:
        mem_mb=2000,
    params:
        cfg=stage_params("prepare_raw"),
        config_digest=stage_params_digest("prepare_raw"),
    shell:
        stage_shell("prepare_raw")
