"""Dataset registry: one reader per source layout, all producing the same manifest contract."""

from __future__ import annotations

from xraypipe.registry import Registry

from . import nih
from .contract import BASE_COLUMNS, DatasetFormatError, DatasetReader, validate_manifest

READERS: Registry = Registry("dataset reader")


def _generate_nih(out_dir, params):
    from xraypipe.synthetic.nih import generate_nih_synthetic

    return generate_nih_synthetic(out_dir, params)


def _nih_defaults():
    from xraypipe.synthetic.nih import DEFAULT_PARAMS

    return DEFAULT_PARAMS


READERS.register("nih")(DatasetReader(
    name="nih", pathologies=nih.PATHOLOGIES, read=nih.read_nih, generate=_generate_nih,
))
_SYNTHETIC_DEFAULTS = {"nih": _nih_defaults}


def check_synthetic_params(reader: str, params: dict) -> None:
    """Raise ValueError naming any generator parameter the reader's twin does not know."""
    if reader not in _SYNTHETIC_DEFAULTS:
        raise ValueError(f"reader {reader!r} has no synthetic twin yet")
    allowed = _SYNTHETIC_DEFAULTS[reader]()
    for key in params:
        if key not in allowed:
            raise ValueError(f"unknown generator parameter {key!r}; known: {', '.join(sorted(allowed))}")


__all__ = ["READERS", "BASE_COLUMNS", "DatasetFormatError", "DatasetReader", "validate_manifest",
           "check_synthetic_params"]
