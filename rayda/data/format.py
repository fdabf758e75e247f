"""The rayda shard format: Parquet shards of encoded samples plus a `dataset.json`."""
from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from rayda.classes import ClassSet

FORMAT_VERSION = 1
INFO_FILE = "dataset.json"
DEPTH_UNIT = "cm"  # depth PNGs hold uint16 centimetres; 0 = unknown
DEPTH_SCALE = 100.0  # PNG value / DEPTH_SCALE = metres

# One row per sample. Images stay encoded until the decode stage of the pipeline.
SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("image", pa.binary(), nullable=False),   # PNG or JPEG, RGB
    pa.field("label", pa.binary()),                   # PNG uint8 class ids, 255 = ignore; null if unlabeled
    pa.field("depth", pa.binary()),                   # PNG uint16 centimetres, 0 = unknown; null if none
    pa.field("height", pa.int32(), nullable=False),
    pa.field("width", pa.int32(), nullable=False),
    pa.field("class_pixels", pa.list_(pa.int64())),   # per-class pixel counts; null if unlabeled
])


class DatasetError(ValueError):
    """A dataset that does not match the format; the message names dataset, shard and row."""


@dataclass
class DatasetInfo:
    """The contents of `dataset.json`."""

    name: str
    domain: str  # "synthetic" | "real"
    classes: ClassSet
    has_labels: bool
    has_depth: bool
    num_rows: int = 0
    shards: list[dict] = field(default_factory=list)  # [{"file": name, "num_rows": n}]
    class_pixels: list[int] | None = None
    depth_unit: str = DEPTH_UNIT
    source: dict = field(default_factory=dict)  # provenance: generator, converter, mapping, parent dataset
    format_version: int = FORMAT_VERSION
    path: Path | None = None  # where it was read from; not stored

    def to_json(self) -> dict:
        d = asdict(self)
        d["classes"] = self.classes.to_json()
        d["label_protocol"] = self.classes.protocol
        d.pop("path")
        return d

    @classmethod
    def from_json(cls, d: dict, path: Path | None = None) -> "DatasetInfo":
        d = dict(d)
        d.pop("label_protocol", None)
        d["classes"] = ClassSet.from_json(d["classes"])
        return cls(**d, path=path)

    def shard_paths(self) -> list[str]:
        return [str(self.path / s["file"]) for s in self.shards]

    def write(self, directory: str | Path) -> None:
        directory = Path(directory)
        tmp = directory / (INFO_FILE + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2))
        tmp.replace(directory / INFO_FILE)  # atomic: never a half-written dataset.json


def read_info(directory: str | Path) -> DatasetInfo:
    """Read and check `dataset.json` against the shards' Parquet footers (no data is read)."""
    directory = Path(directory).expanduser().resolve()
    info_path = directory / INFO_FILE
    if not directory.is_dir():
        raise DatasetError(f"dataset directory not found: {directory}")
    if not info_path.is_file():
        raise DatasetError(f"{directory}: no {INFO_FILE}; not a rayda dataset (make one with `rayda generate` or `rayda convert`)")
    try:
        info = DatasetInfo.from_json(json.loads(info_path.read_text()), directory)
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DatasetError(f"{info_path}: unreadable or incomplete ({type(e).__name__}: {e})") from None
    if info.format_version != FORMAT_VERSION:
        raise DatasetError(f"{info_path}: format_version {info.format_version}, this rayda reads {FORMAT_VERSION}")
    if info.num_rows == 0 or not info.shards:
        raise DatasetError(f"dataset '{info.name}' ({directory}) is empty: 0 rows")
    total = 0
    for shard in info.shards:
        _check_shard(info, directory / shard["file"], shard["num_rows"])
        total += shard["num_rows"]
    if total != info.num_rows:
        raise DatasetError(f"dataset '{info.name}': {INFO_FILE} says {info.num_rows} rows but its shards list {total}")
    return info


def _check_shard(info: DatasetInfo, path: Path, num_rows: int) -> None:
    where = f"dataset '{info.name}', shard {path.name}"
    if not path.is_file():
        raise DatasetError(f"{where}: file missing ({path})")
    try:
        meta = pq.read_metadata(path)
        schema = pq.read_schema(path)
    except Exception as e:  # pyarrow raises several types for truncated/corrupt files
        raise DatasetError(f"{where}: not a readable Parquet file ({e})") from None
    if meta.num_rows != num_rows:
        raise DatasetError(f"{where}: has {meta.num_rows} rows, {INFO_FILE} says {num_rows}")
    if num_rows == 0:
        raise DatasetError(f"{where}: empty shard (0 rows)")
    for expected in SCHEMA:
        if expected.name not in schema.names:
            raise DatasetError(f"{where}: missing column '{expected.name}'")
        actual = schema.field(expected.name).type
        if not actual.equals(expected.type) and not _compatible(actual, expected.type):
            raise DatasetError(f"{where}: column '{expected.name}' has type {actual}, expected {expected.type}")


def _compatible(actual: pa.DataType, expected: pa.DataType) -> bool:
    # Ray and pyarrow may write large_binary/large_string/large_list variants.
    large = {pa.binary(): pa.large_binary(), pa.string(): pa.large_string()}
    if expected in large:
        return actual.equals(large[expected])
    return pa.types.is_list(expected) and pa.types.is_large_list(actual) and actual.value_type.equals(expected.value_type)


# --- encoding of single samples -------------------------------------------------------------

def encode_png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)  # fast; size matters less than speed
    return buf.getvalue()


def encode_jpeg(array: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def encode_depth(depth_m: np.ndarray) -> bytes:
    """float metres -> uint16 centimetre PNG; non-finite or <= 0 -> 0 (unknown), far values clipped."""
    cm = np.where(np.isfinite(depth_m) & (depth_m > 0), depth_m * DEPTH_SCALE, 0)
    return encode_png(np.clip(np.rint(cm), 0, 65535).astype(np.uint16))


def make_row(sample_id: str, image: np.ndarray, label: np.ndarray | None, depth_m: np.ndarray | None,
             num_classes: int, image_format: str = "png", image_bytes: bytes | None = None) -> dict:
    """One row of the shard format from decoded arrays (uint8 RGB, uint8 ids, float metres).

    `image_bytes`: the PNG/JPEG that `image` was decoded from, stored as is (converters keep the
    original files rather than re-encode them)."""
    h, w = image.shape[:2]
    for name, arr in (("label", label), ("depth", depth_m)):
        if arr is not None and arr.shape[:2] != (h, w):
            raise DatasetError(f"sample {sample_id}: {name} is {arr.shape[1]}x{arr.shape[0]}, image is {w}x{h}")
    class_pixels = None
    if label is not None:
        counts = np.bincount(label.ravel(), minlength=256)
        bad = np.flatnonzero(counts[num_classes:255])
        if bad.size:
            raise DatasetError(f"sample {sample_id}: label values {(bad + num_classes).tolist()} outside 0..{num_classes - 1} and 255")
        class_pixels = counts[:num_classes].tolist()
    return {
        "id": sample_id,
        "image": image_bytes or (encode_jpeg(image) if image_format == "jpeg" else encode_png(image)),
        "label": None if label is None else encode_png(label.astype(np.uint8)),
        "depth": None if depth_m is None else encode_depth(depth_m),
        "height": h,
        "width": w,
        "class_pixels": class_pixels,
    }
