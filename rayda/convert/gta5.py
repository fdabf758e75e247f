"""GTA5: images/%05d.png with palettised labels/%05d.png whose palette indices are Cityscapes labelIds."""
from __future__ import annotations

from pathlib import Path

from rayda.convert.cityscapes import labelids_space, load_labelids
from rayda.convert.common import Kind, list_files, require_dirs, sample


def samples(root: Path, split: str, options: dict) -> list[dict]:
    require_dirs(root, "GTA5", "images", "labels")
    return [sample(f"gta5-{p.stem}", p, root / "labels" / p.name) for p in list_files(root / "images", "*.png")]


# One split: most UDA work trains on all images (the official split.mat is not read).
KIND = Kind(domain="synthetic", splits=("all",), samples=samples, load=load_labelids, label_space=labelids_space)
