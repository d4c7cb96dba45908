"""Localization: box geometry (IoU/IoBB by hand), the 1024-frame -> cache-frame mapping (checked on real pixels
through the cache's own resize), heatmap -> boxes, Wang et al.'s scores, and Grad-CAM/CAM heatmaps."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from xraypipe.boxes import false_positives, heuristic_box_sizes, iobb, iou, map_box, score_boxes, summarise
from xraypipe.localization import cam_layers, heatmaps, heuristic_box, threshold_boxes, wang_boxes
from xraypipe.models import build_model
from xraypipe.preprocess import load_image


def test_iou_and_iobb_hand_worked():
    a, b = (0, 0, 4, 4), (2, 2, 4, 4)  # intersection 2x2 = 4, union 28
    assert iou(a, b) == pytest.approx(4 / 28)
    assert iobb(a, b) == pytest.approx(4 / 16)
    small_inside = (1, 1, 1, 1)
    assert iobb(small_inside, a) == 1.0 and iou(small_inside, a) == pytest.approx(1 / 16)
    assert iou(a, (10, 10, 1, 1)) == 0.0 and iobb((0, 0, 0, 0), a) == 0.0


@pytest.mark.parametrize("resize", ["pad", "crop", "stretch"])
@pytest.mark.parametrize("wh", [(300, 200), (200, 300), (256, 256)])
def test_box_mapping_follows_the_cache_resize(tmp_path, resize, wh):
    """A white rectangle drawn at a known 1024-frame box lands where map_box says, after the cache's resize."""
    w, h = wh
    frame_box = (400.0, 300.0, 256.0, 200.0)  # 1024 frame
    sx, sy = w / 1024, h / 1024
    x0, y0 = round(frame_box[0] * sx), round(frame_box[1] * sy)
    x1, y1 = round((frame_box[0] + frame_box[2]) * sx), round((frame_box[1] + frame_box[3]) * sy)
    pixels = np.zeros((h, w), np.uint8)
    pixels[y0:y1, x0:x1] = 255
    Image.fromarray(pixels).save(tmp_path / "im.png")
    size = 64
    cached = load_image(tmp_path / "im.png", size, resize)
    ys, xs = np.nonzero(cached > 127)
    found = (xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min())
    mapped = map_box(frame_box, (w, h), size, resize)
    np.testing.assert_allclose(found, mapped, atol=1.0)


def test_box_mapping_pad_by_hand():
    # 2000 x 1000 image, box = left half of the image in the 1024 frame; letterboxed onto a 2000 square
    mapped = map_box((0, 0, 512, 1024), (2000, 1000), 100, "pad")
    assert mapped == pytest.approx((0.0, 25.0, 50.0, 50.0))
    assert map_box((0, 0, 512, 512), (1024, 1024), 256, "pad") == pytest.approx((0, 0, 128, 128))


def test_threshold_boxes_two_components():
    heat = np.zeros((20, 20), np.float32)
    heat[2:5, 3:9] = 1.0
    heat[12:18, 14:16] = 0.6
    heat[0, 19] = 0.2  # below the threshold
    boxes = threshold_boxes(heat, 0.5)
    assert [(b["x"], b["y"], b["w"], b["h"]) for b in boxes] == [(3, 2, 6, 3), (14, 12, 2, 6)]
    assert boxes[0]["peak"] == 1.0 and boxes[1]["mean_heat"] == pytest.approx(0.6)
    assert len(threshold_boxes(heat, 0.5, max_boxes=1)) == 1
    assert threshold_boxes(np.zeros((5, 5)), 0.5) == []


