"""Class sets, evaluation protocols and palettes (Cityscapes trainIds)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = 255

CITYSCAPES_NAMES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
    "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
    "truck", "bus", "train", "motorcycle", "bicycle",
)
CITYSCAPES_PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70),
    (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)

# Evaluation protocols: which trainIds are scored (DATASETS.md, "Evaluation protocols").
PROTOCOLS: dict[str, tuple[int, ...]] = {
    "19": tuple(range(19)),
    "16": (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18),
    "13": (0, 1, 2, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18),
    # the classes Virtual KITTI and KITTI share (GIO-Ada's 10): road building pole light sign
    # vegetation terrain sky car truck
    "10": (0, 2, 5, 6, 7, 8, 9, 10, 13, 14),
}


@dataclass(frozen=True)
class ClassSet:
    """The label space of a dataset: ids 0..num_classes-1, 255 = ignore."""

    names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    protocol: str = "19"
    ignore_index: int = IGNORE_INDEX

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def to_json(self) -> dict:
        return {
            "names": list(self.names),
            "palette": [list(c) for c in self.palette],
            "protocol": self.protocol,
            "ignore_index": self.ignore_index,
        }

    @classmethod
    def from_json(cls, d: dict) -> "ClassSet":
        return cls(
            names=tuple(d["names"]),
            palette=tuple(tuple(int(v) for v in c) for c in d["palette"]),
            protocol=str(d.get("protocol", "19")),
            ignore_index=int(d.get("ignore_index", IGNORE_INDEX)),
        )

    def colorize(self, label: np.ndarray) -> np.ndarray:
        """uint8 [H, W] ids -> uint8 [H, W, 3] colours; ignore pixels black."""
        lut = np.zeros((256, 3), np.uint8)
        lut[: self.num_classes] = np.asarray(self.palette, np.uint8)
        return lut[label]


CITYSCAPES_19 = ClassSet(CITYSCAPES_NAMES, CITYSCAPES_PALETTE, "19")


def protocol_class_set(protocol: str) -> ClassSet:
    """The classes of a protocol, ids renumbered 0..n-1 in trainId order ("19" equals CITYSCAPES_19)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    ids = PROTOCOLS[protocol]
    return ClassSet(tuple(CITYSCAPES_NAMES[i] for i in ids), tuple(CITYSCAPES_PALETTE[i] for i in ids), protocol)
