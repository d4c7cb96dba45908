"""xraypipe: a reproducible data-and-training pipeline for X-ray classification and localization."""

__version__ = "0.1.0"
