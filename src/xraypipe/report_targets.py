"""The final outputs of the experiment that exist now, for ``snakemake --report report.html <targets>``.

Snakemake builds a report over the jobs of the DAG of its targets and stops on any report file of that DAG that
does not exist. With no targets that DAG is every job (rule ``all``), so after ``make run`` (only the AUROC table)
the report would fail. Naming the outputs that exist gives the report of what has been built: the AUROC table
after ``make run``, every table and figure after ``snakemake all`` (``make report``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xraypipe.config import ConfigError, load_config
from xraypipe.workflow import all_targets

REPORTED_DIRS = ("results/tables/", "results/figures/")


def built_report_targets(config: dict, root: str | Path = ".") -> list[str]:
    """The tables and figures of ``config``'s experiment (in rule ``all``'s order) that exist under ``root``."""
    root = Path(root)
    return [t for t in all_targets(config) if t.startswith(REPORTED_DIRS) and (root / t).exists()]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m xraypipe.report_targets", description=__doc__.splitlines()[0])
    p.add_argument("--config", default="config.yaml")
    args = p.parse_args(argv)
    try:
        targets = built_report_targets(load_config(args.config))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if not targets:
        print("no tables or figures built yet: run `make run` (or `snakemake --cores 8 all`) first", file=sys.stderr)
        return 1
    print(" ".join(targets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
