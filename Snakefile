# X-ray classification pipeline: raw -> splits -> cache -> models -> predictions -> metrics -> tables.
# The experiment is defined once, in config.yaml (also read by dvc.yaml). Logic lives in src/xraypipe; the
# stages (files, params, commands) are declared once in xraypipe.workflow, from which the rules and dvc.yaml come.
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
include: "rules/model_card.smk"
include: "rules/tables.smk"
include: "rules/localize.smk"
include: "rules/detect.smk"
include: "rules/figures.smk"
include: "rules/cv.smk"


# Run on the submitting host, not as cluster jobs: prepare_raw downloads (source: download) and compute nodes
# often have no network; the tables are localrules in tables.smk.
localrules:
    prepare_raw,


rule all:
    """Every output of every stage of the experiment (xraypipe.workflow.all_targets): the tables and figures
    (`snakemake --report report.html` lists them with captions) and everything they are made from."""
    input:
        all_targets(config),