def test_heuristic_as_the_study_writes_it_on_a_hand_made_map():
    # four regions above 0.5 x max: A 8x8 at 0.6 (the mean size), C 9x9 at 0.55, B 2x2 at 1.0 (the hottest),
    # D a 30x2 strip at 0.7
    heat = np.zeros((64, 64), np.float32)
    heat[2:10, 2:10] = 0.6      # A: x 2, y 2
    heat[40:49, 40:49] = 0.55   # C: x 40, y 40
    heat[20:22, 50:52] = 1.0    # B: x 50, y 20
    heat[60:62, 10:40] = 0.7    # D: x 10, y 60
    box = lambda found: tuple(found[0][k] for k in ("x", "y", "w", "h"))  # noqa: E731
    # the 2 closest in size to 8x8 are A (distance 0) and C (2 log 9/8); A is hotter
    assert box(heuristic_box(heat, (8.0, 8.0), keep=2)) == (2, 2, 8, 8)
    # with 3 candidates, D (|log 30/8| + |log 2/8| = 2.71) comes before B (2 log 4 = 2.77) and, at 0.7, wins
    assert box(heuristic_box(heat, (8.0, 8.0), keep=3)) == (10, 60, 30, 2)
    # 4 candidates: B joins and is the hottest
    assert box(heuristic_box(heat, (8.0, 8.0), keep=4)) == (50, 20, 2, 2)
    # no synthetic mean-size box: whatever the mean size, the answer is one of the regions' own boxes
    regions = {(2, 2, 8, 8), (40, 40, 9, 9), (50, 20, 2, 2), (10, 60, 30, 2)}
    for size in ((3.0, 3.0), (20.0, 5.0), (64.0, 64.0)):
        assert box(heuristic_box(heat, size, keep=1)) in regions
    # closest to 9x9 is C; a maximum area of 70/4096 of the map drops C (81 px), leaving A the closest
    assert box(heuristic_box(heat, (9.0, 9.0), keep=1)) == (40, 40, 9, 9)
    assert box(heuristic_box(heat, (9.0, 9.0), keep=1, max_area=70 / 4096)) == (2, 2, 8, 8)
    # a higher threshold (0.65 x max) leaves only B and D
    assert box(heuristic_box(heat, (8.0, 8.0), threshold=0.65, keep=5)) == (50, 20, 2, 2)
    assert heuristic_box(np.zeros((8, 8)), (2.0, 2.0)) == []


def test_wang_rule_boxes_every_region_above_60_and_180_of_255():
    # min 0.2, max 1.0: scaled = (v - 0.2) / 0.8 * 255; 0.3 -> 31.9, 0.5 -> 95.6, 0.8 -> 191.3, 1.0 -> 255
    heat = np.full((32, 32), 0.2, np.float32)
    heat[1:5, 1:5] = 1.0        # A
    heat[10:13, 20:26] = 0.8    # B
    heat[20:30, 2:4] = 0.5      # C
    heat[28:31, 28:31] = 0.3    # D: below both levels
    box = lambda found: {(b["x"], b["y"], b["w"], b["h"]) for b in found}  # noqa: E731
    assert box(wang_boxes(heat, 60)) == {(1, 1, 4, 4), (20, 10, 6, 3), (2, 20, 2, 10)}
    assert box(wang_boxes(heat, 180)) == {(1, 1, 4, 4), (20, 10, 6, 3)}
    # the scale is the map's own range: an affine change of the heatmap gives the same boxes
    assert box(wang_boxes(3 * heat - 0.5, 60)) == box(wang_boxes(heat, 60))
    # 8-connected regions: a diagonal touch joins two blocks into one box
    joined = np.zeros((8, 8), np.float32)
    joined[0:2, 0:2] = joined[2:4, 2:4] = 1.0
    assert box(wang_boxes(joined, 60)) == {(0, 0, 4, 4)}
    assert wang_boxes(np.ones((4, 4)), 60) == []  # a flat map has no region above the others


def test_heuristic_mean_sizes_come_from_training_boxes_only():
    train = pd.DataFrame({"finding": ["Mass", "Mass", "Nodule"], "w": [10.0, 20.0, 4.0], "h": [10.0, 30.0, 6.0]})
    sizes, sources = heuristic_box_sizes(train, ["Mass", "Nodule", "Effusion"], image_size=96)
    assert sizes["Mass"] == (15.0, 20.0) and sizes["Nodule"] == (4.0, 6.0)
    # no training box of the finding: the mean of all training boxes, never the scored boxes (not even passed in)
    assert sizes["Effusion"] == pytest.approx((34 / 3, 46 / 3)) and sources["Effusion"] == "all training boxes"
    sizes, sources = heuristic_box_sizes(train.iloc[:0], ["Mass"], image_size=96)
    assert sizes["Mass"] == (24.0, 24.0) and "no training boxes" in sources["Mass"]


