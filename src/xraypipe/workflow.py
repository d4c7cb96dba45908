"""The pipeline's stages, declared once: file layout, per-stage config keys, inputs, outputs and commands.

rules/*.smk take their inputs, outputs, params and shell commands from :data:`STAGES`; dvc.yaml is generated
from it (``python -m xraypipe.workflow dvc``, or ``make dvc-yaml``). tests/test_workflow_consistency.py checks
that both engines then define the same jobs, files, params and code dependencies.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from xraypipe.code_deps import code_deps, fingerprint
from xraypipe.config import NAMED_SECTIONS, params_file

PATHS = {
    # the configuration as given (validated, no defaults filled in), as JSON: DVC's params file (dvc.yaml)
    "config_json": "results/config.json",
    # DVC's params files: the same config split into small files (xraypipe.config.write_params_dir)
    "params_dir": "results/params",
    # under DVC: the sha256 of each code file a stage runs (one dependency per stage instead of ~30 keeps
    # `dvc status` fast); Snakemake tracks the files themselves
    "code_fingerprint": "results/code/{stage}.json",
    "raw": "results/raw/{dataset}",
    "manifest": "results/splits/{dataset}.csv",
    "split_summary": "results/splits/{dataset}.summary.csv",
    "cache_dir": "results/cache/{dataset}",
    "cache_array": "results/cache/{dataset}/{split}.npy",
    "cache_index": "results/cache/{dataset}/index.csv",
    "cache_skipped": "results/cache/{dataset}/skipped.csv",
    # per-pixel mean/std images of the training split (variants.<v>.normalization: per_pixel)
    "pixel_stats": "results/cache/{dataset}/pixel_stats.npz",
    "model": "results/models/{dataset}/{variant}/model.pt",
    "history": "results/models/{dataset}/{variant}/history.csv",
    "checkpoint": "results/checkpoints/{dataset}/{variant}/last.pt",
    "predictions": "results/predictions/{dataset}/{variant}/{split}.csv",
    "metrics": "results/metrics/{dataset}/{variant}.json",
    # what a model was trained on, its validation/test figures with CIs, its intended use (xraypipe.model_card)
    "model_card": "results/models/{dataset}/{variant}/model_card.md",
    "auroc_table": "results/tables/auroc.csv",
    "auroc_markdown": "results/tables/auroc.md",
    # mean AUROC and its CI per dataset x variant (written by auroc_table): DVC's one top-level metrics file, the
    # `dvc exp show` summary (results/metrics/ holds the per-label files; outside it: a stage may not depend on a
    # directory holding its own output)
    "metrics_summary": "results/metrics_summary.json",
    # evaluation, localization, tables, figures
    "thresholds": "results/models/{dataset}/{variant}/thresholds.json",
    "loc_dir": "results/localization/{dataset}/{variant}",
    "loc_summary": "results/localization/{dataset}/{variant}/summary.csv",
    "loc_scored": "results/localization/{dataset}/{variant}/scored.csv",
    "loc_detected": "results/localization/{dataset}/{variant}/detected.csv",
    "loc_heatmaps": "results/localization/{dataset}/{variant}/heatmaps.npz",
    "loc_info": "results/localization/{dataset}/{variant}/info.json",
    # a detector (Mask R-CNN / Faster R-CNN) trained on the boxes (xraypipe.detection, rules/detect.smk)
    "detector_model": "results/detectors/{dataset}/model.pt",
    "detector_history": "results/detectors/{dataset}/history.csv",
    "det_dir": "results/localization/{dataset}/{variant}/detector",
    "det_summary": "results/localization/{dataset}/{variant}/detector/summary.csv",
    "det_scored": "results/localization/{dataset}/{variant}/detector/scored.csv",
    "det_detected": "results/localization/{dataset}/{variant}/detector/detected.csv",
    "det_split": "results/localization/{dataset}/{variant}/detector/box_split.csv",
    "det_info": "results/localization/{dataset}/{variant}/detector/info.json",
    "classification_table": "results/tables/classification.csv",
    "classification_markdown": "results/tables/classification.md",
    "iobb_table": "results/tables/iobb.csv",
    "iobb_markdown": "results/tables/iobb.md",
    "study_table": "results/tables/study_level.csv",
    "study_markdown": "results/tables/study_level.md",
    "auroc_html": "results/tables/auroc.html",
    "classification_html": "results/tables/classification.html",
    "iobb_html": "results/tables/iobb.html",
    "study_html": "results/tables/study_level.html",
    "fig_roc": "results/figures/roc_{dataset}.png",
    "fig_labels": "results/figures/label_distribution_{dataset}.png",
    "fig_training": "results/figures/training_{dataset}.png",
    "fig_confusion": "results/figures/confusion_{dataset}_{variant}.png",
    "fig_gradcam": "results/figures/gradcam_{dataset}_{variant}.png",
    # one reproduction table per study of reproduction.studies (xraypipe.reproduction)
    "reproduction_table": "results/tables/reproduction_{study}.csv",
    "reproduction_markdown": "results/tables/reproduction_{study}.md",
    "reproduction_html": "results/tables/reproduction_{study}.html",
    # patient-wise k-fold cross-validation (xraypipe.cv, rules/cv.smk)
    "cv_folds": "results/cv/{dataset}/{variant}/folds.csv",
    "cv_model": "results/cv/{dataset}/{variant}/fold{fold}/model.pt",
    "cv_history": "results/cv/{dataset}/{variant}/fold{fold}/history.csv",
    "cv_metrics": "results/cv/{dataset}/{variant}/fold{fold}/metrics.json",
    "cv_checkpoint": "results/checkpoints/{dataset}/{variant}/cv_fold{fold}/last.pt",
    "cv_table": "results/tables/cross_validation_{variant}.csv",
    "cv_markdown": "results/tables/cross_validation_{variant}.md",
    "cv_html": "results/tables/cross_validation_{variant}.html",
}

# The training keys a training job reads (not training.threads: a job's CPU threads change no result).
TRAINING_KEYS = ("device", "amp", "channels_last", "pin_memory", "cudnn_benchmark", "num_workers", "distributed")

# Config keys (dotted, with {dataset}/{variant} placeholders) each stage depends on. Snakemake passes exactly
# these to the script (so a change re-runs just the affected jobs); dvc.yaml lists them under params.
BOOTSTRAP_KEYS = ["evaluation.bootstrap_samples", "evaluation.ci_level", "evaluation.bootstrap_unit",
                  "evaluation.seed"]  # the CIs of AUROCs and of hit fractions
STAGE_PARAMS = {
    "raw": ["datasets.{dataset}.reader", "datasets.{dataset}.source", "datasets.{dataset}.root",
            "datasets.{dataset}.synthetic", "datasets.{dataset}.download"],
    "splits": ["datasets.{dataset}.reader", "datasets.{dataset}.pathologies", "datasets.{dataset}.views",
               "datasets.{dataset}.missing_images", "datasets.{dataset}.split", "datasets.{dataset}.body_parts",
               "datasets.{dataset}.sample"],
    "cache": ["datasets.{dataset}.preprocess", "datasets.{dataset}.split.unit"],  # unit: the leakage check
    "pixel_stats": [],  # a function of the cached training split only
    # the dataset's resize keys: only recorded in the model file (its transform); a change re-caches anyway
    "train": ["variants.{variant}"] + [f"training.{k}" for k in TRAINING_KEYS]
             + ["datasets.{dataset}.preprocess.image_size", "datasets.{dataset}.preprocess.resize"],
    "predict": ["training.device"],
    "evaluate": ["evaluation.bootstrap_samples", "evaluation.ci_level", "evaluation.bootstrap_unit", "evaluation.seed",
                 "evaluation.threshold_method", "evaluation.min_test_positives", "evaluation.fixed_thresholds"],
    "table": ["experiment", "evaluation.ci_level", "datasets", "variants"],
    "localize": ["evaluation.localization", "datasets.{dataset}.reader", "datasets.{dataset}.preprocess",
                 "training.device"] + BOOTSTRAP_KEYS,
    # the detector trains on the box split and its training keys (not on max_images, the heatmap keys or
    # the inference keys score_threshold/max_per_finding); detect scores like localize
    "train_detector": [f"evaluation.localization.detector.{k}" for k in (
        "architecture", "backbone", "weights", "backbone_weights", "fpn_channels", "epochs", "batch_size", "lr",
        "weight_decay", "seed")] + ["evaluation.localization.box_split", "datasets.{dataset}.reader",
                                    "datasets.{dataset}.preprocess", "training.device"],
    "detect": ["evaluation.localization", "datasets.{dataset}.reader", "datasets.{dataset}.preprocess",
               "training.device"] + BOOTSTRAP_KEYS,
    "study_table": ["experiment", "datasets", "evaluation.threshold_method", "evaluation.study_column",
                    "evaluation.group_column", "evaluation.fixed_thresholds", "evaluation.study_aggregate"],
    "figures": ["experiment"],
    "reproduction": ["reproduction", "experiment", "datasets", "variants", "evaluation.study_column",
                     "evaluation.group_column", "evaluation.study_aggregate"] + BOOTSTRAP_KEYS,
    # the fold assignment, each fold's training (the variant's own keys, like train) and the table
    "cv_folds": ["cross_validation.folds", "cross_validation.seed"],
    # the card names the dataset's release and source; the validation CIs are bootstrapped like the test ones
    "model_card": ["datasets.{dataset}.reader", "datasets.{dataset}.source", "evaluation.min_test_positives"]
                  + BOOTSTRAP_KEYS,
    "train_fold": ["variants.{variant}", "cross_validation.inner_val_fraction", "cross_validation.seed"]
                  + [f"training.{k}" for k in TRAINING_KEYS],
    "cv_table": ["experiment.datasets", "cross_validation.folds"],
}


# ---------------------------------------------------------------------------------------------- the stage table
# Every stage of the pipeline, declared once: its wildcards, the files it reads and writes, the config keys it
# depends on and its script. rules/*.smk take their input, output, params and shell command from here, and
# dvc.yaml is generated from it (`make dvc-yaml`); each stage's code dependencies are the import closure of its
# script within the package (xraypipe.code_deps).


@dataclass(frozen=True)
class File:
    """A file (or several: a list value in ``fixed``) of the layout, ``PATHS[key]`` with some placeholders fixed."""

    key: str
    fixed: tuple = ()  # (placeholder, value or list of values) pairs
    flag: bool = True  # passed to the script as --<name>; False: tracked only (the script gets its directory)

    def templates(self) -> list[str]:
        template, lists = PATHS[self.key], {}
        for name, value in self.fixed:
            if isinstance(value, (list, tuple)):
                lists[name] = list(value)
            else:
                template = template.replace("{" + name + "}", str(value))
        if not lists:
            return [template]
        ((name, values),) = lists.items()
        return [template.replace("{" + name + "}", str(v)) for v in values]


@dataclass(frozen=True)
class Gather(File):
    """One file per combination of the experiment (datasets x variants, cross-validation folds) for the
    placeholders the stage's wildcards leave free. The script receives the path pattern and expands it with
    :func:`expand_pattern` (DVC cannot put a list into a command); ``dvc_dir`` is the directory DVC tracks."""

    dvc_dir: str = ""


@dataclass(frozen=True)
class Out:
    key: str
    fixed: tuple = ()
    kind: str = "outs"  # DVC: outs, metrics or plots
    cache: bool = True  # DVC: kept in its cache (false for small text files and user-visible copies)
    directory: bool = False
    plot: tuple = ()  # DVC plot properties
    flag: bool = True  # passed to the script as --<name>; False: the script writes it into a directory argument

    def templates(self) -> list[str]:
        return File(self.key, self.fixed).templates()


MATRIX = {  # where each wildcard's values come from (DVC matrix; Snakemake rule all)
    "dataset": "experiment.datasets",
    "variant": "experiment.variants",
    "cv_variant": "cross_validation.variants",
    "fold": "cross_validation.folds",
    "study": "reproduction.studies",
}


@dataclass(frozen=True)
class Stage:
    name: str
    script: str  # "scripts/figures.py roc": the script and its fixed arguments
    params: str  # STAGE_PARAMS key
    wildcards: tuple = ()  # ("dataset", "variant"): one job per value of each
    inputs: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)
    paths: dict = field(default_factory=dict)  # untracked path arguments (a directory, a checkpoint): PATHS keys
    args: tuple = ()  # wildcards passed to the script as --<wildcard>
    threads: str = ""  # config key of the job's thread count (the script takes --threads); "": one thread
    variant_source: str = "variant"  # MATRIX key of the variant wildcard (cv stages: cv_variant)
    split_values: tuple = ()  # the split wildcard's values (predict)

    @property
    def script_path(self) -> str:
        return self.script.split()[0]


TABLE_OUTS = lambda prefix: {  # noqa: E731  (csv in DVC's cache so `dvc pull` brings it; md/html are copies)
    "out_csv": Out(f"{prefix}_table"), "out_md": Out(f"{prefix}_markdown", cache=False),
    "out_html": Out(f"{prefix}_html", cache=False)}


def _file(key, flag=True, **fixed):
    return File(key, tuple(fixed.items()), flag)


def _gather(key, dvc_dir, **fixed):
    return Gather(key, tuple(fixed.items()), True, dvc_dir)


def _out(key, kind="outs", cache=True, directory=False, plot=(), flag=True, **fixed):
    return Out(key, tuple(fixed.items()), kind, cache, directory, tuple(plot), flag)


STAGES = [
    Stage("prepare_raw", "scripts/prepare_raw.py", "raw", ("dataset",),
          outputs={"raw": _out("raw", cache=False, directory=True)},  # tens of GB, or a link to a local copy
          args=("dataset",), threads="preprocess_threads"),  # a synthetic twin renders in that many processes
    Stage("make_splits", "scripts/make_splits.py", "splits", ("dataset",),
          inputs={"raw": _file("raw")},
          outputs={"manifest": _out("manifest"), "summary": _out("split_summary")}, args=("dataset",)),
    Stage("build_cache", "scripts/build_cache.py", "cache", ("dataset",),
          inputs={"manifest": _file("manifest")},
          outputs={"arrays": _out("cache_array", flag=False, split=["train", "val", "test"]),
                   "index": _out("cache_index", flag=False), "skipped": _out("cache_skipped", flag=False)},
          paths={"out_dir": "cache_dir"}, args=("dataset",), threads="preprocess_threads"),
    Stage("pixel_stats", "scripts/pixel_stats.py", "pixel_stats", ("dataset",),
          inputs={"array": _file("cache_array", False, split="train"), "index": _file("cache_index", False)},
          outputs={"stats": _out("pixel_stats")}, paths={"cache_dir": "cache_dir"}),
    Stage("train", "scripts/train.py", "train", ("dataset", "variant"),
          inputs={"arrays": _file("cache_array", False, split=["train", "val"]),
                  "index": _file("cache_index", False), "stats": _file("pixel_stats", False)},
          outputs={"model": _out("model"),
                   # cached (results/ is git-ignored): DVC keeps every revision's copy for `dvc plots diff`
                   "history": _out("history", kind="plots", plot=(("x", "epoch"), ("y", "val_mean_auroc")))},
          paths={"cache_dir": "cache_dir", "checkpoint": "checkpoint"}, args=("dataset", "variant"),
          threads="training.threads"),
    Stage("predict", "scripts/predict.py", "predict", ("dataset", "variant", "split"),
          inputs={"model": _file("model"), "array": _file("cache_array", False), "index": _file("cache_index", False)},
          outputs={"predictions": _out("predictions")}, paths={"cache_dir": "cache_dir"}, args=("split",),
          threads="training.threads", split_values=("val", "test")),
    Stage("evaluate", "scripts/evaluate.py", "evaluate", ("dataset", "variant"),
          inputs={"test_predictions": _file("predictions", split="test"),
                  "val_predictions": _file("predictions", split="val")},
          # cached: `dvc metrics show/diff results/metrics/...` read other revisions from the cache. Plain outs,
          # not `metrics:` (~220 leaves each would flood `dvc exp show`): the summary is results/metrics_summary.json
          outputs={"metrics": _out("metrics"), "thresholds": _out("thresholds", cache=False)}),
    Stage("model_card", "scripts/model_card.py", "model_card", ("dataset", "variant"),
          inputs={"model": _file("model"), "metrics": _file("metrics"), "thresholds": _file("thresholds"),
                  "val_predictions": _file("predictions", split="val"), "split_summary": _file("split_summary")},
          outputs={"card": _out("model_card", cache=False)}, args=("dataset", "variant")),
    Stage("localize", "scripts/localize.py", "localize", ("dataset", "variant"),
          inputs={"model": _file("model"), "predictions": _file("predictions", split="test"),
                  "thresholds": _file("thresholds"), "array": _file("cache_array", False, split="test"),
                  "index": _file("cache_index", False), "raw": _file("raw")},
          outputs={"summary": _out("loc_summary", cache=False, flag=False),
                   "scored": _out("loc_scored", cache=False, flag=False),
                   "detected": _out("loc_detected", cache=False, flag=False),
                   "heatmaps": _out("loc_heatmaps", flag=False), "info": _out("loc_info", cache=False, flag=False)},
          paths={"cache_dir": "cache_dir", "out_dir": "loc_dir"}, args=("dataset",), threads="training.threads"),
    Stage("train_detector", "scripts/train_detector.py", "train_detector", ("dataset",),
          inputs={"arrays": _file("cache_array", False, split=["train", "val", "test"]),
                  "index": _file("cache_index", False), "raw": _file("raw")},
          outputs={"model": _out("detector_model"), "history": _out("detector_history", cache=False)},
          paths={"cache_dir": "cache_dir"}, args=("dataset",), threads="training.threads"),
    Stage("detect", "scripts/detect.py", "detect", ("dataset", "variant"),
          inputs={"detector": _file("detector_model"), "predictions": _file("predictions", split="test"),
                  "thresholds": _file("thresholds"), "array": _file("cache_array", False, split="test"),
                  "index": _file("cache_index", False), "raw": _file("raw")},
          outputs={"summary": _out("det_summary", cache=False, flag=False),
                   "scored": _out("det_scored", cache=False, flag=False),
                   "detected": _out("det_detected", cache=False, flag=False),
                   "split": _out("det_split", cache=False, flag=False), "info": _out("det_info", cache=False, flag=False)},
          paths={"cache_dir": "cache_dir", "out_dir": "det_dir"}, args=("dataset",), threads="training.threads"),
    Stage("auroc_table", "scripts/auroc_table.py", "table",
          inputs={"metrics": _gather("metrics", "results/metrics")},
          outputs={**TABLE_OUTS("auroc"), "out_summary": _out("metrics_summary")}),
    Stage("classification_table", "scripts/classification_table.py", "table",
          inputs={"metrics": _gather("metrics", "results/metrics")}, outputs=TABLE_OUTS("classification")),
    Stage("iobb_table", "scripts/iobb_table.py", "table",
          inputs={"gradcam_summary": _gather("loc_summary", "results/localization"),
                  "detector_summary": _gather("det_summary", "results/localization"),
                  "detector_info": _gather("det_info", "results/localization")},
          outputs=TABLE_OUTS("iobb")),
    Stage("study_table", "scripts/study_table.py", "study_table",
          inputs={"test_predictions": _gather("predictions", "results/predictions", split="test"),
                  "val_predictions": _gather("predictions", "results/predictions", split="val"),
                  "cache_index": _gather("cache_index", "results/cache")},
          outputs=TABLE_OUTS("study")),
    Stage("reproduction_table", "scripts/reproduction_table.py", "reproduction", ("study",),
          inputs={"metrics": _gather("metrics", "results/metrics"),
                  "test_predictions": _gather("predictions", "results/predictions", split="test"),
                  "history": _gather("history", "results/models"),
                  "cache_index": _gather("cache_index", "results/cache"), "iobb": _file("iobb_table")},
          outputs={"out_csv": _out("reproduction_table"), "out_md": _out("reproduction_markdown", cache=False),
                   "out_html": _out("reproduction_html", cache=False)}, args=("study",)),
    Stage("roc_figure", "scripts/figures.py roc", "figures", ("dataset",),
          inputs={"predictions": _gather("predictions", "results/predictions", split="test")},
          outputs={"out": _out("fig_roc", kind="plots", cache=False)}, args=("dataset",)),
    Stage("label_distribution_figure", "scripts/figures.py labels", "figures", ("dataset",),
          inputs={"manifest": _file("manifest")},
          outputs={"out": _out("fig_labels", kind="plots", cache=False)}, args=("dataset",)),
    Stage("training_curves_figure", "scripts/figures.py training", "figures", ("dataset",),
          inputs={"history": _gather("history", "results/models")},
          outputs={"out": _out("fig_training", kind="plots", cache=False)}, args=("dataset",)),
    Stage("confusion_figure", "scripts/figures.py confusion", "figures", ("dataset", "variant"),
          inputs={"metrics": _file("metrics")},
          outputs={"out": _out("fig_confusion", kind="plots", cache=False)}, args=("dataset", "variant")),
    Stage("gradcam_figure", "scripts/figures.py gradcam", "figures", ("dataset", "variant"),
          inputs={"heatmaps": _file("loc_heatmaps"), "scored": _file("loc_scored"), "detected": _file("loc_detected"),
                  "info": _file("loc_info"), "array": _file("cache_array", split="test")},
          outputs={"out": _out("fig_gradcam", kind="plots", cache=False)}, args=("dataset", "variant")),
    Stage("cv_folds", "scripts/cv_folds.py", "cv_folds", ("dataset", "variant"),
          inputs={"index": _file("cache_index", False)}, outputs={"folds": _out("cv_folds")},
          paths={"cache_dir": "cache_dir"}, variant_source="cv_variant"),
    Stage("train_fold", "scripts/train_fold.py", "train_fold", ("dataset", "variant", "fold"),
          inputs={"arrays": _file("cache_array", False, split=["train", "val"]), "index": _file("cache_index", False),
                  "folds": _file("cv_folds"), "stats": _file("pixel_stats", False)},
          outputs={"model": _out("cv_model"), "history": _out("cv_history", cache=False),
                   "metrics": _out("cv_metrics")},  # plain outs like evaluate's (the summary: cv_table)
          paths={"cache_dir": "cache_dir", "checkpoint": "cv_checkpoint"}, args=("variant", "fold"), threads="training.threads",
          variant_source="cv_variant"),
    Stage("cv_table", "scripts/cv_table.py", "cv_table", ("variant",),
          inputs={"metrics": _gather("cv_metrics", "results/cv")},
          outputs={"out_csv": _out("cv_table"), "out_md": _out("cv_markdown", cache=False),
                   "out_html": _out("cv_html", cache=False)},
          args=("variant",), variant_source="cv_variant"),
]
STAGE = {s.name: s for s in STAGES}



def stage_params(config: dict, stage: str, **names) -> dict:
    """The nested sub-config holding only ``STAGE_PARAMS[stage]`` (missing keys are simply absent)."""
    result: dict = {}
    for dotted in STAGE_PARAMS[stage]:
        keys = dotted.format(**names).split(".")
        node = config
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                break
            node = node[key]
        else:
            target = result
            for key in keys[:-1]:
                target = target.setdefault(key, {})
            target[keys[-1]] = copy.deepcopy(node)
    return result


def tracked_keys(config: dict) -> list[str]:
    """Every dotted key some stage tracks, for every dataset and variant the config defines (the keys
    results/config.json must hold for DVC)."""
    names = {"dataset": list(config.get("datasets") or {}), "variant": list(config.get("variants") or {})}
    keys = []
    for dotted in dict.fromkeys(k for stage_keys in STAGE_PARAMS.values() for k in stage_keys):
        fills = [{}]
        for name in ("dataset", "variant"):
            if "{" + name + "}" in dotted:
                fills = [dict(f, **{name: n}) for f in fills for n in names[name]]
        keys += [dotted.format(**f) for f in fills]
    return keys


def stage_params_json(config: dict, stage: str, **names) -> str:
    return json.dumps(stage_params(config, stage, **names), sort_keys=True, separators=(",", ":"))


def cv_variants(config: dict) -> list[str]:
    """The variants cross-validated (``cross_validation.variants``; empty = cross-validation off)."""
    return list((config.get("cross_validation") or {}).get("variants") or [])


# ------------------------------------------------------------------------------------------ jobs of a config


def wildcard_values(stage: Stage, wildcard: str, config: dict) -> list:
    if wildcard == "split":
        return list(stage.split_values)
    source = stage.variant_source if wildcard == "variant" else wildcard
    node = config
    for key in MATRIX[source].split("."):
        node = (node or {}).get(key) if isinstance(node, dict) else None
    return list(node or [])


def stage_jobs(stage: Stage, config: dict) -> list[dict]:
    """The wildcard values of every job of ``stage`` under ``config`` (one empty dict for a single-job stage)."""
    jobs = [{}]
    for wildcard in stage.wildcards:
        jobs = [dict(job, **{wildcard: value}) for job in jobs for value in wildcard_values(stage, wildcard, config)]
    return jobs


def expand_pattern(pattern: str, config: dict) -> list[tuple[dict, str]]:
    """Every file a gathered input's path pattern names under ``config``: the placeholders left in it
    ({dataset}, {variant}, {fold}) take the experiment's values. Returns (placeholder values, path) pairs."""
    sources = {"dataset": ("experiment", "datasets"), "variant": ("experiment", "variants"),
               "fold": ("cross_validation", "folds")}
    names = [n for n in ("dataset", "variant", "fold") if "{" + n + "}" in pattern]
    combos = [{}]
    for name in names:
        section, key = sources[name]
        combos = [dict(c, **{name: v}) for c in combos for v in config[section][key]]
    unknown = [p for p in re.findall(r"\{(\w+)\}", pattern) if p not in names]
    if unknown:
        raise ValueError(f"path pattern {pattern!r}: unknown placeholder {{{unknown[0]}}}")
    return [(c, pattern.format(**c)) for c in combos]


