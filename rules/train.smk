rule train:
    """Train one variant; best weights by validation mean AUROC; resumes from results/checkpoints if killed.

    On Slurm the profile (profiles/slurm) requests the GPU(s); with training.distributed.enabled the script
    relaunches itself under torchrun, one DDP process per GPU.
    """
    input:
        unpack(stage_input("train")),
    output:
        **stage_output("train"),
    log:
        "results/logs/train/{dataset}/{variant}.log",
    benchmark:
        "results/benchmarks/train/{dataset}/{variant}.tsv"
    conda:
        ENV
    threads: stage_threads("train")
    resources:
        mem_mb=8000,
    params:
        cfg=stage_params("train"),
        config_digest=stage_params_digest("train"),
    shell:
        stage_shell("train")
