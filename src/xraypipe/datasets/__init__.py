"""Dataset registry: one reader per source layout, all producing the same manifest contract.

Readers: ``nih`` (ChestX-ray14), ``chexpert`` (v1.0-small and full), ``mura`` (v1.1), ``kermany`` (pediatric
pneumonia), ``pneumoniamnist`` and ``chestmnist`` (MedMNIST .npz). Each has a synthetic twin generator in
:mod:`xraypipe.synthetic` writing the real release's layout (the reader cannot tell the difference).
"""

from __future__ import annotations

import functools
import importlib
import inspect
from pathlib import Path

from xraypipe.registry import Registry

from . import chexpert, kermany, medmnist, mura, nih
from .contract import BASE_COLUMNS, OPTIONAL_COLUMNS, DatasetFormatError, DatasetReader, validate_manifest

READERS: Registry = Registry("dataset reader")

# reader -> (synthetic module, generator function name, extra keyword arguments)
_TWINS = {
    "nih": ("nih", "generate_nih_synthetic", {}),
    "chexpert": ("chexpert", "generate_chexpert_synthetic", {}),
    "mura": ("mura", "generate_mura_synthetic", {}),
    "kermany": ("kermany", "generate_kermany_synthetic", {}),
    "pneumoniamnist": ("medmnist", "generate_medmnist_synthetic", {"flavour": "pneumoniamnist"}),
    "chestmnist": ("medmnist", "generate_medmnist_synthetic", {"flavour": "chestmnist"}),
}


def _twin_module(reader: str):
    return importlib.import_module(f"xraypipe.synthetic.{_TWINS[reader][0]}")


def _generator(reader: str):
    def generate(out_dir, params, threads: int = 1):
        _, func, kwargs = _TWINS[reader]
        generator = getattr(_twin_module(reader), func)
        if "threads" in inspect.signature(generator).parameters:  # the twins that render in parallel
            kwargs = {**kwargs, "threads": threads}
        return generator(out_dir, params, **kwargs)

    return generate


READERS.register("nih")(DatasetReader(
    name="nih", pathologies=nih.PATHOLOGIES, read=nih.read_nih, generate=_generator("nih"),
    find_boxes=nih.find_box_file, extra_labels=(nih.NO_FINDING,)))
READERS.register("chexpert")(DatasetReader(
    name="chexpert", pathologies=chexpert.PATHOLOGIES, read=chexpert.read_chexpert, generate=_generator("chexpert"),
    has_uncertain=True))
READERS.register("mura")(DatasetReader(
    name="mura", pathologies=mura.PATHOLOGIES, read=mura.read_mura, generate=_generator("mura"),
    options=("body_parts",)))
READERS.register("kermany")(DatasetReader(
    name="kermany", pathologies=kermany.PATHOLOGIES, read=kermany.read_kermany, generate=_generator("kermany")))
for _flavour, _names in medmnist.FLAVOURS.items():
    READERS.register(_flavour)(DatasetReader(
        name=_flavour, pathologies=_names, read=functools.partial(medmnist.read_medmnist, flavour=_flavour),
        generate=_generator(_flavour)))


def box_file(reader: str, raw_dir) -> Path | None:
    """The ground-truth box file of a raw dataset directory read by ``reader`` (None: the reader has no boxes, or
    this copy lacks the file)."""
    find = READERS.get(reader).find_boxes
    return find(Path(raw_dir)) if find else None


def check_synthetic_params(reader: str, params: dict) -> None:
    """Raise ValueError naming any generator parameter the reader's twin does not know (or a bad value)."""
    if reader not in _TWINS:
        raise ValueError(f"reader {reader!r} has no synthetic twin")
    module = _twin_module(reader)
    allowed = module.DEFAULT_PARAMS
    for key in params:
        if key not in allowed:
            raise ValueError(f"unknown generator parameter {key!r}; known: {', '.join(sorted(allowed))}")
    if reader != "nih":
        module.resolve_params(params)  # value checks (cheap: no rendering)


__all__ = ["READERS", "BASE_COLUMNS", "OPTIONAL_COLUMNS", "DatasetFormatError", "DatasetReader", "validate_manifest",
           "check_synthetic_params", "box_file"]