def job_inputs(stage: Stage, config: dict, wildcards: dict) -> dict[str, str | list[str]]:
    """The files one job reads, by input name (a gathered input: every file of the experiment), plus its code."""
    inputs: dict = {}
    for name, spec in stage.inputs.items():
        templates = [t.format(**wildcards) if not isinstance(spec, Gather) else _partial(t, wildcards)
                     for t in spec.templates()]
        if isinstance(spec, Gather):
            inputs[name] = [path for t in templates for _, path in expand_pattern(t, config)]
        else:
            inputs[name] = templates[0] if len(templates) == 1 and not _is_list(spec) else templates
    inputs["code"] = code_deps(stage.script_path)
    return inputs


def output_templates(stage: Stage) -> dict[str, str | list[str]]:
    """The stage's outputs by name, as path templates with its wildcards (Snakemake's output:)."""
    return {name: (spec.templates()[0] if not _is_list(spec) else spec.templates())
            for name, spec in stage.outputs.items()}


def job_outputs(stage: Stage, wildcards: dict) -> dict[str, str | list[str]]:
    return {name: (t[0] if len(t) == 1 and not _is_list(spec) else t)
            for name, spec in stage.outputs.items()
            for t in [[x.format(**wildcards) for x in spec.templates()]]}


def all_targets(config: dict) -> list[str]:
    """Every output of every job of the experiment (Snakemake's rule all)."""
    targets = [PATHS["config_json"], PATHS["params_dir"]]
    for stage in STAGES:
        for wildcards in stage_jobs(stage, config):
            for files in job_outputs(stage, wildcards).values():
                targets += [files] if isinstance(files, str) else files
    return list(dict.fromkeys(targets))


