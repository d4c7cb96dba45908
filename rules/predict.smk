rule predict:
    """Per-image probabilities of a trained variant on the validation or test split."""
    input:
        unpack(stage_input("predict")),
    output:
        **stage_output("predict"),
    log:
        "results/logs/predict/{dataset}/{variant}/{split}.log",
    conda:
        ENV
    threads: stage_threads("predict")
    resources:
        mem_mb=4000,
    params:
        cfg=stage_params("predict"),
        config_digest=stage_params_digest("predict"),
    shell:
        stage_shell("predict")
