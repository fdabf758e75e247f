"""KITTI semantics 2015 (data_semantics): training/{image_2,semantic} holds Cityscapes labelIds; testing no labels."""
from __future__ import annotations

from pathlib import Path

from rayda.convert.cityscapes import labelids_space, load_labelids
from rayda.convert.common import Kind, list_files, require_dirs, sample


def samples(root: Path, split: str, options: dict) -> list[dict]:
    if (root / "data_semantics").is_dir():  # the archive's top folder, or the folder inside it
        root = root / "data_semantics"
    labeled = split == "training"
    require_dirs(root, "KITTI semantics", f"{split}/image_2", *([f"{split}/semantic"] if labeled else []))
    return [sample(f"kitti-{p.stem}", p, root / split / "semantic" / p.name if labeled else None)
            for p in list_files(root / split / "image_2", "*.png")]


KIND = Kind(domain="real", splits=("training", "testing"), samples=samples, load=load_labelids,
            label_space=labelids_space)