def _is_list(spec) -> bool:
    return any(isinstance(v, (list, tuple)) for _, v in spec.fixed)


def _partial(template: str, wildcards: dict) -> str:
    """Fill the placeholders named in ``wildcards``, leave the others."""
    return re.sub(r"\{(\w+)\}", lambda m: str(wildcards.get(m[1], m[0])), template)


# ------------------------------------------------------------------------------------- the two engines' views


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def command(stage: Stage, engine: str) -> str:
    """The stage's command line, for Snakemake (a shell template) or DVC (with ``${item.<wildcard>}``)."""
    smk = engine == "snakemake"
    item = (lambda w: "{wildcards.%s}" % w) if smk else (lambda w: "${item.%s}" % w)

    def fill(template: str) -> str:
        def sub(m):
            if m[1] in stage.wildcards:
                return item(m[1])
            return "{{%s}}" % m[1] if smk else "{%s}" % m[1]
        return re.sub(r"\{(\w+)\}", sub, template)

    parts = ["python", stage.script, "--config-json {params.cfg:q}" if smk else "--config config.yaml"]
    parts += [f"{_flag(w)} {item(w)}" for w in stage.args]
    for name, spec in stage.inputs.items():
        if not spec.flag:
            continue
        if isinstance(spec, Gather):
            parts.append(f"{_flag(name)} '{fill(spec.templates()[0])}'")
        else:
            parts.append(f"{_flag(name)} " + ("{input.%s:q}" % name if smk else " ".join(map(fill, spec.templates()))))
    for name, spec in stage.outputs.items():
        if spec.flag:
            parts.append(f"{_flag(name)} " + ("{output.%s:q}" % name if smk else " ".join(map(fill, spec.templates()))))
    parts += [f"{_flag(name)} {fill(PATHS[key])}" for name, key in stage.paths.items()]
    if smk:
        parts += ["--threads {threads}"] if stage.threads else []
        # every stage script takes its options from cli.parser: the log names the config keys changed since
        # the job's last successful run, recorded beside the log (xraypipe.job_log)
        parts.append("--params-record {log:q}.params.json")
        parts.append("> {log} 2>&1")
    return " ".join(parts)