def test_heuristic_prefers_the_mean_size_and_the_hot_candidate():
    heat = np.zeros((40, 40), np.float32)
    yy, xx = np.mgrid[:40, :40]
    heat += np.exp(-((xx - 10) ** 2 + (yy - 10) ** 2) / 20.0)  # hot blob near (10, 10)
    heat += 0.4 * np.exp(-((xx - 30) ** 2 + (yy - 30) ** 2) / 60.0)  # weaker, wider blob
    (box,) = heuristic_box(heat, (8.0, 8.0))
    cx, cy = box["x"] + box["w"] / 2, box["y"] + box["h"] / 2
    assert abs(cx - 10.5) < 2 and abs(cy - 10.5) < 2
    assert 5 <= box["w"] <= 11 and 5 <= box["h"] <= 11


def test_scores_hit_fraction_and_false_positives_by_hand():
    truth = pd.DataFrame({"image_id": ["a", "a", "b"], "finding": ["Mass", "Nodule", "Mass"],
                          "x": [0, 50, 0], "y": [0, 50, 0], "w": [10, 4, 10], "h": [10, 4, 10]})
    detected = pd.DataFrame({"image_id": ["a", "a", "b"], "finding": ["Mass", "Mass", "Mass"],
                             "x": [0, 80, 5], "y": [0, 80, 5], "w": [20, 5, 10], "h": [10, 5, 10]})
    # a/Mass: det 0 -> IoBB 100/200 = 0.5, det 1 -> 0 (a false positive at every T); b/Mass: IoBB 25/100
    # a/Nodule: no detection -> miss
    scored = score_boxes(truth, detected, (0.1, 0.25, 0.5))
    assert scored["best_iobb"].tolist() == pytest.approx([0.5, 0.0, 0.25])
    assert scored["best_iou"].tolist() == pytest.approx([0.5, 0.0, 25 / 175])
    assert scored["hit_0.1"].tolist() == [True, False, True] and scored["hit_0.25"].tolist() == [True, False, False]
    fps = false_positives(truth, detected, (0.1, 0.25, 0.5)).set_index(["image_id", "finding"])
    assert fps.loc[("a", "Mass"), "fp_0.1"] == 1 and fps.loc[("a", "Mass"), "fp_0.5"] == 2
    assert fps.loc[("b", "Mass"), "fp_0.25"] == 1 and fps.loc[("a", "Nodule"), "n_detected"] == 0
    table = summarise(scored, fps.reset_index(), ["Mass", "Nodule", "Effusion"], (0.1, 0.25, 0.5)).set_index(["T", "metric"])
    assert table.loc[(0.1, "acc"), "Mass"] == 1.0 and table.loc[(0.25, "acc"), "Mass"] == 0.5
    assert table.loc[(0.1, "afp"), "Mass"] == 0.5 and table.loc[(0.5, "afp"), "Mass"] == 1.5
    assert table.loc[(0.1, "acc"), "Nodule"] == 0.0 and np.isnan(table.loc[(0.1, "acc"), "Effusion"])


@pytest.mark.parametrize("name", ["small_cnn", "resnet18"])
def test_cam_equals_gradcam_for_gap_linear_heads(name):
    """For a GAP + linear head Grad-CAM's channel weights are the linear weights / (H*W): the same map as CAM."""
    torch.manual_seed(0)
    model = build_model(name, num_classes=3, **({"widths": [8, 16]} if name == "small_cnn" else {})).eval()
    layer, linear = cam_layers(model)
    assert linear is not None
    images = np.random.default_rng(0).integers(0, 255, (4, 32, 32)).astype(np.uint8)
    classes = [0, 1, 2, 1]
    cam = heatmaps(model, images, classes, method="cam")
    grad = heatmaps(model, images, classes, method="gradcam")
    assert cam.shape == (4, 32, 32) and 0 <= cam.min() and cam.max() <= 1
    np.testing.assert_allclose(cam, grad, atol=1e-4)


