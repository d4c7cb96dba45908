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
import time

from xraypipe.config import ConfigError, load_config


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="path of config.yaml")
    source.add_argument("--config-json", help="the stage's configuration as JSON (used by the Snakefile)")
    p.add_argument("--params-record", help="JSON file with this job's configuration at its last successful run: "
                   "the log names the keys changed since (used by the Snakefile)")
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
    config = config if args.config_json is not None else stage_params(config, stage, **names)
    _JOB.update(stage=stage, args=args, config=config)
    if getattr(args, "params_record", None):
        from xraypipe.job_log import log_params_changes

        log_params_changes(args.params_record, config)
    return config


# The stage a script runs, its arguments and configuration (set by stage_config): the closing account of run().
_JOB: dict = {}


def rounded(value, digits: int = 4) -> str:
    """A figure for a log line: ``digits`` decimals, "n/a" where there is none (an empty split, one class)."""
    try:
        return "n/a" if value is None or value != value else f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return str(value)


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
    from xraypipe.job_log import timestamped_streams

    with timestamped_streams():
        # (logging records carry their own time: they go to the stream as it was)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                            stream=getattr(sys.stderr, "inner", sys.stderr))
        _run_job(main, results_dir)


def _raw_stderr():
    """stderr without timestamps: the one error line starts with ``error:``."""
    sys.stdout.flush()
    return getattr(sys.stderr, "inner", sys.stderr)


def _run_job(main, results_dir: str) -> None:
    from xraypipe.job_log import stage_account, write_params_record
    from xraypipe.datasets import DatasetFormatError
    from xraypipe.model_files import ModelFileError
    from xraypipe.preprocess import ImageDecodeError
    from xraypipe.splits import SplitLeakageError
    from xraypipe.writer_lock import ResultsBusyError, claim_results

    started = time.monotonic()
    try:
        claim_results(results_dir)
        main()
        if _JOB:
            for line in stage_account(_JOB["stage"], _JOB["args"], time.monotonic() - started):
                print(line, flush=True)
            if getattr(_JOB["args"], "params_record", None):
                write_params_record(_JOB["args"].params_record, _JOB["config"])
    except (ConfigError, DatasetFormatError, ImageDecodeError, SplitLeakageError, FileNotFoundError,
            ResultsBusyError, ModelFileError) as exc:
        print(f"error: {exc}", file=_raw_stderr())
        sys.exit(1)
    except (ValueError, KeyError) as exc:
        # bad values in inputs (a stale model, a missing column, ...): one line naming the file/key; set
        # XRAYPIPE_TRACEBACK=1 to see where it was raised
        if os.environ.get("XRAYPIPE_TRACEBACK"):
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message} (XRAYPIPE_TRACEBACK=1 shows the traceback)", file=_raw_stderr())
        sys.exit(1)
