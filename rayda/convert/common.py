"""What every converter shares: the kind description, the per-file error, readers and label remapping."""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.io import ImageReadMode, decode_png

from rayda.classes import IGNORE_INDEX, PROTOCOLS, ClassSet, protocol_class_set
from rayda.data.format import DatasetError, encode_png


class ConvertError(DatasetError):
    """One input that cannot be converted: the file's path and why, on one line."""

    def __init__(self, path, reason: str):
        super().__init__(str(path), reason)  # both in args, so the error pickles back from a Ray task
        self.path, self.reason = str(path), reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class Kind:
    """A dataset kind: how its samples are listed (on the driver) and read (in Ray Data tasks)."""

    domain: str                   # "synthetic" | "real"
    splits: tuple[str, ...]       # the first is the default
    samples: Callable             # (root, split, options) -> [sample()]; ConvertError for a wrong root or an empty tree
    load: Callable                # (sample, mapping, options) -> (image HxWx3 uint8, its bytes, ids | None, metres | None)
    label_space: Callable         # (protocol | None, options) -> (ClassSet, raw label value/colour/category -> id)
    options: dict = field(default_factory=dict)  # kind-specific options and their defaults


def sample(sample_id: str, image: Path, label: Path | None = None, depth: Path | None = None,
           meta: Path | None = None) -> dict:
    """One listed sample: its id and file paths (meta: a per-scene file such as a colour encoding)."""
    def text(p):
        return None if p is None else str(p)

    return {"id": sample_id, "image": str(image), "label": text(label), "depth": text(depth), "meta": text(meta)}


# --- listing (driver) ---------------------------------------------------------------------------

def require_dirs(root: Path, title: str, *names: str) -> None:
    missing = [n + "/" for n in names if not (root / n).is_dir()]
    if missing:
        raise ConvertError(root, f"not a {title} root: no {', '.join(missing)}")


def list_files(directory: Path, pattern: str) -> list[Path]:
    files = sorted(p for p in directory.glob(pattern) if p.is_file())
    if not files:
        raise ConvertError(directory, f"no images matching {pattern}")
    return files


def protocol_space(raw_to_train: dict, protocol: str | None, options: dict) -> tuple[ClassSet, dict]:
    """The protocol's class set, and each raw value -> its id there (255 for classes outside the protocol)."""
    protocol = protocol or "19"
    classes = protocol_class_set(protocol)
    index = {train_id: i for i, train_id in enumerate(PROTOCOLS[protocol])}
    return classes, {raw: index.get(t, IGNORE_INDEX) for raw, t in raw_to_train.items()}


# --- reading (Ray tasks) ------------------------------------------------------------------------

def read_bytes(path: str, what: str, image: str | None = None) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ConvertError(path, f"{what} missing" + (f" for image {image}" if image else "")) from None
    except OSError as e:
        raise ConvertError(path, f"unreadable {what} ({e.strerror or e})") from None


def decode(data: bytes, path: str, what: str) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
        img.load()  # decode fully now: truncated files fail here, not in training
    except UnidentifiedImageError:
        raise ConvertError(path, f"unreadable {what} (not an image file)") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ConvertError(path, f"unreadable {what} (corrupt: {e})") from None
    return img


def open_image(path: str, what: str, image: str | None = None) -> Image.Image:
    return decode(read_bytes(path, what, image), path, what)


def read_image(path: str) -> tuple[np.ndarray, bytes]:
    """RGB pixels and the bytes to store: the file itself when it is an RGB PNG/JPEG, else a PNG of it."""
    data = read_bytes(path, "image")
    img = decode(data, path, "image")
    rgb = np.asarray(img.convert("RGB"))
    return rgb, data if img.format in ("PNG", "JPEG") and img.mode == "RGB" else encode_png(rgb)


def read_ids(path: str, image: str) -> np.ndarray:
    """An 8-bit label of raw ids: single-channel or palettised (the palette indices are the ids)."""
    img = open_image(path, "label", image)
    if img.mode not in ("L", "P"):
        raise ConvertError(path, f"label has mode {img.mode}; expected 8-bit ids (single-channel or palettised PNG)")
    return np.asarray(img)


def read_rgb_label(path: str, image: str) -> np.ndarray:
    img = open_image(path, "label", image)
    if img.mode != "RGB":
        raise ConvertError(path, f"label has mode {img.mode}; expected an RGB colour-coded PNG")
    return np.asarray(img)


def read_png16(path: str, what: str, image: str) -> np.ndarray:
    """A PNG at its full bit depth, HxWxC, channels in file order. PIL keeps only the high byte of
    16-bit colour PNGs (SYNTHIA's labels); libpng through torchvision reads them whole."""
    data = read_bytes(path, what, image)
    try:
        pixels = decode_png(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.UNCHANGED)
    except RuntimeError:
        raise ConvertError(path, f"unreadable {what} (corrupt or not a PNG)") from None
    return pixels.permute(1, 2, 0).numpy()


def read_depth_png(path: str, per_metre: float, image: str) -> np.ndarray:
    """Metres from a 16-bit depth PNG holding `per_metre` units per metre (100: centimetres); 0 stays unknown."""
    d = read_png16(path, "depth", image)
    if d.dtype != np.uint16:
        raise ConvertError(path, f"depth is a {d.dtype.itemsize * 8}-bit PNG; expected 16-bit")
    if d.shape[2] > 1 and (d != d[..., :1]).any():
        raise ConvertError(path, f"depth has {d.shape[2]} differing channels; expected a single-channel 16-bit PNG")
    return d[..., 0].astype(np.float32) / per_metre


def check_size(arr: np.ndarray, path: str, what: str, image: np.ndarray, image_path: str) -> None:
    if arr.shape[:2] != image.shape[:2]:
        (h, w), (ih, iw) = arr.shape[:2], image.shape[:2]
        raise ConvertError(path, f"{what} is {w}x{h}, image {image_path} is {iw}x{ih}")


# --- remapping ----------------------------------------------------------------------------------

def remap_ids(raw: np.ndarray, mapping: dict[int, int], path: str) -> np.ndarray:
    """Raw label values -> class ids through `mapping`; a value it does not list is an error."""
    lut = np.full(np.iinfo(raw.dtype).max + 1, -1, np.int16)
    lut[list(mapping)] = list(mapping.values())
    ids = lut[raw]
    if (ids < 0).any():
        bad = np.unique(raw[ids < 0])
        raise ConvertError(path, f"unknown label values {bad[:10].tolist()} (known: {_ranges(sorted(mapping))})")
    return ids.astype(np.uint8)


def remap_colors(rgb: np.ndarray, mapping: dict[tuple, int], path: str, source: str) -> np.ndarray:
    """RGB-coded label -> class ids through colour -> id; a colour `source` does not list is an error."""
    packed = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
    values, inverse = np.unique(packed, return_inverse=True)
    colors = [(int(v) >> 16, int(v) >> 8 & 255, int(v) & 255) for v in values]
    unknown = [c for c in colors if c not in mapping]
    if unknown:
        raise ConvertError(path, f"unknown label colours {unknown[:5]} (not in {source})")
    return np.asarray([mapping[c] for c in colors], np.uint8)[inverse].reshape(rgb.shape[:2])


def _ranges(values: list[int]) -> str:
    """[0, 1, 2, 3, 255] -> '0..3, 255'."""
    parts, start = [], values[0]
    for a, b in zip(values, values[1:] + [None]):
        if b != a + 1:
            parts.append(f"{start}..{a}" if a > start else str(a))
            start = b
    return ", ".join(parts)
