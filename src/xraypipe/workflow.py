"""The experiment's file layout and per-stage parameters, shared by the Snakefile, the scripts and tests.

dvc.yaml writes the same paths with DVC's ``${}`` templating; tests/test_workflow_consistency.py checks
that both define the same outputs and track the same parameters.
"""

from __future__ import annotations

import copy
import json

PATHS = {
    "raw": "results/raw/{dataset}",
    "manifest": "results/splits/{dataset}.csv",
    "split_summary": "results/splits/{dataset}.summary.csv",
    "cache_array": "results/cache/{dataset}/{split}.npy",
    "cache_index": "results/cache/{dataset}/index.csv",
    "model": "results/models/{dataset}/{variant}/model.pt",
    "history": "results/models/{dataset}/{variant}/history.csv",
    "checkpoint": "results/checkpoints/{dataset}/{variant}/last.pt",
    "predictions": "results/predictions/{dataset}/{variant}/{split}.csv",
    "metrics": "results/metrics/{dataset}/{variant}.json",
    "auroc_table": "results/tables/auroc.csv",
    "auroc_markdown": "results/tables/auroc.md",
}

# Config keys (dotted, with {dataset}/{variant} placeholders) each stage depends on. Snakemake passes exactly
# these to the script (so a change re-runs just the affected jobs); dvc.yaml lists them under params.
STAGE_PARAMS = {
    "raw": ["datasets.{dataset}.reader", "datasets.{dataset}.source", "datasets.{dataset}.root",
            "datasets.{dataset}.synthetic"],
    "splits": ["datasets.{dataset}.reader", "datasets.{dataset}.pathologies", "datasets.{dataset}.views",
               "datasets.{dataset}.missing_images", "datasets.{dataset}.split"],
    "cache": ["datasets.{dataset}.preprocess"],
    "train": ["variants.{variant}", "training.device", "training.amp", "training.channels_last"],
    "predict": ["training.device"],
    "evaluate": ["evaluation"],
    "table": ["experiment", "evaluation.ci_level"],
}


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


def stage_params_json(config: dict, stage: str, **names) -> str:
    return json.dumps(stage_params(config, stage, **names), sort_keys=True, separators=(",", ":"))


def experiment_pairs(config: dict) -> list[tuple[str, str]]:
    return [(d, v) for d in config["experiment"]["datasets"] for v in config["experiment"]["variants"]]
