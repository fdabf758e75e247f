"""Training streams that are a pure function of (seed, worker, position), so that a resumed or restarted
run reads exactly what the uninterrupted run would have read from the same step on.

Per epoch the shards are shuffled (seed, epoch) and cut into slots of whole shards holding at least
`mix_rows` rows; the slots of all epochs, in order, are dealt round-robin to the workers. One Ray Data task
per slot reads its shards, permutes their rows (seed, epoch, slot) and decodes and augments every row with
draws from (seed, epoch, row id). Row counts come from dataset.json, so a worker seeks to any sample without
reading what comes before it: its first slot drops the leading rows before decoding them.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from rayda.data.format import DatasetError, DatasetInfo
from rayda.data.pipeline import Augment, _light, decode_batch

CHUNK_ROWS = 32  # rows per output block of a slot's task


@dataclass(frozen=True)
class Slot:
    epoch: int
    index: int                # position among the epoch's slots
    shards: tuple[int, ...]   # indices into DatasetInfo.shards
    rows: int


def epoch_slots(info: DatasetInfo, seed: int, epoch: int, mix_rows: int) -> list[Slot]:
    """One epoch's shards, shuffled and cut into slots of at least `mix_rows` rows (one shard at least)."""
    order = np.random.default_rng([seed, epoch]).permutation(len(info.shards))
    slots, current, rows = [], [], 0
    for i in order.tolist():
        current.append(i)
        rows += info.shards[i]["num_rows"]
        if rows >= mix_rows:
            slots.append(Slot(epoch, len(slots), tuple(current), rows))
            current, rows = [], 0
    if current:
        slots.append(Slot(epoch, len(slots), tuple(current), rows))
    return slots


def worker_slots(info: DatasetInfo, seed: int, rank: int, world: int, mix_rows: int) -> Iterator[Slot]:
    """Worker `rank`'s endless slot sequence: every `world`-th slot of all epochs' slots, in order."""
    dealt = itertools.chain.from_iterable(epoch_slots(info, seed, e, mix_rows) for e in itertools.count())
    return itertools.islice(dealt, rank, None, world)


def train_stream(info: DatasetInfo, augment: Augment, seed: int, rows: int, *, start: int = 0, rank: int = 0,
                 world: int = 1, mix_rows: int = 256, with_depth: bool = False,
                 keep_id: bool = False) -> ray.data.Dataset:
    """Samples [start, start + rows) of worker `rank`'s stream, in order: image uint8 [3,h,w], label uint8
    [h,w] (and depth float32 [1,h,w] metres, the row's id), decoded and augmented."""
    if not info.has_labels:
        raise DatasetError(f"dataset '{info.name}' has no labels; a labeled training set is needed here")
    if with_depth and not info.has_depth:
        raise DatasetError(f"dataset '{info.name}' has no depth (dataset.json: has_depth false)")
    columns = ["id", "image", "label"] + (["depth"] if with_depth else [])
    return slot_stream(slot_plan(info, seed, rows, start, rank, world, mix_rows), _read_slot,
                       dict(info=_light(info), augment=augment, seed=seed, columns=columns, with_depth=with_depth,
                            keep_id=keep_id))


def slot_plan(info: DatasetInfo, seed: int, rows: int, start: int, rank: int, world: int,
              mix_rows: int) -> list[dict]:
    """The slots of worker `rank` that hold its samples [start, start + rows), the first one told how many
    of its (permuted) rows come before `start`."""
    paths, plan, seen = info.shard_paths(), [], 0
    for slot in worker_slots(info, seed, rank, world, mix_rows):
        if seen + slot.rows > start:
            plan.append({"epoch": slot.epoch, "index": slot.index, "skip": max(0, start - seen),
                         "shards": [paths[i] for i in slot.shards]})
        seen += slot.rows
        if seen >= start + rows:
            break
    return plan


def slot_stream(plan: list[dict], read_slot, fn_kwargs: dict) -> ray.data.Dataset:
    """One Ray Data task per slot of `plan`, its output blocks kept in plan order."""
    ds = ray.data.from_items(plan, override_num_blocks=len(plan)).map_batches(
        read_slot, batch_size=1, batch_format="numpy", fn_kwargs=fn_kwargs)
    ds.context.execution_options.preserve_order = True  # the stream's order is its contract
    ds.context.enable_progress_bars = False
    return ds


def read_shards(paths, columns: list[str], name: str) -> tuple[pa.Table, np.ndarray]:
    """The shards' rows (`columns`) as one table, and each row's shard path."""
    tables, row_paths = [], []
    for path in paths:
        try:
            table = pq.read_table(path, columns=columns)
        except (OSError, pa.ArrowException) as e:
            raise DatasetError(f"dataset '{name}', shard {path}: unreadable Parquet ({e})") from None
        tables.append(table)
        row_paths += [path] * table.num_rows
    return pa.concat_tables(tables), np.asarray(row_paths)


def slot_order(item: dict, seed: int, num_rows: int) -> tuple[int, np.ndarray]:
    """(epoch, the slot's row order from its first row at or after the stream's start)."""
    epoch, index, skip = int(item["epoch"][0]), int(item["index"][0]), int(item["skip"][0])
    return epoch, np.random.default_rng([seed, epoch, index]).permutation(num_rows)[skip:]


def _read_slot(item: dict, info: dict, augment: Augment, seed: int, columns: list[str], with_depth: bool,
               keep_id: bool):
    table, paths = read_shards(item["shards"][0], columns, info["name"])
    epoch, order = slot_order(item, seed, table.num_rows)
    for lo in range(0, len(order), CHUNK_ROWS):
        take = order[lo:lo + CHUNK_ROWS]
        batch = {c: table[c].take(take).to_numpy(zero_copy_only=False) for c in columns}
        batch["path"] = paths[take]
        yield decode_batch(batch, info, augment, keep_id=keep_id, with_depth=with_depth, rng_key=(seed, epoch))
