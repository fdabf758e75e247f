import math

import numpy as np
import pytest
import torch

from rayda.eval.metrics import SegMetrics, confusion_matrix, format_table, miou, summarize

# Hand-computed 3-class case; (target, pred) pairs: (0,0) (0,1) (1,1) / (2,2) ignored (1,0).
TARGET = np.array([[0, 0, 1], [2, 255, 1]], dtype=np.uint8)
PRED = np.array([[0, 1, 1], [2, 0, 0]], dtype=np.uint8)
CONF = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1]])


def test_confusion_matrix_by_hand():
    conf = confusion_matrix(PRED, TARGET, 3)
    assert conf.dtype == np.int64
    np.testing.assert_array_equal(conf, CONF)


def test_numpy_and_torch_agree():
    expected = confusion_matrix(PRED, TARGET, 3)
    for pred, target in [
        (torch.from_numpy(PRED), torch.from_numpy(TARGET)),
        (torch.from_numpy(PRED).long(), torch.from_numpy(TARGET).long()),
        (PRED.astype(np.int32), torch.from_numpy(TARGET)),
    ]:
        conf = confusion_matrix(pred, target, 3)
        assert isinstance(conf, np.ndarray) and conf.dtype == np.int64
        np.testing.assert_array_equal(conf, expected)


def test_miou_by_hand():
    iou, mean = miou(CONF)
    np.testing.assert_allclose(iou, [1 / 3, 1 / 3, 1.0])
    assert mean == pytest.approx(5 / 9)


def test_absent_class_is_nan_and_excluded_from_mean():
    conf = confusion_matrix(PRED, TARGET, 4)  # class 3 never appears
    iou, mean = miou(conf)
    assert math.isnan(iou[3])
    assert mean == pytest.approx(5 / 9)
    iou, mean = miou(np.zeros((2, 2), np.int64))
    assert np.isnan(iou).all() and math.isnan(mean)


def test_protocol_restriction_by_hand():
    conf = np.array([[5, 1, 2], [3, 4, 1], [1, 2, 6]])
    iou, mean = miou(conf, classes=[0, 2])
    # class 0: TP 5, FN 1+2 (predicting unscored class 1 is still a miss), FP 1 (target row 1 ignored)
    # class 2: TP 6, FN 1+2, FP 2
    np.testing.assert_allclose(iou, [5 / 9, 6 / 11])
    assert mean == pytest.approx((5 / 9 + 6 / 11) / 2)


def test_summarize_is_json_safe():
    conf = confusion_matrix(PRED, TARGET, 4)
    s = summarize(conf, ["a", "b", "c", "d"])
    assert s["per_class"] == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1.0, "d": None})
    assert s["miou"] == pytest.approx(5 / 9)
    assert s["pixel_accuracy"] == pytest.approx(3 / 5)
    assert s["num_pixels"] == 5
    restricted = summarize(np.array([[5, 1, 2], [3, 4, 1], [1, 2, 6]]), ["a", "b", "c"], [0, 2])
    assert list(restricted["per_class"]) == ["a", "c"]
    assert restricted["pixel_accuracy"] == pytest.approx(11 / 17)
    assert restricted["num_pixels"] == 17


def test_seg_metrics_accumulates():
    metrics = SegMetrics(3)
    metrics.update(PRED, TARGET)
    metrics.update(torch.from_numpy(PRED), torch.from_numpy(TARGET))
    np.testing.assert_array_equal(metrics.conf, 2 * CONF)
    assert metrics.summarize(["a", "b", "c"])["miou"] == pytest.approx(5 / 9)


def test_out_of_range_values_are_named():
    with pytest.raises(ValueError, match=r"target.*\b7\b"):
        confusion_matrix(PRED, np.array([[0, 7, 1], [2, 255, 1]]), 3)
    with pytest.raises(ValueError, match=r"pred.*-1"):
        confusion_matrix(torch.tensor([0, -1]), torch.tensor([0, 1]), 3)


def test_shape_mismatch():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        confusion_matrix(PRED, TARGET.reshape(3, 2), 3)


def test_format_table():
    summaries = {
        "source_only": {"miou": 0.4134, "per_class": {"road": 0.9, "sky": None}},
        "oracle": {"miou": 0.7, "per_class": {"road": 0.95}},
    }
    assert format_table(summaries, ["road", "sky"]).splitlines() == [
        "| run | mIoU | road | sky |",
        "|---|---:|---:|---:|",
        "| source_only | 41.3 | 90.0 | – |",
        "| oracle | 70.0 | 95.0 | – |",
    ]
