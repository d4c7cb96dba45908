"""The known-answer experiment for the uncertainty encodings (issue 4).

On the CheXpert twin, half of the training label cells are written as uncertain (-1). When 80% of those are
truly positive, U-Ones must beat U-Zeros on the test split (valid.csv: radiologist-style labels equal to the
hidden truth) by more than the CI overlap; when only 20% are, the order must reverse. If the encodings were
wired wrongly (e.g. both mapped the same way, or swapped), this fails.
"""

import json

import pytest

from workflow_copy import BIN, load_tiny_config, make_workflow_copy, run


def _dataset(share: float) -> dict:
    return {"reader": "chexpert", "source": "synthetic",
            "synthetic": {"seed": 7, "n_patients": 500, "n_valid_patients": 200, "studies": [1, 2], "image_size": 64,
                          "difficulty": 0.3, "uncertain_fraction": 0.5, "uncertain_positive_share": share,
                          "lateral_fraction": 0.0},
            "pathologies": ["Cardiomegaly"], "views": ["PA", "AP"], "split": {"val_fraction": 0.2},
            "preprocess": {"image_size": 64}}


@pytest.mark.slow
def test_u_ones_beats_u_zeros_exactly_when_uncertain_labels_are_mostly_positive(tmp_path):
    cfg = load_tiny_config()
    cfg["experiment"] = {"datasets": ["mostly_positive", "mostly_negative"], "variants": ["u_ones", "u_zeros"]}
    cfg["datasets"] = {"mostly_positive": _dataset(0.8), "mostly_negative": _dataset(0.2)}
    base = {"model": "small_cnn", "epochs": 8, "batch_size": 32, "lr": 0.002, "blank": "masked"}
    cfg["variants"] = {"u_ones": {**base, "encoding": "u_ones"}, "u_zeros": {**base, "encoding": "u_zeros"}}
    wf = make_workflow_copy(tmp_path / "wf", cfg)
    targets = [f"results/metrics/{d}/{v}.json" for d in cfg["experiment"]["datasets"] for v in ("u_ones", "u_zeros")]
    run([str(BIN / "snakemake"), "--cores", "2", *targets], wf, timeout=1500)

    def mean(dataset, variant):
        return json.loads((wf / f"results/metrics/{dataset}/{variant}.json").read_text())["mean"]

    ones, zeros = mean("mostly_positive", "u_ones"), mean("mostly_positive", "u_zeros")
    assert ones["ci_low"] > zeros["ci_high"], (ones, zeros)
    ones, zeros = mean("mostly_negative", "u_ones"), mean("mostly_negative", "u_zeros")
    assert zeros["ci_low"] > ones["ci_high"], (ones, zeros)