def params_path(key: str) -> str:
    """The params file DVC reads the dotted ``key`` from (placeholders kept)."""
    return f"{PATHS['params_dir']}/{params_file(key)}"


def dvc_stage(stage: Stage) -> dict:
    to_dvc = lambda t: re.sub(r"\{(\w+)\}", lambda m: "${item.%s}" % m[1], t)  # noqa: E731
    body: dict = {}
    if stage.wildcards:
        body["matrix"] = {w: (list(stage.split_values) if w == "split" else
                              "${%s}" % MATRIX[stage.variant_source if w == "variant" else w])
                          for w in stage.wildcards}
    body["cmd"] = command(stage, "dvc")
    deps = [fingerprint_path(stage.name)]
    for spec in stage.inputs.values():
        deps += [spec.dvc_dir] if isinstance(spec, Gather) else [to_dvc(t) for t in spec.templates()]
    body["deps"] = list(dict.fromkeys(deps))
    by_file: dict = {}
    for key in STAGE_PARAMS[stage.params]:
        if key in NAMED_SECTIONS:  # a whole section (every variant): its file, as a plain dependency (the same
            body["deps"].append(params_path(key))  # change re-runs it; as params, every key would show twice
            continue  # in `dvc exp show`: also from the per-variant files)
        by_file.setdefault(params_path(key), []).append(to_dvc(key))
    if by_file:
        body["params"] = [{to_dvc(file): keys} for file, keys in by_file.items()]
    for spec in stage.outputs.values():
        for template in spec.templates():
            props = dict(spec.plot)
            if not spec.cache:
                props["cache"] = False
            body.setdefault(spec.kind, []).append({to_dvc(template): props} if props else to_dvc(template))
    return body


