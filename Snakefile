# X-ray classification pipeline: raw -> splits -> cache -> models -> predictions -> metrics -> tables.
# The experiment is defined once, in config.yaml (also read by dvc.yaml). Logic lives in src/xraypipe;
# rules only wire files together. See README.md.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/raw.smk"
include: "rules/splits.smk"
include: "rules/cache.smk"
include: "rules/train.smk"
include: "rules/predict.smk"
include: "rules/evaluate.smk"
include: "rules/tables.smk"


rule all:
    input:
        PATHS["auroc_table"],
        PATHS["auroc_markdown"],
