"""Synscapes: img/rgb (1440x720) or img/rgb-2k (2048x1024), img/class labelIds, img/depth EXR in metres."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from rayda.convert.cityscapes import labelids_space
from rayda.convert.common import (ConvertError, Kind, check_size, list_files, read_ids, read_image, remap_ids,
                                  require_dirs, sample)

IMAGE_DIRS = ("rgb", "rgb-2k")


def samples(root: Path, split: str, options: dict) -> list[dict]:
    if options["rgb"] not in IMAGE_DIRS:
        raise ValueError(f"--rgb must be one of {IMAGE_DIRS}, got {options['rgb']!r}")
    require_dirs(root, "Synscapes", f"img/{options['rgb']}", "img/class")
    depth = root / "img" / "depth"
    if depth.is_dir():
        require_openexr()
    images = sorted(list_files(root / "img" / options["rgb"], "*.png"), key=lambda p: (len(p.stem), p.stem))  # 1..25000
    return [sample(f"synscapes-{p.stem}", p, root / "img" / "class" / p.name,
                   depth / f"{p.stem}.exr" if depth.is_dir() else None) for p in images]


def load(s: dict, mapping: dict, options: dict):
    image, data = read_image(s["image"])
    raw = read_ids(s["label"], s["image"])
    depth = None if s["depth"] is None else read_exr_depth(s["depth"], s["image"])
    if options["rgb"] == "rgb-2k":  # class and depth exist at the native 1440x720 only: upscale them, nearest
        raw = _resize_to(raw, s["label"], "label", image, s["image"])
        depth = None if depth is None else _resize_to(depth, s["depth"], "depth", image, s["image"])
    check_size(raw, s["label"], "label", image, s["image"])
    if depth is not None:
        check_size(depth, s["depth"], "depth", image, s["image"])
    return image, data, remap_ids(raw, mapping, s["label"]), depth


def _resize_to(arr: np.ndarray, path: str, what: str, image: np.ndarray, image_path: str) -> np.ndarray:
    (h, w), (ih, iw) = arr.shape, image.shape[:2]
    if h * iw != w * ih:  # only a pure rescale; anything else is a mismatch
        check_size(arr, path, what, image, image_path)
    return np.asarray(Image.fromarray(arr).resize((iw, ih), Image.Resampling.NEAREST))


def require_openexr() -> None:
    try:
        import OpenEXR  # noqa: F401
    except ImportError:
        raise ImportError("Synscapes depth is EXR: install OpenEXR with `pip install 'rayda[exr]'`") from None


def read_exr_depth(path: str, image: str) -> np.ndarray:
    import OpenEXR

    if not Path(path).is_file():
        raise ConvertError(path, f"depth missing for image {image}")
    try:
        with OpenEXR.File(path, separate_channels=True) as f:
            channels = f.channels()
            names, z = sorted(channels), np.array(channels["Z"].pixels, np.float32) if "Z" in channels else None
    except Exception:  # OpenEXR raises RuntimeError and others for corrupt files
        raise ConvertError(path, "unreadable depth (corrupt or not an EXR file)") from None
    if z is None:
        raise ConvertError(path, f"EXR has channels {names}; expected planar depth in 'Z'")
    return z


KIND = Kind(domain="synthetic", splits=("all",), samples=samples, load=load, label_space=labelids_space,
            options={"rgb": "rgb"})
