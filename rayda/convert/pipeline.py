"""The conversion pass: listed samples -> Ray Data map_batches (read, check, remap) -> shards, under an error policy.

With on_error="skip" each task writes the records of the files it skipped next to the shards it feeds
(`_skipped/<batch>.json`), so they come back from every node without a second pass over the images;
the driver gathers them into `skipped.json` and the count into `dataset.json`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import pyarrow as pa
import ray

from rayda.convert.common import ConvertError, Kind
from rayda.data import DatasetError, DatasetInfo, make_row, rows_to_table, write_dataset
from rayda.data.pipeline import data_context

SKIPPED_FILE = "skipped.json"
_SKIP_DIR = "_skipped"
BATCH = 16  # samples per map_batches call

log = logging.getLogger(__name__)


def get_kind(name: str) -> Kind:
    from rayda.convert import cityscapes, folder, gta5, kitti, synscapes, synthia, vkitti

    return {"cityscapes": cityscapes.KIND, "gta5": gta5.KIND, "synthia": synthia.KIND, "synscapes": synscapes.KIND,
            "vkitti1": vkitti.VKITTI1, "vkitti2": vkitti.VKITTI2, "kitti": kitti.KIND, "folder": folder.KIND}[name]


def run(kind: str, samples: list[dict], out: Path, info: DatasetInfo, mapping: dict, options: dict,
        on_error: str, rows_per_shard: int) -> DatasetInfo:
    """Convert the samples into shards at `out` (already empty); returns the written dataset's info."""
    skip_dir = out / _SKIP_DIR if on_error == "skip" else None
    info.source["skipped"] = 0
    try:
        # Ray Data wraps a task's exception in a UserCodeException whose cause does not survive the
        # trip back to the driver; raising the original keeps the ConvertError and its one-line message.
        with data_context(raise_original_map_exception=True):
            rows = ray.data.from_items(samples, override_num_blocks=max(1, min(len(samples) // BATCH, 1024)))
            rows = rows.map_batches(
                _convert_batch, batch_size=BATCH, batch_format="pyarrow",
                fn_kwargs=dict(kind=kind, mapping=mapping, options=options, num_classes=info.classes.num_classes,
                               skip_dir=str(skip_dir) if skip_dir else None),
            )
            info = write_dataset(rows, out, info, rows_per_shard)
    except Exception as e:
        cause = _convert_error(e)
        if cause is not None:  # the first bad file under on_error="raise", unwrapped from Ray's task error
            raise cause from None
        skipped = _gather_skipped(skip_dir, out) if skip_dir else []
        if len(skipped) == len(samples):
            first = skipped[0]
            raise DatasetError(f"all {len(samples)} samples were skipped, e.g. {first['path']}: {first['reason']} "
                               f"(every reason in {out / SKIPPED_FILE})") from None
        raise
    if skip_dir:
        skipped = _gather_skipped(skip_dir, out)
        info.source["skipped"] = len(skipped)
        info.write(out)
        if skipped:
            log.warning("%s: skipped %d of %d samples; reasons in %s", info.name, len(skipped), len(samples),
                        out / SKIPPED_FILE)
    return info


def _convert_batch(batch: pa.Table, kind: str, mapping: dict, options: dict, num_classes: int,
                   skip_dir: str | None) -> pa.Table:
    load = get_kind(kind).load
    rows, skipped = [], []
    for s in batch.to_pylist():
        try:
            image, image_bytes, label, depth = load(s, mapping, options)
        except ConvertError as e:
            if skip_dir is None:
                raise
            skipped.append({"path": e.path, "reason": e.reason})
            continue
        rows.append(make_row(s["id"], image, label, depth, num_classes, image_bytes=image_bytes))
    if skipped:
        # Named by the batch's ids: a retried task rewrites its own file rather than adding a duplicate.
        name = hashlib.sha1("\n".join(batch.column("id").to_pylist()).encode()).hexdigest()
        Path(skip_dir).mkdir(exist_ok=True)
        (Path(skip_dir) / f"{name}.json").write_text(json.dumps(skipped))
    return rows_to_table(rows)


def _gather_skipped(skip_dir: Path, out: Path) -> list[dict]:
    records = {}
    for part in sorted(skip_dir.glob("*.json")) if skip_dir.is_dir() else []:
        records.update((r["path"], r) for r in json.loads(part.read_text()))
    skipped = sorted(records.values(), key=lambda r: r["path"])
    (out / SKIPPED_FILE).write_text(json.dumps(skipped, indent=1))
    shutil.rmtree(skip_dir, ignore_errors=True)
    return skipped


def _convert_error(e: BaseException) -> ConvertError | None:
    """The ConvertError a Ray task raised, without Ray's wrapper (itself a subclass carrying a traceback)."""
    found, seen = None, set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        found = e if isinstance(e, ConvertError) else found
        e = getattr(e, "cause", None) or e.__cause__
    return found
