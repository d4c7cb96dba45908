"""Shared argument handling for the thin scripts in scripts/.

Every script accepts the configuration either as ``--config config.yaml`` (how dvc.yaml calls it; the
file is validated) or as ``--config-json '{...}'`` (how the Snakefile calls it, already validated when the
workflow was parsed). Either way the script sees only the keys its stage tracks (xraypipe.workflow.STAGE_PARAMS),
so both engines run it on the same values and re-run it for the same changes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from xraypipe.config import ConfigError, load_config


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="path of config.yaml")
    source.add_argument("--config-json", help="the stage's configuration as JSON (used by the Snakefile)")
    return p


def resolve_config(args) -> dict:
    """The whole validated config (``--config``) or the JSON given (``--config-json``)."""
    if args.config_json is not None:
        try:
            return json.loads(args.config_json)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--config-json is not valid JSON: {exc}") from None
    return load_config(args.config)


def stage_config(args, stage: str, **names) -> dict:
    """The keys stage ``stage`` tracks (``names``: its dataset/variant), from either source."""
    from xraypipe.workflow import stage_params

    config = resolve_config(args)
    return config if args.config_json is not None else stage_params(config, stage, **names)


def physical_cores() -> int:
    """The physical cores this process may use (hyper-threads do not speed up the training kernels)."""
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        available = os.cpu_count() or 1
    try:
        import psutil

        physical = psutil.cpu_count(logical=False) or available
    except ImportError:
        physical = available
    return max(1, min(available, physical))


def resolve_threads(value) -> int:
    """A thread setting of the config (a number, or ``auto``: every physical core) as a number."""
    return physical_cores() if value == "auto" else int(value)


def config_threads(config: dict, stage: str) -> int:
    """The thread count the config gives ``stage`` (its ``STAGE[stage].threads`` key; 1 for a stage without one)."""
    from xraypipe.workflow import STAGE

    key = STAGE[stage].threads
    if not key:
        return 1
    node = config
    for part in key.split("."):
        node = node[part]
    return resolve_threads(node)


def threads(args, stage: str) -> int:
    """``--threads`` (Snakemake passes the threads it granted the job); else (DVC, whose stages run one at a time)
    the config's value at the stage's thread key (``STAGE[stage].threads``, e.g. ``training.threads``; not a
    tracked key: a job's thread count changes no result), ``auto`` meaning every physical core."""
    if getattr(args, "threads", None):
        return args.threads
    return 1 if args.config is None else config_threads(load_config(args.config), stage)


def run(main, results_dir: str = "results") -> None:
    """Claim ``results_dir`` for this engine run (:mod:`xraypipe.writer_lock`), call ``main()``; print known errors
    as one clear line (naming the file/key) and exit 1."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from xraypipe.datasets import DatasetFormatError
    from xraypipe.model_files import ModelFileError
    from xraypipe.preprocess import ImageDecodeError
    from xraypipe.splits import SplitLeakageError
    from xraypipe.writer_lock import ResultsBusyError, claim_results

    try:
        claim_results(results_dir)
        main()
    except (ConfigError, DatasetFormatError, ImageDecodeError, SplitLeakageError, FileNotFoundError,
            ResultsBusyError, ModelFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except (ValueError, KeyError) as exc:
        # bad values in inputs (a stale model, a missing column, ...): one line naming the file/key; set
        # XRAYPIPE_TRACEBACK=1 to see where it was raised
        if os.environ.get("XRAYPIPE_TRACEBACK"):
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message} (XRAYPIPE_TRACEBACK=1 shows the traceback)", file=sys.stderr)
        sys.exit(1)
