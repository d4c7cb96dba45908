"""Shared argument handling for the thin scripts in scripts/.

Every script accepts the configuration either as ``--config config.yaml`` (how dvc.yaml calls it; the
file is fully validated) or as ``--config-json '{...}'`` (how the Snakefile calls it, passing only the
keys the stage depends on, already validated when the workflow was parsed).
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
    if args.config_json is not None:
        try:
            return json.loads(args.config_json)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--config-json is not valid JSON: {exc}") from None
    return load_config(args.config)


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
