rule model_card:
    """A model card beside the model file: what it was trained on, validation/test AUROCs with CIs, intended use."""
    input:
        unpack(stage_input("model_card")),
    output:
        **stage_output("model_card"),
    log:
        "results/logs/model_card/{dataset}/{variant}.log",
    conda:
        ENV
    threads: 1
    params:
        cfg=stage_params("model_card"),
        config_digest=stage_params_digest("model_card"),
    shell:
        stage_shell("model_card")
