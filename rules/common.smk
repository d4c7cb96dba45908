# Config validation (before any job starts), paths and input functions shared by all rules.
import copy
import json
import os
import sys

from xraypipe.config import ConfigError, validate_config
from xraypipe.writer_lock import RUN_ENV, ResultsBusyError, claim_results, hold_dvc_lock, snakemake_run_id
from xraypipe.workflow import PATHS, cv_runs, cv_variants, experiment_pairs, stage_params_json

CONFIG_AS_GIVEN = copy.deepcopy(config)  # before the defaults are filled in (rules/config_to_json.smk)
try:
    config = validate_config(config, source="config")
except ConfigError as exc:
    raise WorkflowError(f"invalid configuration:\n{exc}") from None

# One writer per results/ (xraypipe.writer_lock): jobs claim it for this run; the run claims it when it starts.
os.environ.setdefault(RUN_ENV, snakemake_run_id())


onstart:
    try:
        claim_results("results")
        hold_dvc_lock(".")
    except ResultsBusyError as exc:
        raise WorkflowError(str(exc)) from None


# Jobs call `python`: make it this interpreter (the project's .venv) unless a conda env is activated per rule.
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")

DATASETS = config["experiment"]["datasets"]
VARIANTS = config["experiment"]["variants"]
CV_VARIANTS = cv_variants(config)  # cross_validation.variants (rules/cv.smk)
SPLITS = ["train", "val", "test"]
ENV = "../envs/pipeline.yaml"


wildcard_constraints:
    dataset="|".join(DATASETS),
    variant="|".join(dict.fromkeys(VARIANTS + CV_VARIANTS)),
    fold="[0-9]+",
    split="train|val|test",


def params_json(stage):
    """Input function: the stage's config keys as JSON; Snakemake reruns a job when they change."""
    return lambda wildcards: stage_params_json(config, stage, **dict(wildcards.items()))


def all_metrics(wildcards=None):
    return [PATHS["metrics"].format(dataset=d, variant=v) for d, v in experiment_pairs(config)]
