"""Virtual KITTI 1.3.1 and 2.0.3: RGB-coded semantic labels decoded through their colour encodings, depth in cm."""
from __future__ import annotations

from functools import lru_cache, partial
from pathlib import Path

from rayda.classes import IGNORE_INDEX
from rayda.convert.common import (ConvertError, Kind, check_size, list_files, protocol_space, read_depth_png,
                                  read_image, read_rgb_label, remap_colors, require_dirs, sample)

# Category -> trainId. Vans are cars in Cityscapes; guard rails are ignored there (labelId 14), so here
# too: the classes left are the 10 that KITTI shares (protocol "10").
VKITTI_TO_TRAIN = {
    "Road": 0, "Building": 2, "Pole": 5, "TrafficLight": 6, "TrafficSign": 7, "Tree": 8, "Vegetation": 8,
    "Terrain": 9, "Sky": 10, "Car": 13, "Van": 13, "Truck": 14,
    "GuardRail": IGNORE_INDEX, "Misc": IGNORE_INDEX, "Undefined": IGNORE_INDEX,
}
# Virtual KITTI 2's class colours (colors.txt of the textgt archive), used when a scene has no colors.txt.
VKITTI2_COLORS = (
    ("Terrain", (210, 0, 200)), ("Sky", (90, 200, 255)), ("Tree", (0, 199, 0)), ("Vegetation", (90, 240, 0)),
    ("Building", (140, 140, 140)), ("Road", (100, 60, 100)), ("GuardRail", (250, 100, 255)),
    ("TrafficSign", (255, 255, 0)), ("TrafficLight", (200, 200, 0)), ("Pole", (255, 130, 0)),
    ("Misc", (80, 80, 80)), ("Truck", (160, 60, 60)), ("Car", (255, 127, 80)), ("Van", (0, 139, 139)),
    ("Undefined", (0, 0, 0)),
)
DEPTH_PER_METRE = 100.0  # uint16 centimetres
V1 = "vkitti_1.3.1_"
VARIATIONS = ("15-deg-left", "15-deg-right", "30-deg-left", "30-deg-right", "clone", "fog", "morning", "overcast",
              "rain", "sunset")


def samples_v1(root: Path, split: str, options: dict) -> list[dict]:
    require_dirs(root, "Virtual KITTI 1.3.1", V1 + "rgb", V1 + "scenegt")
    rgb, gt, depth = root / (V1 + "rgb"), root / (V1 + "scenegt"), root / (V1 + "depthgt")
    out = []
    for p in list_files(rgb, f"*/{'*' if split == 'all' else split}/*.png"):
        world, variation, rel = p.parent.parent.name, p.parent.name, p.relative_to(rgb)
        out.append(sample(f"vkitti1-{world}-{variation}-{p.stem}", p, gt / rel, depth / rel if depth.is_dir() else None,
                          meta=gt / f"{world}_{variation}_scenegt_rgb_encoding.txt"))
    return out


def samples_v2(root: Path, split: str, options: dict) -> list[dict]:
    if not any(root.glob("Scene*/*/frames")):
        raise ConvertError(root, "not a Virtual KITTI 2 root: no Scene*/<variation>/frames/")
    has_depth = any(root.glob("Scene*/*/frames/depth"))
    out = []
    for p in list_files(root, f"Scene*/{'*' if split == 'all' else split}/frames/rgb/Camera_*/rgb_*.jpg"):
        camera, frames, n = p.parent.name, p.parents[2], p.stem[len("rgb_"):]
        colors = frames.parent / "colors.txt"
        out.append(sample(f"vkitti2-{frames.parent.parent.name}-{frames.parent.name}-{camera}-{n}", p,
                          frames / "classSegmentation" / camera / f"classgt_{n}.png",
                          frames / "depth" / camera / f"depth_{n}.png" if has_depth else None,
                          meta=colors if colors.is_file() else None))
    return out


def load(s: dict, mapping: dict, options: dict):
    encoding = read_encoding(s["meta"]) if s["meta"] else VKITTI2_COLORS
    colors = {}
    for category, color in encoding:
        if category not in mapping:
            raise ConvertError(s["meta"], f"unknown category {category!r} (known: {', '.join(mapping)})")
        colors[color] = mapping[category]
    image, data = read_image(s["image"])
    rgb = read_rgb_label(s["label"], s["image"])
    check_size(rgb, s["label"], "label", image, s["image"])
    label = remap_colors(rgb, colors, s["label"], s["meta"] or "the Virtual KITTI 2 colour table")
    depth = None
    if s["depth"] is not None:
        depth = read_depth_png(s["depth"], DEPTH_PER_METRE, s["image"])
        check_size(depth, s["depth"], "depth", image, s["image"])
    return image, data, label, depth


@lru_cache(maxsize=256)  # one file per scene, read once per worker
def read_encoding(path: str) -> tuple[tuple[str, tuple[int, int, int]], ...]:
    """(category, colour) per line of `Category r g b` text; instance entries such as `Car:3` fold into `Car`."""
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        raise ConvertError(path, "colour encoding file missing (it decodes this scene's labels)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConvertError(path, f"unreadable colour encoding ({e})") from None
    if not lines or lines[0].split()[:1] != ["Category"]:
        raise ConvertError(path, "expected the header line 'Category r g b'")
    entries = []
    for n, line in enumerate(lines[1:], start=2):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 4 or not all(v.isdigit() and int(v) < 256 for v in parts[1:]):
            raise ConvertError(path, f"line {n}: expected 'Category r g b', got {line.strip()!r}")
        entries.append((parts[0].split(":")[0], tuple(int(v) for v in parts[1:])))
    return tuple(entries)


space = partial(protocol_space, VKITTI_TO_TRAIN)
VKITTI1 = Kind(domain="synthetic", splits=("all", *VARIATIONS), samples=samples_v1, load=load, label_space=space)
VKITTI2 = Kind(domain="synthetic", splits=("all", *VARIATIONS), samples=samples_v2, load=load, label_space=space)
