"""A user's folder: images/, optional labels/ and depth/ (same relative names, .png), and a YAML class map.

The class map (--classes FILE.yaml) says what a label value or colour means:

    classes:            # optional; id = position. Without it: the Cityscapes classes of --protocol
      - {name: clear, color: [0, 0, 0]}
      - {name: cirrus, color: [255, 255, 255]}
    labels:             # raw value (8-bit single-channel labels) or "r,g,b" (RGB labels) -> class name | ignore
      0: clear
      255: cirrus
"""
from __future__ import annotations

from pathlib import Path

import yaml

from rayda.classes import CITYSCAPES_NAMES, IGNORE_INDEX, ClassSet
from rayda.convert.common import (ConvertError, Kind, check_size, protocol_space, read_depth_png, read_ids, read_image,
                                  read_rgb_label, remap_colors, remap_ids, require_dirs, sample)


def samples(root: Path, split: str, options: dict) -> list[dict]:
    if options["domain"] not in ("synthetic", "real"):
        raise ValueError(f"--domain must be synthetic or real, got {options['domain']!r}")
    require_dirs(root, "folder", "images")
    labels, depth = root / "labels", root / "depth"
    if labels.is_dir() and options["classes"] is None:
        raise ValueError(f"{labels} exists: pass --classes FILE.yaml saying what its values or colours mean")
    # Every file is a sample (hidden ones aside): one that is not an image is reported, not passed over.
    files = sorted(p for p in (root / "images").rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise ConvertError(root / "images", "no images")
    out = []
    for p in files:
        rel = p.relative_to(root / "images").with_suffix(".png")
        out.append(sample(rel.with_suffix("").as_posix(), p, labels / rel if labels.is_dir() else None,
                          depth / rel if depth.is_dir() else None))
    return out


def load(s: dict, mapping: dict, options: dict):
    image, data = read_image(s["image"])
    label = depth = None
    if s["label"] is not None:
        colors = isinstance(next(iter(mapping)), tuple)
        raw = read_rgb_label(s["label"], s["image"]) if colors else read_ids(s["label"], s["image"])
        check_size(raw, s["label"], "label", image, s["image"])
        label = (remap_colors(raw, mapping, s["label"], options["classes"]) if colors
                 else remap_ids(raw, mapping, s["label"]))
    if s["depth"] is not None:
        depth = read_depth_png(s["depth"], options["depth_scale"], s["image"])
        check_size(depth, s["depth"], "depth", image, s["image"])
    return image, data, label, depth


def class_map(protocol: str | None, options: dict) -> tuple[ClassSet, dict]:
    """The class set and raw value/colour -> id of a --classes file (none: the protocol's classes, no labels)."""
    path = options["classes"]
    if path is None:
        return protocol_space({}, protocol, options)
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConvertError(path, f"unreadable class map ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("labels"), dict) or not doc["labels"]:
        raise ConvertError(path, "expected a mapping with 'labels' (value or 'r,g,b' -> class name), optional 'classes'")
    if set(doc) - {"classes", "labels"}:
        raise ConvertError(path, f"unknown keys {sorted(set(doc) - {'classes', 'labels'})} (known: classes, labels)")
    if "classes" in doc:
        if protocol is not None:
            raise ValueError(f"--protocol {protocol} does not apply: {path} defines its own classes")
        classes = _classes(doc["classes"], path)
        ids = {name: i for i, name in enumerate(classes.names)}
    else:
        classes, by_train = protocol_space({name: i for i, name in enumerate(CITYSCAPES_NAMES)}, protocol, options)
        ids = by_train  # class name -> id in the protocol (255 for names outside it)
    mapping = {}
    for raw, name in doc["labels"].items():
        if name != "ignore" and name not in ids:
            raise ConvertError(path, f"labels: {raw!r} -> {name!r} is not a class ({', '.join(ids)}; or ignore)")
        mapping[_raw_key(raw, path)] = IGNORE_INDEX if name == "ignore" else ids[name]
    if len({type(k) for k in mapping}) > 1:
        raise ConvertError(path, "labels: mixes values and 'r,g,b' colours; a dataset's labels use one encoding")
    return classes, mapping


def _classes(entries, path: str) -> ClassSet:
    ok = isinstance(entries, list) and entries and all(
        isinstance(e, dict) and set(e) == {"name", "color"} and isinstance(e["name"], str) and _is_color(e["color"])
        for e in entries)
    if not ok:
        raise ConvertError(path, "classes: expected a list of {name: str, color: [r, g, b]}")
    if len(entries) > IGNORE_INDEX:
        raise ConvertError(path, f"classes: {len(entries)} classes; at most {IGNORE_INDEX} (255 is ignore)")
    return ClassSet(tuple(e["name"] for e in entries), tuple(tuple(e["color"]) for e in entries), protocol="custom")


def _raw_key(raw, path: str):
    if isinstance(raw, int) and 0 <= raw <= 255:
        return raw
    try:
        color = [int(v) for v in str(raw).split(",")]
    except ValueError:
        color = None
    if color is None or not _is_color(color):
        raise ConvertError(path, f"labels: key {raw!r} is neither a value 0..255 nor an 'r,g,b' colour")
    return tuple(color)


def _is_color(c) -> bool:
    return isinstance(c, list) and len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c)


KIND = Kind(domain="real", splits=("all",), samples=samples, load=load, label_space=class_map,
            options={"classes": None, "domain": "real", "depth_scale": 100.0})
