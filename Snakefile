# X-ray classification pipeline: raw -> splits -> cache -> models -> predictions -> metrics -> tables.
# The experiment is defined once, in config.yaml (also read by dvc.yaml). Logic lives in src/xraypipe;
# rules only wire files together. See README.md.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/config_to_json.smk"
include: "rules/raw.smk"
include: "rules/splits.smk"
include: "rules/cache.smk"
include: "rules/pixel_stats.smk"
include: "rules/train.smk"
include: "rules/predict.smk"
include: "rules/evaluate.smk"
include: "rules/tables.smk"
include: "rules/localize.smk"
include: "rules/detect.smk"
include: "rules/figures.smk"
include: "rules/cv.smk"


# issue 7 (cluster executors, profiles/slurm): run on the submitting host, not as cluster jobs. prepare_raw
# downloads (source: download) and compute nodes often have no network; the tables are localrules in tables.smk.
localrules:
    prepare_raw,


rule all:
    input:
        PATHS["config_json"],  # how this run was configured (and the params file of dvc.yaml)
        PATHS["auroc_table"],
        PATHS["auroc_markdown"],
        # issue 5: every table and figure (`snakemake --report report.html` lists them with captions)
        PATHS["classification_table"],
        PATHS["classification_markdown"],
        PATHS["iobb_table"],
        PATHS["iobb_markdown"],
        PATHS["study_table"],
        PATHS["study_markdown"],
        PATHS["auroc_html"],
        PATHS["classification_html"],
        PATHS["iobb_html"],
        PATHS["study_html"],
        expand(PATHS["fig_roc"], dataset=DATASETS),
        # issue 8: per-pixel standardisation statistics (cheap; defined for every dataset, as in dvc.yaml)
        expand(PATHS["pixel_stats"], dataset=DATASETS),
        expand(PATHS["fig_labels"], dataset=DATASETS),
        expand(PATHS["fig_training"], dataset=DATASETS),
        [PATHS["fig_confusion"].format(dataset=d, variant=v) for d, v in experiment_pairs(config)],
        [PATHS["fig_gradcam"].format(dataset=d, variant=v) for d, v in experiment_pairs(config)],
        # issue 8: one k-fold table per cross-validated variant (none while cross_validation.variants is empty)
        [PATHS[key].format(variant=v) for v in CV_VARIANTS for key in ("cv_table", "cv_markdown", "cv_html")],
