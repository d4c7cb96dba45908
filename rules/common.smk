# Config validation (before any job starts), paths and input functions shared by all rules.
import copy
import hashlib
import json
import os
import sys

# The package from this checkout's src/, not an installed copy: a driver environment with Snakemake alone (no torch,
# the package not installed: `--sdm conda` with envs/pipeline.yaml) parses the workflow. Parse time imports only
# the light modules below, which need nothing beyond Snakemake's own dependencies (PyYAML, jsonschema); the stages'
# scripts import the rest inside the jobs (tests/test_driver_env.py).
sys.path.insert(0, os.path.join(workflow.basedir, "src"))

from xraypipe.cli import config_threads
from xraypipe.config import ConfigError, validate_config
from xraypipe.code_deps import code_deps
from xraypipe.writer_lock import RUN_ENV, ResultsBusyError, claim_results, hold_dvc_lock, snakemake_run_id
from xraypipe.workflow import (
    PATHS,
    STAGE,
    all_targets,
    command,
    cv_variants,
    job_inputs,
    output_templates,
    stage_params_json,
)

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
# envvars: PATH is passed on to the jobs of executors that do not inherit the submitting environment (Slurm's
# `sbatch --export=ALL` and local jobs inherit it anyway).
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")


envvars:
    "PATH",


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
    """Input function: the stage's config keys as JSON, for the job's command line. It takes ``output`` so that
    Snakemake counts it as derived and leaves it out of its re-run records (a change would print both JSON
    dumps); :func:`stage_params_digest` stands for it there, and the job's log names the keys that changed."""
    stage = STAGE[name]
    return lambda wildcards, output: stage_params_json(config, stage.params, **dict(wildcards.items()))


def stage_params_digest(name):
    """Input function: a short digest of the stage's config keys; Snakemake reruns a job when it changes."""
    stage = STAGE[name]
    return (
        lambda wildcards: "config sha256 "
        + hashlib.sha256(stage_params_json(config, stage.params, **dict(wildcards.items())).encode()).hexdigest()[:16]
    )


def stage_threads(name):
    """The job's threads: the stage's thread key (``training.threads``, ``preprocess_threads``); ``auto`` asks for
    every physical core, which Snakemake caps at --cores (and the Slurm profile's set-threads overrides), so
    parallel jobs never hold more threads than the cores given."""
    return config_threads(config, name)


def stage_shell(name):
    return command(STAGE[name], "snakemake")


def as_report(caption, category, subcategory="all datasets", **labels):
    """A report entry; the report groups entries by category (tables, figures) and then by dataset."""
    return lambda path: report(
        path, caption=f"../report/{caption}", category=category, subcategory=subcategory, labels=labels
    )