def test_cam_refuses_a_model_without_a_gap_linear_head():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    model(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="global-average-pool"):
        heatmaps(model, np.zeros((1, 8, 8), np.uint8), [0], method="cam")
    assert heatmaps(model, np.full((1, 8, 8), 3, np.uint8), [0], method="gradcam").shape == (1, 8, 8)


def test_iou_hits_and_a_box_of_a_finding_the_image_lacks_is_a_false_positive():
    """IoU > T and IoBB > T side by side; a conditioned localizer's box for a finding without a ground-truth box in
    that image counts for AFP (over the images that have the finding: Wang et al.'s denominator)."""
    truth = pd.DataFrame({"image_id": ["a", "c"], "finding": ["Mass", "Nodule"], "patient_id": ["p", "q"],
                          "x": [0, 50], "y": [0, 50], "w": [10, 4], "h": [10, 4]})
    detected = pd.DataFrame({"image_id": ["a", "c", "c"], "finding": ["Mass", "Mass", "Nodule"],
                             "x": [0, 0, 50], "y": [0, 0, 50], "w": [20, 8, 4], "h": [10, 8, 4]})
    # a/Mass: IoBB 100/200 = 0.5, IoU 100/200 = 0.5; c/Mass: c has no Mass box -> a false positive at every T;
    # c/Nodule: exact -> IoBB = IoU = 1
    scored = score_boxes(truth, detected, (0.25, 0.5))
    assert scored["hit_iou_0.25"].tolist() == [True, True] and scored["hit_iou_0.5"].tolist() == [False, True]
    fps = false_positives(truth, detected, (0.25, 0.5)).set_index(["image_id", "finding"])
    assert fps.loc[("c", "Mass"), "has_truth"] == False and fps.loc[("c", "Mass"), "fp_0.25"] == 1  # noqa: E712
    assert fps.loc[("c", "Mass"), "fp_iou_0.25"] == 1 and fps.loc[("a", "Mass"), "fp_iou_0.5"] == 1
    assert fps.loc[("a", "Mass"), "fp_iou_0.25"] == 0 and fps.loc[("c", "Nodule"), "fp_0.5"] == 0
    table = summarise(scored, fps.reset_index(), ["Mass", "Nodule"], (0.25, 0.5)).set_index(["T", "metric"])
    # Mass: one image with a Mass box; false positives: c/Mass at both T, plus a/Mass at T = 0.5 (IoBB 0.5 <= 0.5)
    assert table.loc[(0.25, "afp"), "Mass"] == 1.0 and table.loc[(0.5, "afp"), "Mass"] == 2.0
    assert table.loc[(0.5, "acc_iou"), "Mass"] == 0.0 and table.loc[(0.25, "acc_iou"), "Mass"] == 1.0
    assert table.loc[(0.5, "afp_iou"), "Nodule"] == 0.0
    counts = table.reset_index().set_index("metric")
    assert counts.loc["n_images", "Mass"] == 1 and counts.loc["n_boxes", "Nodule"] == 1
    assert counts.loc["mean_iou", "Mass"] == pytest.approx(0.5)


