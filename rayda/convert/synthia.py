"""SYNTHIA-RAND-CITYSCAPES: 16-bit label PNGs with the class id in R, optional 16-bit depth PNGs."""
from __future__ import annotations

from functools import partial
from pathlib import Path

from rayda.classes import IGNORE_INDEX
from rayda.convert.common import (Kind, check_size, list_files, protocol_space, read_depth_png, read_image,
                                  read_png16, remap_ids, require_dirs, sample)

# raw id -> trainId (DATASETS.md); void, parking-slot, road-work, lanemarking and the classes absent in
# practice (terrain, truck, train) are ignored.
SYNTHIA_TO_TRAIN = {i: IGNORE_INDEX for i in range(23)} | {
    3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 1: 10, 10: 11, 17: 12, 8: 13, 19: 15, 12: 17, 11: 18,
}


def samples(root: Path, split: str, options: dict) -> list[dict]:
    require_dirs(root, "SYNTHIA-RAND-CITYSCAPES", "RGB", "GT/LABELS")
    # Depth ships as Depth/Depth/ in the archive, as Depth/ in some copies; none: a dataset without depth.
    depth = next((root / d for d in ("Depth/Depth", "Depth") if next((root / d).glob("*.png"), None)), None)
    return [sample(f"synthia-{p.stem}", p, root / "GT" / "LABELS" / p.name,
                   depth / p.name if depth else None)
            for p in list_files(root / "RGB", "*.png")]


def load(s: dict, mapping: dict, options: dict):
    image, data = read_image(s["image"])
    raw = read_png16(s["label"], "label", s["image"])[..., 0]  # R: class id (G: instance id)
    check_size(raw, s["label"], "label", image, s["image"])
    depth = None
    if s["depth"] is not None:
        depth = read_depth_png(s["depth"], options["depth_scale"], s["image"])
        check_size(depth, s["depth"], "depth", image, s["image"])
    return image, data, remap_ids(raw, mapping, s["label"]), depth


# depth_scale: raw depth units per metre. Public code disagrees on SYNTHIA's unit; 100 reads it as centimetres.
KIND = Kind(domain="synthetic", splits=("all",), samples=samples, load=load,
            label_space=partial(protocol_space, SYNTHIA_TO_TRAIN), options={"depth_scale": 100.0})
