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


def threads(args, key: str | None = None) -> int:
    """``--threads`` (Snakemake passes the job's threads); else (DVC) the config's value at dotted ``key``, e.g.
    ``training.threads`` (not a tracked key: a job's thread count changes no result), or 1 without a key."""
    if getattr(args, "threads", None):
        return args.threads
    if args.config is None or key is None:
        return 1
    node = load_config(args.config)
    for part in key.split("."):
        node = node[part]
    return int(node)


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