def test_hit_fraction_ci_resamples_patients_not_boxes():
    """Two patients with 20 boxes each, one all hits and one all misses: a patient resample holds 0, 1 or 2 copies
    of each, so the clustered 95% CI spans 0 to 1; resampling boxes alone would give a narrow CI around 0.5."""
    from xraypipe.boxes import hit_fraction_ci

    hits = np.array([1] * 20 + [0] * 20)
    patients = np.array(["p"] * 20 + ["q"] * 20)
    low, high = hit_fraction_ci(hits, patients, n_boot=400, level=0.95, seed=0)
    assert low == 0.0 and high == 1.0
    low_b, high_b = hit_fraction_ci(hits, None, n_boot=400, level=0.95, seed=0)
    assert 0.25 < low_b < 0.5 < high_b < 0.75
    assert hit_fraction_ci(np.ones(5), np.arange(5), n_boot=100, level=0.95, seed=0) == (1.0, 1.0)
    table = summarise(pd.DataFrame({"image_id": [str(i) for i in range(40)], "finding": "Mass", "patient_id": patients,
                                    "best_iobb": hits * 0.9, "best_iou": hits * 0.8, "hit_0.5": hits.astype(bool),
                                    "hit_iou_0.5": hits.astype(bool)}),
                      pd.DataFrame(columns=["image_id", "finding", "fp_0.5", "fp_iou_0.5"]), ["Mass"], (0.5,),
                      n_boot=400, seed=0).set_index("metric")["Mass"]
    assert (table["acc"], table["acc_ci_low"], table["acc_ci_high"]) == (0.5, 0.0, 1.0)
    unclustered = summarise(pd.DataFrame({"image_id": [str(i) for i in range(40)], "finding": "Mass",
                                          "patient_id": patients, "best_iobb": hits * 0.9, "best_iou": hits * 0.8,
                                          "hit_0.5": hits.astype(bool), "hit_iou_0.5": hits.astype(bool)}),
                            pd.DataFrame(columns=["image_id", "finding", "fp_0.5", "fp_iou_0.5"]), ["Mass"], (0.5,),
                            n_boot=400, seed=0, unit="image").set_index("metric")["Mass"]
    assert unclustered["acc_ci_low"] > 0.25


def test_conditioned_pairs_are_the_classifiers_positive_calls_and_the_oracle_pairs_the_ground_truth():
    from xraypipe.boxes import classifier_positive
    from xraypipe.localization import heatmap_pairs

    gt_pairs = pd.DataFrame({"image_id": ["a", "a", "b"], "cache_row": [0, 0, 1], "finding": ["Mass", "Nodule", "Mass"]})
    images = pd.DataFrame({"image_id": ["a", "b"], "cache_row": [0, 1]})
    predictions = pd.DataFrame({"image_id": ["a", "b", "z"], "prob_Mass": [0.9, 0.2, 0.9], "prob_Nodule": [0.1, 0.8, 0.9],
                                "prob_Effusion": [0.9, 0.9, 0.9]})
    # thresholds: Mass 0.5 -> a called, b missed; Nodule 0.5 -> a missed, b called (no Nodule box in b: an FP);
    # Effusion has no threshold (no validation positives) -> never called; z is not a scoring image
    positives = classifier_positive(predictions, {"Mass": 0.5, "Nodule": 0.5, "Effusion": None},
                                    ["Mass", "Nodule", "Effusion"])
    pairs = heatmap_pairs(gt_pairs, images, positives).set_index(["image_id", "finding"])
    assert sorted(pairs.index) == [("a", "Mass"), ("a", "Nodule"), ("b", "Mass"), ("b", "Nodule")]
    assert pairs["ground_truth_pair"].to_dict() == {("a", "Mass"): True, ("a", "Nodule"): True, ("b", "Mass"): True,
                                                    ("b", "Nodule"): False}
    assert pairs["classifier_positive"].to_dict() == {("a", "Mass"): True, ("a", "Nodule"): False,
                                                      ("b", "Mass"): False, ("b", "Nodule"): True}


