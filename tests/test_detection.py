"""The detector localizer (xraypipe.detection): both torchvision detectors build and train on CPU, box-shaped
masks, the patient-wise box split (and its fallback on the real NIH box file), conditioning on the classifier's
positives, the iobb table with all localizers, and a tiny workflow run to iobb.csv."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from xraypipe.boxes import (box_split, classifier_positive, condition_on_classifier, false_positives, score_boxes,
                            split_signature, summarise)
from xraypipe.detection import boxes_to_masks, build_detector, predict_boxes, targets_for
from xraypipe.tables import iobb_table, write_iobb_table

FINDINGS = ["Atelectasis", "Mass", "Nodule"]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


# ------------------------------------------------------------------------------------------------ model
@pytest.mark.parametrize("architecture", ["maskrcnn", "fasterrcnn"])
def test_both_detectors_build_and_take_a_training_step(architecture):
    torch.manual_seed(0)
    size = 64
    model = build_detector(FINDINGS, size, architecture=architecture, backbone="resnet18", fpn_channels=16)
    assert model.roi_heads.box_predictor.cls_score.out_features == len(FINDINGS) + 1
    assert (model.roi_heads.mask_predictor is not None) == (architecture == "maskrcnn")
    assert model.transform.min_size == (size,) and model.transform.max_size == size
    boxes = pd.DataFrame({"finding": ["Mass", "Nodule"], "x": [10.0, 30.5], "y": [12.0, 40.0], "w": [20.0, 8.0],
                          "h": [16.0, 9.5]})
    target = targets_for(boxes, FINDINGS, size, with_masks=architecture == "maskrcnn")
    assert target["labels"].tolist() == [2, 3]
    assert torch.allclose(target["boxes"], torch.tensor([[10.0, 12, 30, 28], [30.5, 40, 38.5, 49.5]]))
    images = [torch.rand(3, size, size), torch.rand(3, size, size)]
    before = [p.detach().clone() for p in model.parameters()]
    model.train()
    losses = model(images, [target, target])
    assert ("loss_mask" in losses) == (architecture == "maskrcnn")
    assert {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"} <= set(losses)
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    changed = sum(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert changed > len(before) // 2
    found = predict_boxes(model, np.zeros((2, size, size), np.uint8), FINDINGS, score_threshold=0.0,
                          max_per_finding=2)
    assert set(found.columns) == {"position", "finding", "rank", "x", "y", "w", "h", "score"}
    assert found.groupby(["position", "finding"]).size().max() <= 2 if len(found) else True
    assert set(found["finding"]) <= set(FINDINGS)


def test_unknown_detector_and_backbone_are_named():
    with pytest.raises(ValueError, match="unknown detector 'yolo'"):
        build_detector(FINDINGS, 64, architecture="yolo")
    with pytest.raises(ValueError, match="unknown detector backbone 'vgg'"):
        build_detector(FINDINGS, 64, backbone="vgg")


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        build_detector(FINDINGS, 64, backbone_weights=str(tmp_path / "nope.pt"))


def test_detector_weights_from_a_local_file_round_trip(tmp_path):
    torch.manual_seed(1)
    source = build_detector(FINDINGS, 64, fpn_channels=16)
    torch.save(source.state_dict(), tmp_path / "det.pt")
    torch.manual_seed(2)
    loaded = build_detector(FINDINGS, 64, fpn_channels=16, weights=str(tmp_path / "det.pt"))
    a, b = source.state_dict(), loaded.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if k in b and a[k].shape == b[k].shape)


def test_boxes_become_box_shaped_masks():
    masks = boxes_to_masks([[1.0, 2.0, 3.0, 2.0], [5.2, 5.2, 0.3, 0.3]], 8)
    expected = np.zeros((8, 8), np.uint8)
    expected[2:4, 1:4] = 1  # pixel centres 1.5..3.5 lie in [1, 4]; rows 2.5, 3.5 in [2, 4]
    assert np.array_equal(masks[0], expected)
    # a sub-pixel box still marks the pixel holding its centre
    assert masks[1].sum() == 1 and masks[1][5, 5] == 1


# ------------------------------------------------------------------------------------------------ box split
def _boxes(spec):
    """spec: (image_id, patient, split, finding) -> boxes + index frames."""
    rows, index = [], {}
    for k, (image_id, patient, split, finding) in enumerate(spec):
        index.setdefault(image_id, {"image_id": image_id, "patient_id": patient, "split": split,
                                    "cache_row": len(index)})
        rows.append({"image_id": image_id, "finding": finding, "x": 1.0 + k, "y": 2.0, "w": 5.0, "h": 6.0,
                     "split": split, "cache_row": index[image_id]["cache_row"]})
    return pd.DataFrame(rows), pd.DataFrame(list(index.values()))


def test_box_split_trains_on_train_val_and_scores_the_test_split():
    spec = [(f"tr{i}.png", f"p{i}", "train", "Mass") for i in range(4)] + \
           [("va0.png", "pv", "val", "Nodule"), ("te0.png", "pt0", "test", "Mass"), ("te0.png", "pt0", "test", "Nodule"),
            ("te1.png", "pt1", "test", "Mass"), ("te2.png", "pt1", "test", "Atelectasis")]
    truth, index = _boxes(spec)
    boxes, counts = box_split(truth, index, min_train_images=5, max_images=2)
    assert counts["fallback"] is False and counts["source"] == "train/val splits"
    role = dict(zip(boxes["image_id"] + boxes["finding"], boxes["role"]))
    assert [role[f"tr{i}.pngMass"] for i in range(4)] == ["detector_train"] * 4
    assert role["te0.pngMass"] == role["te0.pngNodule"] == role["te1.pngMass"] == "scoring"
    assert role["te2.pngAtelectasis"] == "not_scored"  # max_images = 2 (cache order)
    assert counts["detector_train"]["boxes"] == 5 and counts["detector_train"]["images"] == 5
    assert counts["scoring"] == {"boxes": 3, "images": 2, "patients": 2, "per_finding": {
        "Mass": {"boxes": 2, "images": 2, "patients": 2}, "Nodule": {"boxes": 1, "images": 1, "patients": 1}}}
    assert counts["detector_train"]["signature"] == split_signature(boxes[boxes["role"] == "detector_train"])


def test_box_split_falls_back_to_a_patient_wise_split_of_the_test_boxes():
    rng = np.random.default_rng(3)
    spec = [("tr0.png", "q0", "train", "Mass")]
    for p in range(40):
        for f in range(int(rng.integers(1, 4))):
            spec.append((f"{p:03d}_{f}.png", f"P{p}", "test", FINDINGS[int(rng.integers(0, 3))]))
    truth, index = _boxes(spec)
    boxes, counts = box_split(truth, index, min_train_images=5, train_fraction=0.25, seed=7)
    assert counts["fallback"] is True and counts["moved_test_patients"] == 10
    train, score = boxes[boxes["role"] == "detector_train"], boxes[boxes["role"] == "scoring"]
    assert not set(train["patient_id"]) & set(score["patient_id"])  # no patient in both parts
    assert set(train["patient_id"]) == {"q0"} | set(train.loc[train["split"] == "test", "patient_id"])
    assert train.loc[train["split"] == "test", "patient_id"].nunique() == 10
    assert score["patient_id"].nunique() == 30 and len(train) + len(score) == len(truth)
    assert counts["scoring"]["boxes"] == len(score) and counts["detector_train"]["patients"] == 11
    again, _ = box_split(truth, index, min_train_images=5, train_fraction=0.25, seed=7)
    other, _ = box_split(truth, index, min_train_images=5, train_fraction=0.25, seed=8)
    assert again["role"].tolist() == boxes["role"].tolist()  # seeded
    assert other["role"].tolist() != boxes["role"].tolist()
    with pytest.raises(ValueError, match="no row in the cache index"):
        box_split(truth, index[index["image_id"] != "tr0.png"])


def test_box_split_of_a_dataset_without_boxes_is_empty():
    truth = pd.DataFrame(columns=["image_id", "finding", "x", "y", "w", "h", "split", "cache_row"])
    index = pd.DataFrame({"image_id": ["a.png"], "patient_id": ["1"], "split": ["test"], "cache_row": [0]})
    boxes, counts = box_split(truth, index, max_images=10)
    assert boxes.empty and counts["fallback"] is True and counts["moved_test_patients"] == 0
    assert counts["detector_train"]["boxes"] == counts["scoring"]["images"] == 0


def test_real_nih_boxes_all_lie_in_the_official_test_list_so_the_split_falls_back(shared_data):
    """The real BBox_List_2017.csv: every boxed image is outside train_val_list.txt (the official test list), so
    the detector can only train on a patient-wise part of the boxed test patients."""
    import gzip

    from xraypipe.datasets.nih import read_nih_boxes

    raw = read_nih_boxes(shared_data / "nih" / "BBox_List_2017.csv")
    assert len(raw) == 984 and raw["image_id"].nunique() == 880
    with gzip.open(shared_data / "nih" / "train_val_list.txt.gz", "rt") as handle:
        train_val = {line.strip() for line in handle if line.strip()}
    assert len(train_val) == 86524 and not set(raw["image_id"]) & train_val
    images = raw["image_id"].drop_duplicates().sort_values().reset_index(drop=True)
    index = pd.DataFrame({"image_id": images, "patient_id": images.str.split("_").str[0],
                          "split": "test", "cache_row": np.arange(len(images))})
    truth = raw.merge(index[["image_id", "split", "cache_row"]], on="image_id")
    boxes, counts = box_split(truth, index, min_train_images=50, train_fraction=0.5, seed=0, max_images=None)
    assert counts["fallback"] is True
    n_patients = index["patient_id"].nunique()
    train, score = boxes[boxes["role"] == "detector_train"], boxes[boxes["role"] == "scoring"]
    assert not set(train["patient_id"]) & set(score["patient_id"])
    assert counts["detector_train"]["patients"] == round(0.5 * n_patients)
    assert counts["detector_train"]["patients"] + counts["scoring"]["patients"] == n_patients
    assert counts["detector_train"]["images"] + counts["scoring"]["images"] == 880
    assert counts["detector_train"]["boxes"] + counts["scoring"]["boxes"] == 984


# ------------------------------------------------------------------------------------------------ conditioning
def test_detector_boxes_are_kept_only_for_the_classifiers_positive_findings():
    predictions = pd.DataFrame({"image_id": ["a", "b"], "prob_Mass": [0.7, 0.2], "prob_Nodule": [0.1, 0.5],
                                "prob_Atelectasis": [0.3, 0.3]})
    positives = classifier_positive(predictions, {"Mass": 0.5, "Nodule": 0.5, "Atelectasis": 0.3}, FINDINGS)
    assert positives.set_index(["image_id", "finding"])["positive"].to_dict() == {
        ("a", "Atelectasis"): True, ("b", "Atelectasis"): True, ("a", "Mass"): True, ("b", "Mass"): False,
        ("a", "Nodule"): False, ("b", "Nodule"): True}  # >= threshold is positive
    detected = pd.DataFrame({"image_id": ["a", "a", "b", "b"], "finding": ["Mass", "Nodule", "Mass", "Nodule"],
                             "x": [0.0, 10, 0, 10], "y": [0.0, 10, 0, 10], "w": [10.0, 10, 10, 10],
                             "h": [10.0, 10, 10, 10]})
    conditioned = condition_on_classifier(detected, positives)
    assert conditioned["classifier_positive"].tolist() == [True, False, False, True]
    # scored with the localization code: b's Mass box is dropped (a miss), a's Nodule box is no longer a false positive
    truth = pd.DataFrame({"image_id": ["a", "b"], "finding": ["Mass", "Mass"], "x": [0.0, 0.0], "y": [0.0, 0.0],
                          "w": [10.0, 10.0], "h": [10.0, 10.0]})
    kept = conditioned[conditioned["classifier_positive"]]
    assert score_boxes(truth, kept)["hit_0.5"].tolist() == [True, False]
    assert score_boxes(truth, detected)["hit_0.5"].tolist() == [True, True]
    with pytest.raises(ValueError, match="thresholds.json has no threshold for Nodule"):
        classifier_positive(predictions, {"Mass": 0.5, "Atelectasis": 0.3}, FINDINGS)
    # a null threshold (no operating point could be chosen on validation) makes no positive call
    none = classifier_positive(predictions, {"Mass": 0.5, "Nodule": None, "Atelectasis": 0.3}, FINDINGS)
    assert not none.loc[none["finding"] == "Nodule", "positive"].any()
    assert none.loc[none["finding"] == "Mass", "positive"].tolist() == [True, False]


# ------------------------------------------------------------------------------------------------ the table
def _summary(localizer, acc, afp):
    truth = pd.DataFrame({"image_id": ["a", "b"], "finding": ["Mass", "Mass"], "x": [0.0] * 2, "y": [0.0] * 2,
                          "w": [10.0] * 2, "h": [10.0] * 2})
    hit = {"image_id": "a", "finding": "Mass", "x": 0.0, "y": 0.0, "w": 10.0, "h": 10.0}
    miss = {"image_id": "b", "finding": "Mass", "x": 50.0, "y": 50.0, "w": 10.0, "h": 10.0}
    detected = pd.DataFrame([hit] * acc + [miss] * afp)
    return summarise(score_boxes(truth, detected), false_positives(truth, detected), ["Mass", "Nodule"]).assign(
        localizer=localizer)


def test_iobb_table_compares_three_localizers_with_wang_and_counts(tmp_path):
    pd.concat([_summary("gradcam/threshold (oracle class)", 1, 2), _summary("gradcam/heuristic", 0, 1)]).to_csv(
        tmp_path / "loc.csv", index=False)
    _summary("maskrcnn", 1, 0).to_csv(tmp_path / "det.csv", index=False)
    counts = {"source": "train/val splits", "fallback": False,
              "detector_train": {"boxes": 7, "images": 6, "patients": 4,
                                 "per_finding": {"Mass": {"boxes": 7, "images": 6, "patients": 4}}},
              "scoring": {"boxes": 2, "images": 2, "patients": 2,
                          "per_finding": {"Mass": {"boxes": 2, "images": 2, "patients": 2}}},
              "not_scored": {"boxes": 0, "images": 0, "patients": 0, "per_finding": {}}}
    table = write_iobb_table({("nih_synthetic", "r"): [tmp_path / "loc.csv", tmp_path / "det.csv"]},
                             tmp_path / "t.csv", tmp_path / "t.md", {"nih_synthetic": "nih"},
                             split_counts={"nih_synthetic": counts})
    measured = table[(table["kind"] == "measured") & (table["metric"] == "acc") & (table["T"] == 0.5)]
    assert measured.set_index("localizer")["Mass"].to_dict() == {"gradcam/threshold (oracle class)": 0.5,
                                                                 "gradcam/heuristic": 0.0, "maskrcnn": 0.5}
    afp = table[(table["kind"] == "measured") & (table["metric"] == "afp") & (table["T"] == 0.5)]
    assert afp.set_index("localizer")["Mass"].to_dict() == {"gradcam/threshold (oracle class)": 1.0,
                                                            "gradcam/heuristic": 0.5, "maskrcnn": 0.0}
    assert (table["kind"] == "published").sum() == 5  # Wang et al. once per dataset
    # differences from Wang et al. only for the oracle-class heatmap rows (their setting)
    diff = table[(table["kind"] == "difference") & (table["T"] == 0.5)].set_index("localizer")["Mass"]
    assert diff.to_dict() == {"gradcam/threshold (oracle class)": pytest.approx(0.5 - 0.1411)}
    c = table[table["kind"] == "counts"].set_index("metric")["Mass"]
    assert c.to_dict() == {"train_boxes": 7, "train_images": 6, "train_patients": 4, "scored_boxes": 2,
                           "scored_images": 2, "scored_patients": 2}
    md = (tmp_path / "t.md").read_text()
    assert "detector trained on 7 boxes / 6 images / 4 patients (train/val splits)" in md
    assert "scored on 2 boxes / 2 images / 2 patients" in md
    assert "| nih_synthetic | box split: train/val splits |  | counts | n/a | train_boxes | 7 |" in md
    # old single-localizer summaries (no localizer column) still load
    _summary("x", 1, 0).drop(columns="localizer").to_csv(tmp_path / "old.csv", index=False)
    old = iobb_table({("d", "v"): tmp_path / "old.csv"})
    assert set(old["localizer"]) == {""} and len(old) == 2 * 5 * 4 + 4


# ------------------------------------------------------------------------------------------------ workflow
@pytest.mark.slow
def test_tiny_workflow_scores_all_localizers_on_the_same_boxes(tmp_path):
    from workflow_copy import BIN, load_tiny_config, make_workflow_copy, run

    cfg = load_tiny_config()
    cfg["experiment"]["variants"] = ["small_cnn"]
    cfg["datasets"]["nih_synthetic"]["synthetic"].update(n_patients=160, image_size=64)
    cfg["datasets"]["nih_synthetic"]["preprocess"]["image_size"] = 48
    cfg["variants"]["small_cnn"]["epochs"] = 2
    cfg["evaluation"] = {"bootstrap_samples": 20, "localization": {
        "max_images": 15, "box_split": {"min_train_images": 10},
        "detector": {"epochs": 1, "fpn_channels": 16, "score_threshold": 0.0}}}
    wf = make_workflow_copy(tmp_path / "wf", cfg)
    run([str(BIN / "snakemake"), "--cores", "2", "results/tables/iobb.csv"], wf, timeout=1200)
    loc = wf / "results/localization/nih_synthetic/small_cnn"
    info = json.loads((loc / "detector/info.json").read_text())
    split = pd.read_csv(loc / "detector/box_split.csv", dtype={"image_id": str, "patient_id": str})
    scoring = split[split["role"] == "scoring"]
    assert info["n_images"] == scoring["image_id"].nunique() == 15 and info["trained"]
    assert (split["role"] == "not_scored").any()  # more boxed test images than max_images
    assert info["n_detected_conditioned"] <= info["n_detected_unconditioned"]
    assert not set(scoring["patient_id"]) & set(split.loc[split["role"] == "detector_train", "patient_id"])
    # Grad-CAM (every box method) and the detector are scored on exactly the same ground-truth boxes
    key = ["image_id", "finding", "x", "y", "w", "h"]
    gradcam = pd.read_csv(loc / "scored.csv", dtype={"image_id": str})
    detector = pd.read_csv(loc / "detector/scored.csv", dtype={"image_id": str})
    expected = scoring[key].sort_values(key).reset_index(drop=True)
    assert gradcam["box_method"].nunique() == 4
    for frame, column, n in ((gradcam, "localizer", 8), (detector, "localizer", 2)):
        assert frame[column].nunique() == n
        for _, part in frame.groupby(column):
            got = part[key].sort_values(key).reset_index(drop=True)
            pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    table = pd.read_csv(wf / "results/tables/iobb.csv")
    heatmap_localizers = {f"gradcam/{m}{s}" for m in ("threshold", "heuristic", "wang60", "wang180")
                          for s in ("", " (oracle class)")}
    assert set(table.loc[table["kind"] == "measured", "localizer"]) == heatmap_localizers | {
        "maskrcnn", "maskrcnn/unconditioned"}
    # the same heatmap and boxes for a ground-truth pair either way: the conditioned rows hit a subset
    acc = table[(table["kind"] == "measured") & (table["metric"] == "acc")].set_index(["localizer", "T"])
    findings = [c for c in table.columns if c not in ("dataset", "variant", "localizer", "kind", "T", "metric")]
    for m in ("threshold", "heuristic", "wang60", "wang180"):
        conditioned, oracle = acc.loc[f"gradcam/{m}"][findings], acc.loc[f"gradcam/{m} (oracle class)"][findings]
        assert ((conditioned <= oracle) | oracle.isna()).all().all()
    loc_info = json.loads((loc / "info.json").read_text())
    assert loc_info["heatmap"]["map_size"] and loc_info["n_ground_truth_pairs"] == len(
        scoring[["image_id", "finding"]].drop_duplicates())
    ci = table[(table["kind"] == "measured") & table["metric"].isin(["acc_ci_low", "acc_ci_high"])]
    assert ci[findings].notna().any().any()
    scored_boxes = table[(table["kind"] == "counts") & (table["metric"] == "scored_boxes")]
    assert scored_boxes.drop(columns=["dataset", "variant", "localizer", "kind", "T", "metric"]).sum(axis=1).iloc[0] \
        == len(scoring)
    history = pd.read_csv(wf / "results/detectors/nih_synthetic/history.csv")
    assert len(history) == 1 and np.isfinite(history["loss"]).all()
