"""SP-Feat (seed 004): spatial-pyramid class histograms of label maps, per image and over a dataset."""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import ray
import torch

from rayda.classes import ClassSet
from rayda.data import DatasetError, DatasetInfo, read_dataset
from rayda.data.pipeline import IGNORE, decode_image_bytes

DEFAULT_LEVELS = (1, 2, 4)


def feature_dim(num_classes: int, levels: Sequence[int]) -> int:
    return num_classes * sum(l * l for l in levels)


def sp_feat(labels: np.ndarray | Sequence[np.ndarray], num_classes: int, levels: Sequence[int] = DEFAULT_LEVELS,
            ignore_index: int = IGNORE) -> np.ndarray:
    """Label maps [N,H,W] (or a list of [H,W] of any sizes) -> float32 [N, num_classes * sum(l*l)].

    Level by level, the l x l cells in row-major order (cell i spans rows floor(i*H/l) .. floor((i+1)*H/l)),
    each cell's class histogram divided by its count of non-ignored pixels (all zeros if there are none).
    """
    if not levels or any(int(l) < 1 for l in levels):
        raise ValueError(f"levels must be positive integers, got {list(levels)}")
    if not 0 <= ignore_index <= 255 or num_classes > 255:
        raise ValueError("sp_feat takes 8-bit class ids: ignore_index in 0..255 and at most 255 classes")
    # Counts per image at the finest grid L = lcm(levels): its cell bounds floor(j*H/L) include every
    # coarser level's floor(i*H/l), so coarser cells are sums of finest cells. 256 bins per cell hold
    # every raw value, so out-of-range ids show up in the same pass.
    finest = math.lcm(*levels)
    counts = np.zeros((len(labels), finest, finest, 256), np.int64)
    for i, label in enumerate(labels):
        counts[i] = _cell_counts(_as_uint8(np.asarray(label)), finest).reshape(finest, finest, 256)
    present = np.nonzero(counts.sum((0, 1, 2)))[0]
    bad = present[(present >= num_classes) & (present != ignore_index)]
    if bad.size:
        raise ValueError(f"label values {bad.tolist()} outside 0..{num_classes - 1} (ignore = {ignore_index})")
    counts = counts[..., :num_classes].copy()
    if ignore_index < num_classes:
        counts[..., ignore_index] = 0
    n, parts = len(labels), []
    for l in levels:
        m = finest // l
        hist = counts.reshape(n, l, m, l, m, num_classes).sum((2, 4)).reshape(n, l * l, num_classes)
        total = hist.sum(-1, keepdims=True)
        parts.append(np.divide(hist, total, out=np.zeros(hist.shape, np.float64), where=total > 0).reshape(n, l * l * num_classes))
    return np.concatenate(parts, axis=1).astype(np.float32)


def _as_uint8(label: np.ndarray) -> np.ndarray:
    if label.ndim != 2:
        raise ValueError(f"a label map must be 2-D [H, W], got shape {label.shape}")
    if label.dtype == np.uint8:
        return label
    if label.size and (label.min() < 0 or label.max() > 255):
        raise ValueError(f"label values must lie in 0..255, got {label.min()}..{label.max()}")
    return label.astype(np.uint8)


