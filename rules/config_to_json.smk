rule config_to_json:
    """The configuration Snakemake runs with (config.yaml plus any --configfile/--config overlays), as given and
    validated, written as JSON: a record of how results/ was configured (and, split into small files under results/params/, DVC's params files).
    """
    input:
        code=code_deps("scripts/config_to_json.py"),
    output:
        record=PATHS["config_json"],
        params_dir=directory(PATHS["params_dir"]),
    log:
        "results/logs/config_to_json.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=500,
    params:
        cfg=lambda wildcards: json.dumps(CONFIG_AS_GIVEN, sort_keys=True, separators=(",", ":")),
    shell:
        "python scripts/config_to_json.py --config-json {params.cfg:q} --out {output.record} --params-dir {output.params_dir} > {log} 2>&1"