DVC_HEADER = """\
# GENERATED from the stage table in src/xraypipe/workflow.py by `make dvc-yaml`; do not edit (a test fails when
# this file differs from what the table generates). The same stages as the Snakefile, driven by the same
# config.yaml: `vars` gives the matrices (experiment.datasets x experiment.variants, ...), config_to_json tracks
# all of config.yaml and writes it, validated, to results/config.json and, split into small files, to
# results/params/, the params files of every other stage.
# code_fingerprints hashes each stage's code (its script's import closure) into results/code/<stage>.json, the one
# code dependency of that stage: after a code edit, `dvc status` names code_fingerprints, and `dvc repro` then
# re-runs exactly the stages whose code changed.
# Jobs call `python`: activate the project's .venv first (or run through `make`).
"""


CODE_STAGE = "code_fingerprints"
CODE_SCRIPT = "scripts/code_fingerprints.py"
CONFIG_SCRIPT = "scripts/config_to_json.py"


def fingerprint_path(stage_name: str) -> str:
    return PATHS["code_fingerprint"].format(stage=stage_name)


def stage_scripts() -> dict[str, str]:
    """Each DVC stage's script, by stage name (the config stage first)."""
    return {"config_to_json": CONFIG_SCRIPT, **{stage.name: stage.script_path for stage in STAGES}}


