"""xraypipe: a reproducible data-and-training pipeline for X-ray classification and localization.

The Python API (docs/api.md), imported on first use so that ``import xraypipe`` stays light (no torch):
``xraypipe.load_model``, ``xraypipe.predict_images``, ``xraypipe.CacheDataset``, ``xraypipe.TrainedModel``
(all from :mod:`xraypipe.api`).
"""

__version__ = "0.1.0"

_API = ("load_model", "predict_images", "CacheDataset", "TrainedModel")
__all__ = ["__version__", *_API]


def __getattr__(name):
    if name in _API:
        import importlib

        # by name, not an import statement: the stages' code dependencies (xraypipe.code_deps) read this file's
        # imports, and every stage runs it; only a caller of the API depends on xraypipe.api
        return getattr(importlib.import_module("xraypipe.api"), name)
    raise AttributeError(f"module 'xraypipe' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_API])
