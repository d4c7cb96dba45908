rule predict:
    """Per-image probabilities of a trained variant on the validation or test split."""
    input:
        unpack(stage_input("predict")),
    output:
        **stage_output("predict"),
    params:
        cfg=stage_params("predict"),
    log:
        "results/logs/predict/{dataset}/{variant}/{split}.log",
    threads: stage_threads("predict")
    resources:
        mem_mb=4000,
    conda:
        ENV
    shell:
        stage_shell("predict")
