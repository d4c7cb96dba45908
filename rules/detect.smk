# issue 8: a supervised localizer next to Grad-CAM: a torchvision Mask R-CNN / Faster R-CNN trained on the
# ground-truth boxes (one per dataset), run on the scoring images and kept for each classifier variant's positive
# findings (one detect job per dataset x variant), scored with the localize stage's code (xraypipe.detection).


rule train_detector:
    """Mask R-CNN (box-shaped masks) or Faster R-CNN on the detector-training part of the dataset's boxes."""
    input:
        array=expand(PATHS["cache_array"], split=SPLITS, allow_missing=True),
        index=PATHS["cache_index"],
        raw=PATHS["raw"],
    output:
        model=PATHS["detector_model"],
        history=PATHS["detector_history"],
    params:
        cfg=params_json("train_detector"),
        cache_dir=lambda wildcards, input: os.path.dirname(input.index),
    log:
        "results/logs/train_detector/{dataset}.log",
    benchmark:
        "results/benchmarks/train_detector/{dataset}.tsv"
    threads: config["training"]["threads"]
    resources:
        mem_mb=4000,
    conda:
        ENV
    shell:
        "python scripts/train_detector.py --config-json {params.cfg:q} --dataset {wildcards.dataset} "
        "--cache-dir {params.cache_dir} --raw {input.raw} --model {output.model} --history {output.history} "
        "--threads {threads} > {log} 2>&1"


rule detect:
    """The detector's boxes on the scoring images, conditioned on the classifier's positives; IoU/IoBB scores."""
    input:
        detector=PATHS["detector_model"],
        predictions=PATHS["predictions"].replace("{split}", "test"),
        thresholds=PATHS["thresholds"],
        array=PATHS["cache_array"].replace("{split}", "test"),
        index=PATHS["cache_index"],
        raw=PATHS["raw"],
    output:
        summary=PATHS["det_summary"],
        scored=PATHS["det_scored"],
        detected=PATHS["det_detected"],
        split=PATHS["det_split"],
        info=PATHS["det_info"],
    params:
        cfg=params_json("detect"),
        cache_dir=lambda wildcards, input: os.path.dirname(input.index),
        out_dir=lambda wildcards, output: os.path.dirname(output.summary),
    log:
        "results/logs/detect/{dataset}/{variant}.log",
    benchmark:
        "results/benchmarks/detect/{dataset}/{variant}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        ENV
    shell:
        "python scripts/detect.py --config-json {params.cfg:q} --dataset {wildcards.dataset} "
        "--detector {input.detector} --predictions {input.predictions} --thresholds {input.thresholds} "
        "--cache-dir {params.cache_dir} --raw {input.raw} --out-dir {params.out_dir} --threads {threads} > {log} 2>&1"
