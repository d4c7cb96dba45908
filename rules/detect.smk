# A supervised localizer next to Grad-CAM: a torchvision Mask R-CNN / Faster R-CNN trained on the ground-truth
# boxes (one per dataset), run on the scoring images and kept for each classifier variant's positive findings.


rule train_detector:
    """Mask R-CNN (box-shaped masks) or Faster R-CNN on the detector-training part of the dataset's boxes."""
    input:
        unpack(stage_input("train_detector")),
    output:
        **stage_output("train_detector"),
    log:
        "results/logs/train_detector/{dataset}.log",
    benchmark:
        "results/benchmarks/train_detector/{dataset}.tsv"
    conda:
        ENV
    threads: stage_threads("train_detector")
    resources:
        mem_mb=4000,
    params:
        cfg=stage_params("train_detector"),
        config_digest=stage_params_digest("train_detector"),
    shell:
        stage_shell("train_detector")


rule detect:
    """The detector's boxes on the scoring images, conditioned on the classifier's positives; IoU/IoBB scores."""
    input:
        unpack(stage_input("detect")),
    output:
        **stage_output("detect"),
    log:
        "results/logs/detect/{dataset}/{variant}.log",
    benchmark:
        "results/benchmarks/detect/{dataset}/{variant}.tsv"
    conda:
        ENV
    threads: stage_threads("detect")
    resources:
        mem_mb=4000,
    params:
        cfg=stage_params("detect"),
        config_digest=stage_params_digest("detect"),
    shell:
        stage_shell("detect")
