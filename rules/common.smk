# Config validation (before any job starts), paths and input functions shared by all rules.
import copy
import json
import os
import sys

from xraypipe.cli import config_threads
from xraypipe.config import ConfigError, validate_config
from xraypipe.code_deps import code_deps
from xraypipe.writer_lock import RUN_ENV, ResultsBusyError, claim_results, hold_dvc_lock, snakemake_run_id
from xraypipe.workflow import (PATHS, STAGE, all_targets, command, cv_variants, job_inputs, output_templates,
                               stage_params_json)

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
    study="[a-z0-9_]+",
    split="train|val|test",


# Each rule takes its input, output, params and shell command from the stage table (xraypipe.workflow.STAGES),
# from which dvc.yaml is generated too.


def stage_input(name):
    """Input function: the job's files (every file of the experiment for a gathered input) and its code (the
    script and its import closure in the package, so a code change re-runs exactly the jobs that use it)."""
    stage = STAGE[name]
    return lambda wildcards: job_inputs(stage, config, dict(wildcards.items()))


def stage_output(name, **wrap):
    """The stage's outputs by name (``directory()`` where the table says so); ``wrap``: name -> a function that
    wraps that output (``report(...)``)."""
    stage = STAGE[name]
    outputs = output_templates(stage)
    for key, spec in stage.outputs.items():
        if spec.directory:
            outputs[key] = directory(outputs[key])
        if key in wrap:
            outputs[key] = wrap[key](outputs[key])
    return outputs


def stage_params(name):
    """Input function: the stage's config keys as JSON; Snakemake reruns a job when they change."""
    stage = STAGE[name]
    return lambda wildcards: stage_params_json(config, stage.params, **dict(wildcards.items()))


def stage_threads(name):
    """The job's threads: the stage's thread key (``training.threads``, ``preprocess_threads``); ``auto`` asks for
    every physical core, which Snakemake caps at --cores (and the Slurm profile's set-threads overrides), so
    parallel jobs never hold more threads than the cores given."""
    return config_threads(config, name)


def stage_shell(name):
    return command(STAGE[name], "snakemake")


def as_report(caption, category, **labels):
    return lambda path: report(path, caption=f"../report/{caption}", category=category, labels=labels)
