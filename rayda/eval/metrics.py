"""Confusion matrices, IoU under the 19/16/13-class protocols, and result tables."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from rayda.classes import IGNORE_INDEX


def _to_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _check_range(name: str, values, num_classes: int, ignore_index: int) -> None:
    bad = (values < 0) | (values >= num_classes)
    if bool(bad.any()):
        offending = np.unique(_to_numpy(values[bad]))
        shown = ", ".join(str(v) for v in offending[:10]) + (", ..." if len(offending) > 10 else "")
        raise ValueError(
            f"{name} has values outside [0, {num_classes}) (ignore_index={ignore_index}): {shown}"
        )


def confusion_matrix(pred, target, num_classes: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """int64 [C, C] counts, rows = target class, cols = predicted class.

    pred/target: numpy arrays or torch tensors of any integer dtype and equal shape. Pixels
    whose target is ignore_index are dropped (their prediction is not checked); any other
    value outside [0, C) in either input raises ValueError.
    """
    if tuple(pred.shape) != tuple(target.shape):
        raise ValueError(f"pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    if isinstance(pred, torch.Tensor) or isinstance(target, torch.Tensor):
        device = (target if isinstance(target, torch.Tensor) else pred).device
        # int64 before any arithmetic so uint8 inputs cannot wrap around.
        pred = torch.as_tensor(pred, device=device).reshape(-1).long()
        target = torch.as_tensor(target, device=device).reshape(-1).long()
        bincount = torch.bincount
    else:
        pred = np.asarray(pred).reshape(-1).astype(np.int64)
        target = np.asarray(target).reshape(-1).astype(np.int64)
        bincount = np.bincount
    keep = target != ignore_index
    pred, target = pred[keep], target[keep]
    _check_range("target", target, num_classes, ignore_index)
    _check_range("pred", pred, num_classes, ignore_index)
    counts = bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return _to_numpy(counts).astype(np.int64).reshape(num_classes, num_classes)


def _class_ids(conf: np.ndarray, classes: Sequence[int] | None) -> np.ndarray:
    return np.arange(len(conf)) if classes is None else np.asarray(classes, dtype=np.int64)


def miou(conf, classes: Sequence[int] | None = None) -> tuple[np.ndarray, float]:
    """Per-class IoU (float64 fractions) and their mean.

    IoU_c = TP / (TP + FP + FN); a class with TP + FP + FN == 0 is NaN and left out of the
    mean (the mean is NaN if every class is). With `classes` (e.g. PROTOCOLS["16"] scored
    from a 19-class matrix) only those classes are scored and returned, in that order, and
    target pixels of the other classes count as ignored:
      TP = conf[c, c]
      FN = conf[c, :].sum() - TP        (a prediction of an unscored class is still a miss)
      FP = conf[classes, c].sum() - TP  (only target rows of scored classes)
    """
    conf = np.asarray(conf, dtype=np.float64)
    ids = _class_ids(conf, classes)
    tp = conf[ids, ids]
    fn = conf[ids].sum(axis=1) - tp
    fp = conf[np.ix_(ids, ids)].sum(axis=0) - tp
    denom = tp + fp + fn
    iou = np.divide(tp, denom, out=np.full(len(ids), np.nan), where=denom > 0)
    mean = float(np.nanmean(iou)) if np.isfinite(iou).any() else math.nan
    return iou, mean


def _json_float(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def summarize(conf, class_names: Sequence[str], classes: Sequence[int] | None = None) -> dict:
    """JSON-safe summary of a confusion matrix; NaN becomes None, IoUs are fractions.

    `classes` restricts scoring as in miou(); pixel accuracy and the pixel count then cover
    only target pixels of those classes.
    """
    conf = np.asarray(conf, dtype=np.int64)
    if len(class_names) != len(conf):
        raise ValueError(f"{len(class_names)} class names for a {len(conf)}-class confusion matrix")
    ids = _class_ids(conf, classes)
    iou, mean = miou(conf, ids)
    num_pixels = int(conf[ids].sum())
    correct = int(conf[ids, ids].sum())
    return {
        "miou": _json_float(mean),
        "per_class": {class_names[c]: _json_float(v) for c, v in zip(ids, iou)},
        "pixel_accuracy": correct / num_pixels if num_pixels else None,
        "num_pixels": num_pixels,
    }


class SegMetrics:
    """Accumulates a confusion matrix over batches; summarize() gives the JSON summary."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        self.ignore_index = ignore_index
        self.conf = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred, target) -> None:
        self.conf += confusion_matrix(pred, target, len(self.conf), self.ignore_index)

    def summarize(self, class_names: Sequence[str], classes: Sequence[int] | None = None) -> dict:
        return summarize(self.conf, class_names, classes)


def format_table(summaries: dict[str, dict], class_names: Sequence[str]) -> str:
    """Markdown table: one row per run, mIoU then one column per class, in percent."""

    def pct(v: float | None) -> str:
        return "–" if v is None else f"{100 * v:.1f}"

    header = ["run", "mIoU", *class_names]
    lines = [
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
    ]
    for run, s in summaries.items():
        cells = [run, pct(s.get("miou"))] + [pct(s["per_class"].get(n)) for n in class_names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