def write_code_fingerprints(root: str | Path = ".") -> list[str]:
    """Write every stage's code fingerprint (``PATHS["code_fingerprint"]`` under ``root``, the project DVC runs
    in): the sha256 of each file of its script's import closure there. A stage's file changes exactly when its
    code does, so DVC re-runs exactly those stages."""
    from xraypipe.atomic import write_text

    written = []
    for name, script in stage_scripts().items():
        path = Path(root) / fingerprint_path(name)
        body = {"stage": name, "script": script, "files": fingerprint(script, root)}
        write_text(path, json.dumps(body, indent=1) + "\n")
        written.append(path)
    return written


def code_dirs() -> list[str]:
    """The directories that hold every code file of every stage (``scripts``, ``src/xraypipe``)."""
    files = {f for script in [CODE_SCRIPT, *stage_scripts().values()] for f in code_deps(script)}
    return sorted({"/".join(Path(f).parts[:2 if f.startswith("src/") else 1]) for f in files})


def code_stage() -> dict:
    """The DVC stage that writes the code fingerprints. It depends on the code directories, not on each file: one
    hash column each in `dvc exp show` instead of ~70 (.dvcignore leaves out __pycache__). Any code edit re-runs
    this cheap stage; a stage downstream re-runs only when its own fingerprint file changes."""
    return {"cmd": f"python {CODE_SCRIPT}", "deps": code_dirs(),
            "outs": [{fingerprint_path(name): {"cache": False}} for name in stage_scripts()]}


