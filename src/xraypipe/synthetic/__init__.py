"""Synthetic twins of public X-ray datasets, written in the real releases' file layouts.

NIH ChestX-ray14 (:mod:`.nih`), CheXpert (:mod:`.chexpert`), MURA (:mod:`.mura`), Kermany pediatric pneumonia
(:mod:`.kermany`), MedMNIST PneumoniaMNIST / ChestMNIST (:mod:`.medmnist`).
"""

from .nih import DEFAULT_PARAMS, FINDINGS, NIH_BOX_SIZE_STATS, build_records, generate_nih_synthetic

__all__ = ["DEFAULT_PARAMS", "FINDINGS", "NIH_BOX_SIZE_STATS", "build_records", "generate_nih_synthetic"]
