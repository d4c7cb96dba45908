"""Synthetic twins of public chest X-ray datasets, written in the real releases' file layouts."""

from .nih import DEFAULT_PARAMS, FINDINGS, NIH_BOX_SIZE_STATS, build_records, generate_nih_synthetic

__all__ = ["DEFAULT_PARAMS", "FINDINGS", "NIH_BOX_SIZE_STATS", "build_records", "generate_nih_synthetic"]