def dvc_yaml() -> str:
    import yaml

    stages = {CODE_STAGE: code_stage(), "config_to_json": {
        "cmd": f"python {CONFIG_SCRIPT} --config config.yaml --out {PATHS['config_json']} "
               f"--params-dir {PATHS['params_dir']}",
        # config.yaml as a file dependency, not params: `dvc exp show` then shows each tracked key once (from
        # results/params/, cached so that every experiment's values show), not also every key of config.yaml
        "deps": [fingerprint_path("config_to_json"), "config.yaml"],
        "outs": [PATHS["config_json"], PATHS["params_dir"]]}}
    stages.update({stage.name: dvc_stage(stage) for stage in STAGES})
    # the experiment's one metrics file (`dvc exp show`, `dvc metrics diff`); the per-label files are plain outs
    text = yaml.safe_dump({"vars": ["config.yaml"], "metrics": [PATHS["metrics_summary"]], "stages": stages},
                          sort_keys=False, width=120, default_flow_style=False)
    return DVC_HEADER + text


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m xraypipe.workflow",
                                description="Write dvc.yaml from the stage table, or check it is up to date.")
    p.add_argument("what", choices=["dvc"])
    p.add_argument("--out", default="dvc.yaml")
    p.add_argument("--check", action="store_true", help="exit 1 if --out differs from the generated file")
    args = p.parse_args(argv)
    text = dvc_yaml()
    out = Path(args.out)
    if args.check:
        if not out.exists() or out.read_text() != text:
            print(f"{out} is stale: regenerate it with `make dvc-yaml`", file=sys.stderr)
            return 1
        return 0
    from xraypipe.atomic import write_text

    write_text(out, text)
    print(f"wrote {out} ({len(STAGES) + 2} stages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