def _cell_counts(label: np.ndarray, finest: int) -> np.ndarray:
    """Pixel count of each (finest-grid cell, raw value): int64 [finest * finest * 256].

    Label maps are piecewise constant, so counting horizontal runs (split at row ends and cell columns)
    is ~3x faster than counting pixels; a noisy map (many runs) takes the per-pixel bincount.
    """
    h, w = label.shape
    cells = _cell_index(h, w, finest).ravel()
    bins = finest * finest * 256
    if label.size == 0:
        return np.zeros(bins, np.int64)
    flat = label.ravel()
    starts = np.empty(flat.size, bool)
    starts[0] = True
    np.not_equal(flat[1:], flat[:-1], out=starts[1:])
    starts.reshape(h, w)[:, (np.arange(finest) * w) // finest] = True
    if np.count_nonzero(starts) > flat.size // 8:
        return np.bincount(cells + flat, minlength=bins)
    starts = np.flatnonzero(starts)
    lengths = np.diff(starts, append=flat.size)
    counts = np.bincount(cells[starts] + flat[starts], weights=lengths, minlength=bins)
    return counts.astype(np.int64)


@functools.lru_cache(maxsize=16)
def _cell_index(h: int, w: int, finest: int) -> np.ndarray:
    """256 x (finest-grid cell of each pixel), uint16 while it fits: the bincount's base index."""
    rows = np.searchsorted((np.arange(1, finest) * h) // finest, np.arange(h), side="right")
    cols = np.searchsorted((np.arange(1, finest) * w) // finest, np.arange(w), side="right")
    dtype = np.uint16 if finest * finest * 256 <= 2**16 else np.int32
    return ((rows[:, None] * finest + cols[None, :]) * 256).astype(dtype)


def shared_classes(a: ClassSet, b: ClassSet) -> list[str]:
    """Class names both label spaces have, in `a`'s order; SP-Feat compares only these."""
    shared = [n for n in a.names if n in set(b.names)]
    if not shared:
        raise DatasetError(f"the class sets share no class: {list(a.names)} vs {list(b.names)}")
    return shared


def to_shared_ids(classes: ClassSet, shared: list[str]) -> np.ndarray | None:
    """Lookup table raw id -> index in `shared` (255 for classes outside it); None when it is the identity."""
    if list(classes.names) == shared:
        return None
    lut = np.full(256, IGNORE, np.uint8)
    for i, name in enumerate(classes.names):
        if name in shared:
            lut[i] = shared.index(name)
    return lut


def _feature_table(ids, labels: list[np.ndarray], num_classes: int, levels, lut) -> pa.Table:
    if lut is not None:
        labels = [lut[label] for label in labels]
    feats = sp_feat(labels, num_classes, levels)
    flat = pa.array(feats.reshape(-1), pa.float32())
    return pa.table({"id": pa.array([str(i) for i in ids], pa.string()),
                     "feat": pa.FixedSizeListArray.from_arrays(flat, feats.shape[1])})


def _label_features(batch: dict, name: str, num_classes: int, levels, lut) -> pa.Table:
    labels = []
    for i, (sample_id, data) in enumerate(zip(batch["id"], batch["label"])):
        where = f"dataset '{name}', shard {Path(batch['path'][i]).name}, id {sample_id}"
        if data is None:
            raise DatasetError(f"{where}: label is null; pass --real-labels-from CHECKPOINT to use predictions")
        try:
            labels.append(decode_image_bytes(data, mode=None)[0].numpy())
        except Exception as e:
            raise DatasetError(f"{where}: label bytes do not decode ({e})") from None
    try:
        return _feature_table(batch["id"], labels, num_classes, levels, lut)
    except ValueError as e:
        raise DatasetError(f"dataset '{name}', shard {Path(batch['path'][0]).name}: {e}") from None


class PredictedFeatures:
    """Actor: a segmenter's predictions on unlabeled images -> SP-Feat (labels from a checkpoint)."""

    def __init__(self, checkpoint: str, use_gpu: bool, num_classes: int, levels, lut):
        from rayda.train.checkpoint import load_segmenter

        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.net, _ = load_segmenter(checkpoint, self.device)
        self.num_classes, self.levels, self.lut = num_classes, levels, lut

    def __call__(self, batch: dict) -> pa.Table:
        from rayda.eval.evaluate import predict

        labels = [predict(self.net, image[None], self.device)[0] for image in batch["image"]]
        return _feature_table(batch["id"], labels, self.num_classes, self.levels, self.lut)


def feature_dataset(info: DatasetInfo, shared: list[str], levels=DEFAULT_LEVELS, labels_from: str | None = None,
                    use_gpu: bool = False, num_actors: int = 1) -> ray.data.Dataset:
    """Rows {id, feat float32[D]} for every image: from its label, or from `labels_from`'s predictions."""
    lut = to_shared_ids(info.classes, shared)
    if labels_from is None:
        if not info.has_labels:
            raise DatasetError(f"dataset '{info.name}' has no labels; pass --real-labels-from CHECKPOINT "
                               "to pair it by a segmenter's predictions")
        return read_dataset(info, columns=["id", "label"]).map_batches(
            _label_features, batch_format="numpy", batch_size=None,  # a shard per task, fused with its read
            fn_kwargs=dict(name=info.name, num_classes=len(shared), levels=tuple(levels), lut=lut))
    from rayda.data import eval_dataset
    from rayda.train.checkpoint import CheckpointError, read_meta

    predicted = ClassSet.from_json(read_meta(labels_from)["classes"])
    if predicted != info.classes:
        raise CheckpointError(f"checkpoint {labels_from} predicts {list(predicted.names)}; "
                              f"dataset '{info.name}' declares {list(info.classes.names)}")
    return eval_dataset(info, with_labels=False).map_batches(
        PredictedFeatures, batch_size=8, batch_format="numpy", num_gpus=1 if use_gpu else 0,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=num_actors),
        fn_constructor_kwargs=dict(checkpoint=str(Path(labels_from).resolve()), use_gpu=use_gpu,
                                   num_classes=len(shared), levels=tuple(levels), lut=lut))
