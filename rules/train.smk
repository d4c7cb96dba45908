rule train:
    """Train one variant; best weights by validation mean AUROC; resumes from results/checkpoints if killed.

    On Slurm the profile (profiles/slurm) requests the GPU(s); with training.distributed.enabled the script
    relaunches itself under torchrun, one DDP process per GPU.
    """
    input:
        arrays=expand(PATHS["cache_array"], split=["train", "val"], allow_missing=True),
        index=PATHS["cache_index"],
        # normalization: per_pixel reads the training split's statistics beside the cache
        stats=lambda w: [PATHS["pixel_stats"].format(dataset=w.dataset)]
        if config["variants"][w.variant].get("normalization") == "per_pixel" else [],
    output:
        model=PATHS["model"],
        history=PATHS["history"],
    params:
        cfg=params_json("train"),
        cache_dir=lambda wildcards, input: os.path.dirname(input.index),
        checkpoint=lambda wildcards: PATHS["checkpoint"].format(**wildcards),
    log:
        "results/logs/train/{dataset}/{variant}.log",
    benchmark:
        "results/benchmarks/train/{dataset}/{variant}.tsv"
    threads: config["training"]["threads"]
    resources:
        mem_mb=8000,
    conda:
        ENV
    shell:
        "python scripts/train.py --config-json {params.cfg:q} --variant {wildcards.variant} "
        "--cache-dir {params.cache_dir} --model {output.model} --history {output.history} "
        "--checkpoint {params.checkpoint} --threads {threads} > {log} 2>&1"
