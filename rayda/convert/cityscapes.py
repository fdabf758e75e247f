"""Cityscapes: leftImg8bit images and gtFine labelIds -> trainIds; the test split has no public labels."""
from __future__ import annotations

from functools import partial
from pathlib import Path

from rayda.classes import IGNORE_INDEX
from rayda.convert.common import (Kind, check_size, list_files, protocol_space, read_ids, read_image, remap_ids,
                                  require_dirs, sample)

# labelId -> trainId (DATASETS.md). Every other id 0..33, and -1 (255 as uint8), is ignored; ids
# outside this table are unknown and reported.
LABELIDS_TO_TRAIN = {i: IGNORE_INDEX for i in (*range(34), 255)} | {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13,
    27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
SUFFIX = "_leftImg8bit.png"


def samples(root: Path, split: str, options: dict) -> list[dict]:
    require_dirs(root, "Cityscapes", "leftImg8bit")
    labeled = split != "test"  # gtFine/test holds placeholders, not labels
    if labeled:
        require_dirs(root, "Cityscapes", f"gtFine/{split}")
    out = []
    for p in list_files(root / "leftImg8bit" / split, f"*/*{SUFFIX}"):
        stem = p.name[: -len(SUFFIX)]
        label = root / "gtFine" / split / p.parent.name / f"{stem}_gtFine_labelIds.png" if labeled else None
        out.append(sample(f"cityscapes-{stem}", p, label))
    return out


def load_labelids(s: dict, mapping: dict, options: dict):
    """An image and, if listed, its 8-bit label of raw ids (Cityscapes labelIds and the kinds that reuse them)."""
    image, data = read_image(s["image"])
    label = None
    if s["label"] is not None:
        raw = read_ids(s["label"], s["image"])
        check_size(raw, s["label"], "label", image, s["image"])
        label = remap_ids(raw, mapping, s["label"])
    return image, data, label, None


labelids_space = partial(protocol_space, LABELIDS_TO_TRAIN)
KIND = Kind(domain="real", splits=("train", "val", "test"), samples=samples, load=load_labelids,
            label_space=labelids_space)