def test_conditioned_localizer_counts_a_missed_finding_as_a_miss():
    """Perfect boxes for every ground-truth pair: the oracle-class rows hit everything; the conditioned rows only
    what the classifier called, and pay an AFP for its false call."""
    truth = pd.DataFrame({"image_id": ["a", "b"], "finding": ["Mass", "Mass"], "patient_id": ["p", "q"],
                          "x": [0, 0], "y": [0, 0], "w": [10, 10], "h": [10, 10]})
    perfect = truth.drop(columns="patient_id")
    oracle = perfect
    conditioned = pd.concat([perfect[perfect["image_id"] == "a"],  # b/Mass missed by the classifier
                             pd.DataFrame({"image_id": ["c"], "finding": ["Mass"], "x": [5], "y": [5], "w": [3],
                                           "h": [3]})])  # a false call on image c
    rows = {}
    for name, det in (("oracle", oracle), ("conditioned", conditioned)):
        scored = score_boxes(truth, det, (0.5,))
        rows[name] = summarise(scored, false_positives(truth, det, (0.5,)), ["Mass"], (0.5,)).set_index("metric")["Mass"]
    assert (rows["oracle"]["acc"], rows["oracle"]["afp"]) == (1.0, 0.0)
    assert (rows["conditioned"]["acc"], rows["conditioned"]["afp"]) == (0.5, 0.5)


def test_heatmap_layer_auto_named_and_its_map_size():
    from xraypipe.localization import heatmap_layer, heatmap_resolution

    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=2).eval()
    auto, linear = heatmap_layer(model, "auto")
    finer, none = heatmap_layer(model, "layer3")
    assert auto is model.layer4 and linear is model.fc and finer is model.layer3 and none is None
    image = np.zeros((96, 96), np.uint8)
    assert heatmap_resolution(model, auto, image) == [3, 3] and heatmap_resolution(model, finer, image) == [6, 6]
    maps = heatmaps(model, np.random.default_rng(0).integers(0, 255, (2, 96, 96)).astype(np.uint8), [0, 1],
                    layer="layer3")
    assert maps.shape == (2, 96, 96)
    with pytest.raises(ValueError, match="no such module.*layer4"):
        heatmap_layer(model, "layer9")
    with pytest.raises(ValueError, match="CAM uses the layer before the global pool"):
        heatmap_layer(model, "layer3", "cam")


def test_heatmap_layers_of_a_resampled_input_model_are_the_wrapped_networks():
    from xraypipe.localization import heatmap_layer, heatmap_resolution

    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=1, input_size=64).eval()
    auto, linear = heatmap_layer(model, "auto")
    assert auto is model.net.layer4 and linear is model.net.fc
    assert heatmap_layer(model, "layer3")[0] is model.net.layer3
    # a 128-px cached image is resampled to 64 px first: layer4's map is 2 x 2, and the heatmap comes back at 128 px
    assert heatmap_resolution(model, auto, np.zeros((128, 128), np.uint8)) == [2, 2]
    assert heatmaps(model, np.zeros((1, 128, 128), np.uint8), [0]).shape == (1, 128, 128)


def test_explanation_pairs_take_the_top_scores_and_the_top_scoring_negatives_per_label():
    import pandas as pd

    from xraypipe.localization import explanation_pairs

    index = pd.DataFrame({"image_id": ["a", "b", "c", "d", "e", "t"], "split": ["test"] * 5 + ["train"],
                          "cache_row": [0, 1, 2, 3, 4, 0]})
    predictions = pd.DataFrame({"image_id": ["a", "b", "c", "d", "e"], "patient_id": list("pqrst"),
                                "label_Abnormal": [1, 0, 1, 0, 0], "prob_Abnormal": [0.9, 0.8, 0.3, 0.6, 0.1]})
    pairs = explanation_pairs(predictions, index, ["Abnormal"], {"Abnormal": 0.5}, per_label=2)
    # the two highest scores (a, b), then the highest-scoring negatives not already shown (d, e)
    assert pairs["image_id"].tolist() == ["a", "b", "d", "e"]
    assert pairs["cache_row"].tolist() == [0, 1, 3, 4]
    assert pairs["label"].tolist() == [1, 0, 0, 0] and pairs["called"].tolist() == [1.0, 1.0, 1.0, 0.0]
    unknown = explanation_pairs(predictions, index, ["Abnormal"], {}, per_label=1)
    assert unknown["called"].isna().all() and unknown["image_id"].tolist() == ["a", "b"]
