"""Published figures for comparison rows in the tables (copied here with their citations; nothing is read from
outside the project at run time).

- CheXNet: P. Rajpurkar, J. Irvin, et al. "CheXNet: Radiologist-Level Pneumonia Detection on Chest X-Rays with
  Deep Learning", arXiv:1711.05225 (2017), Table 1: per-pathology test AUROC on NIH ChestX-ray14.
- Wang et al.: X. Wang, Y. Peng, L. Lu, Z. Lu, M. Bagheri, R. M. Summers. "ChestX-ray8: Hospital-scale Chest X-ray
  Database and Benchmarks on Weakly-Supervised Classification and Localization of Common Thorax Diseases",
  CVPR 2017, Table 4: localization accuracy, the fraction of ground-truth boxes with IoBB > T, of the 8-class
  ChestX-ray8 model's heatmap of each box's ground-truth class, on the paper's box set (983 images, ~1,600 boxes;
  the released BBox_List_2017.csv holds 984 boxes on 880 images). Its AFP rows and the ChestX-ray14 appendix
  re-run are not copied here (not verified offline). Its 14-label AUROC row here is the one CheXNet's Table 1 quotes (the ChestX-ray14 re-run),
  labelled so; the CVPR paper's own 8-class row (its Table 3, ResNet-50) is given to the two decimals the NIH
  localization study's AUC table quotes.
- MURA: P. Rajpurkar, J. Irvin, et al. "MURA: Large Dataset for Abnormality Detection in Musculoskeletal
  Radiographs", arXiv:1712.06957 (2017): DenseNet-169 study-level Cohen's kappa 0.705, AUROC 0.929, on MURA's
  hidden test set at the fixed 0.5 threshold (a row beside scores on the public validation set says so).

The figures are for the *real* datasets. A synthetic twin shares the labels and file layout, not the images, so a
row for it beside these figures shows the format of the comparison, not a like-for-like result.
"""

from __future__ import annotations

WANG_CVPR_TABLE_3 = ("Wang et al. 2017, CVPR Table 3 (ChestX-ray8, 8-class ResNet-50; two decimals, as the NIH "
                     "localization study quotes it)")
NIH_AUROC = {
    "CheXNet (Rajpurkar et al. 2017)": {
        "Atelectasis": 0.8094, "Cardiomegaly": 0.9248, "Effusion": 0.8638, "Infiltration": 0.7345, "Mass": 0.8676,
        "Nodule": 0.7802, "Pneumonia": 0.7680, "Pneumothorax": 0.8887, "Consolidation": 0.7901, "Edema": 0.8878,
        "Emphysema": 0.9371, "Fibrosis": 0.8047, "Pleural_Thickening": 0.8062, "Hernia": 0.9164,
    },
    "Wang et al. 2017 (as quoted in CheXNet, Table 1)": {
        "Atelectasis": 0.716, "Cardiomegaly": 0.807, "Effusion": 0.784, "Infiltration": 0.609, "Mass": 0.706,
        "Nodule": 0.671, "Pneumonia": 0.633, "Pneumothorax": 0.806, "Consolidation": 0.708, "Edema": 0.835,
        "Emphysema": 0.815, "Fibrosis": 0.769, "Pleural_Thickening": 0.708, "Hernia": 0.767,
    },
    # the CVPR paper's own 8-class ChestX-ray8 model (its Table 3, ResNet-50): to two decimals, as the NIH
    # localization study's AUC table quotes it (the paper's four-decimal figures are not copied offline)
    WANG_CVPR_TABLE_3: {
        "Atelectasis": 0.71, "Cardiomegaly": 0.81, "Effusion": 0.73, "Infiltration": 0.61, "Mass": 0.56,
        "Nodule": 0.71, "Pneumonia": 0.63, "Pneumothorax": 0.79,
    },
}

_WANG_FINDINGS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
                  "Pneumothorax")
_WANG_ACC = {
    0.1: (0.7277, 0.9931, 0.7124, 0.7886, 0.4352, 0.1645, 0.7500, 0.4591),
    0.25: (0.5500, 0.9794, 0.5424, 0.5772, 0.2823, 0.0506, 0.5583, 0.3469),
    0.5: (0.2833, 0.8767, 0.3333, 0.4227, 0.1411, 0.0126, 0.3833, 0.1836),
    0.75: (0.1666, 0.7260, 0.2418, 0.3252, 0.1176, 0.0126, 0.2583, 0.1020),
    0.9: (0.1333, 0.6849, 0.2091, 0.2520, 0.0588, 0.0126, 0.2416, 0.0816),
}
# T -> finding -> fraction of ground-truth boxes with IoBB > T (Wang et al. 2017)
WANG_IOBB_ACC = {t: dict(zip(_WANG_FINDINGS, values)) for t, values in _WANG_ACC.items()}
# Table 4 of the CVPR paper: the 8-class ChestX-ray8 model, a heatmap of each box's ground-truth class, on the
# paper's box set (983 images, about 1,600 boxes); BBox_List_2017.csv as released holds 984 boxes on 880 images.
WANG_LOCALIZATION_SOURCE = ("Wang et al. 2017, CVPR Table 4 (ChestX-ray8, 8-class model, ground-truth class; "
                            "983 images / ~1,600 boxes)")

# on MURA's hidden test set (not the public validation set this pipeline scores), study-level, threshold 0.5
MURA = {"DenseNet-169 (Rajpurkar et al. 2017; hidden test set, threshold 0.5)": {"kappa": 0.705, "auroc": 0.929}}

# Which published figures apply to a dataset read by a given reader.
AUROC_REFERENCES_BY_READER = {"nih": NIH_AUROC}
LOCALIZATION_REFERENCES_BY_READER = {"nih": {WANG_LOCALIZATION_SOURCE: WANG_IOBB_ACC}}
STUDY_REFERENCES_BY_READER = {"mura": MURA}
