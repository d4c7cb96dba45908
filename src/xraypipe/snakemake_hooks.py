"""Run at interpreter start-up of the project's environment (the ``xraypipe-snakemake.pth`` file that
``make setup`` writes): inside a ``snakemake`` process only, make a config file with a YAML syntax error fail with
its file, line and column.

Snakemake reads ``--configfile`` overlays (and the Snakefile's ``configfile:``) itself, before any workflow code
runs, and reports only "Config file is not valid JSON or YAML". Here its loader is wrapped: a file it cannot parse
is re-read with PyYAML to name the place. Anything unexpected (another Snakemake layout) leaves Snakemake as it is;
tests/test_hostile_files.py checks that the wrap is in effect with the pinned Snakemake.
"""

import os
import sys


def _is_snakemake_process() -> bool:
    argv = list(getattr(sys, "orig_argv", None) or sys.argv)
    if argv[1:3] == ["-m", "snakemake"]:
        return True
    script = (sys.argv or [""])[0].replace(os.sep, "/")
    return os.path.basename(script) == "snakemake"


def wrap_config_loader() -> bool:
    """Wrap ``snakemake.common.configfile._load_configfile``; True when done."""
    try:
        from snakemake.common import configfile
        from snakemake_interface_common.exceptions import WorkflowError
    except Exception:
        return False
    original = getattr(configfile, "_load_configfile", None)
    if original is None or getattr(original, "_xraypipe_wrapped", False):
        return original is not None

    def load_naming_the_line(configpath_or_obj, filetype="Config"):
        try:
            return original(configpath_or_obj, filetype)
        except WorkflowError as exc:
            if not isinstance(configpath_or_obj, (str, os.PathLike)) or "not valid JSON or YAML" not in str(exc):
                raise
            import yaml

            from xraypipe.config import yaml_error_line

            try:
                with open(configpath_or_obj, encoding="utf-8") as f:
                    yaml.safe_load(f)
            except yaml.YAMLError as yaml_exc:
                raise WorkflowError(yaml_error_line(os.fspath(configpath_or_obj), yaml_exc)) from None
            except Exception:
                pass
            raise

    load_naming_the_line._xraypipe_wrapped = True
    configfile._load_configfile = load_naming_the_line
    return True


if _is_snakemake_process():
    wrap_config_loader()

PTH_NAME = "xraypipe-snakemake.pth"
# one line, run by Python's site module at start-up; harmless where xraypipe is gone
PTH_LINE = "import importlib.util as _u; _u.find_spec('xraypipe') and __import__('xraypipe.snakemake_hooks')\n"


def install_pth() -> str:
    """Write the start-up file into this environment's site-packages; its path."""
    import sysconfig
    from pathlib import Path

    path = Path(sysconfig.get_paths()["purelib"]) / PTH_NAME
    path.write_text(PTH_LINE)
    return str(path)


if __name__ == "__main__":
    if sys.argv[1:] != ["--install"]:
        sys.exit("usage: python -m xraypipe.snakemake_hooks --install")
    print(f"wrote {install_pth()}")
