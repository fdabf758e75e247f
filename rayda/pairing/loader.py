"""The smart batch loader (seed 004): a stream of (synthetic sample, real image) pairs, deterministic and
seekable like `rayda.data.train_stream`.

An epoch is one pass over the real images, cut into the slots of `rayda.data.stream` (shards shuffled per
epoch, slots dealt to the workers, rows permuted per slot). Each real image is paired with one synthetic
image drawn from (seed, epoch, real id): one of its SP-Feat neighbours in proportion to the neighbour's
weight, or uniformly (random pairing, the paper's baseline). A slot's task reads its real rows and fetches
the drawn synthetic rows from the row groups holding them, so a training worker streams one dataset, no
two iterators run in lockstep, and a resumed worker reads exactly what the uninterrupted run read.
"""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from rayda.data import Augment, DatasetError, DatasetInfo, read_dataset
from rayda.data.pipeline import _light, decode_batch
from rayda.data.stream import CHUNK_ROWS, read_shards, slot_order, slot_plan, slot_stream
from rayda.pairing.pair import PAIRS_FILE


@dataclass(frozen=True)
class PairPlan:
    """What the slot tasks need to draw and fetch partners: ids and shards, no image data."""
    synthetic_ids: np.ndarray           # sorted
    synthetic_shard: np.ndarray         # per synthetic id: index into synthetic_paths
    synthetic_paths: list[str]
    real_ids: np.ndarray | None = None  # sorted; None: random pairing
    offsets: np.ndarray | None = None   # real_ids[i]'s neighbours are neighbours[offsets[i]:offsets[i + 1]]
    neighbours: np.ndarray | None = None  # indices into synthetic_ids
    weights: np.ndarray | None = None

    def draw(self, real_ids, seed: int, epoch: int) -> np.ndarray:
        """Index into synthetic_ids of each real image's partner in `epoch`."""
        out = np.empty(len(real_ids), np.int64)
        for i, real_id in enumerate(real_ids):
            rng = np.random.default_rng([seed, epoch, zlib.crc32(str(real_id).encode())])
            if self.real_ids is None:
                out[i] = rng.integers(len(self.synthetic_ids))
                continue
            j = np.searchsorted(self.real_ids, real_id)
            if j == len(self.real_ids) or self.real_ids[j] != real_id:
                raise DatasetError(f"real image {real_id} has no neighbours in the pairs; re-run `rayda pair`")
            lo, hi = self.offsets[j], self.offsets[j + 1]
            w = self.weights[lo:hi]
            out[i] = self.neighbours[lo + rng.choice(hi - lo, p=w / w.sum())]
        return out


def pair_plan(source: DatasetInfo, target: DatasetInfo, pairs: str | Path | None = None) -> PairPlan:
    """The plan for a run: the synthetic ids and their shards, and with `pairs` (a `rayda pair` output)
    each real image's neighbours and weights. Ray Data passes over the id columns only. (An empty dataset
    never gets here: `read_info` refuses it.)"""
    if not source.has_labels:
        raise DatasetError(f"dataset '{source.name}' has no labels; the synthetic side must be labeled")
    paths = source.shard_paths()
    rows = read_dataset(source, columns=["id"]).to_pandas().sort_values("id")
    ids = rows["id"].to_numpy(str)
    shard = rows["path"].map({p: i for i, p in enumerate(paths)}).to_numpy(np.int32)
    if pairs is None:
        return PairPlan(ids, shard, paths)
    table = _pair_table(Path(pairs), source, target)
    synthetic = np.searchsorted(ids, table["synthetic_id"])
    unknown = (synthetic == len(ids)) | (ids[np.minimum(synthetic, len(ids) - 1)] != table["synthetic_id"])
    if unknown.any():
        raise DatasetError(f"{pairs}: synthetic id {table['synthetic_id'][np.argmax(unknown)]} is not in "
                           f"dataset '{source.name}'")
    real_ids, starts = np.unique(table["real_id"], return_index=True)
    if len(real_ids) != target.num_rows:
        raise DatasetError(f"{pairs} pairs {len(real_ids)} real images, dataset '{target.name}' has {target.num_rows}")
    return PairPlan(ids, shard, paths, real_ids, np.append(starts, len(table["real_id"])), synthetic,
                    table["weight"])


def _pair_table(pairs: Path, source: DatasetInfo, target: DatasetInfo) -> dict:
    if not (pairs / PAIRS_FILE).is_file():
        raise DatasetError(f"{pairs}: no {PAIRS_FILE}; make it with `rayda pair`")
    summary = json.loads((pairs / PAIRS_FILE).read_text())
    for side, info in (("synthetic", source), ("real", target)):
        if summary[f"{side}_name"] != info.name or summary[f"num_{side}"] != info.num_rows:
            raise DatasetError(f"{pairs} pairs {side} dataset '{summary[f'{side}_name']}' "
                               f"({summary[f'num_{side}']} rows), but this run's is '{info.name}' ({info.num_rows} rows)")
    table = ray.data.read_parquet(str(pairs / "pairs")).select_columns(["real_id", "synthetic_id", "weight"]) \
        .to_pandas().sort_values(["real_id", "synthetic_id"])  # draws must not depend on the files' order
    return {"real_id": table["real_id"].to_numpy(str), "synthetic_id": table["synthetic_id"].to_numpy(str),
            "weight": table["weight"].to_numpy(np.float64)}


def paired_stream(source: DatasetInfo, target: DatasetInfo, plan: PairPlan | ray.ObjectRef, augment: Augment,
                  seed: int, rows: int, *, start: int = 0, rank: int = 0, world: int = 1, mix_rows: int = 256,
                  with_depth: bool = False, keep_id: bool = False) -> ray.data.Dataset:
    """Pairs [start, start + rows) of worker `rank`'s stream, in order: image, label[, depth] of the
    synthetic side and target_image of the real side, decoded and augmented (uint8), with `keep_id` also
    id (synthetic) and target_id."""
    if with_depth and not source.has_depth:
        raise DatasetError(f"dataset '{source.name}' has no depth (dataset.json: has_depth false)")
    columns = ["id", "image", "label"] + (["depth"] if with_depth else [])
    return slot_stream(slot_plan(target, seed, rows, start, rank, world, mix_rows), _read_paired_slot,
                       dict(plan=plan, source=_light(source), target=_light(target), augment=augment, seed=seed,
                            columns=columns, with_depth=with_depth, keep_id=keep_id))


def _read_paired_slot(item: dict, plan, source: dict, target: dict, augment: Augment, seed: int,
                      columns: list[str], with_depth: bool, keep_id: bool):
    plan = ray.get(plan) if isinstance(plan, ray.ObjectRef) else plan
    real, real_paths = read_shards(item["shards"][0], ["id", "image"], target["name"])
    epoch, order = slot_order(item, seed, real.num_rows)
    real_ids = real["id"].to_numpy(zero_copy_only=False)[order]
    syn, syn_paths = _fetch(plan, plan.draw(real_ids, seed, epoch), columns, source["name"])
    for lo in range(0, len(order), CHUNK_ROWS):
        part = slice(lo, lo + CHUNK_ROWS)
        batch = {c: syn[c][part] for c in columns} | {"path": syn_paths[part]}
        # Draws per pair: a synthetic image drawn twice in an epoch is augmented twice, differently.
        out = decode_batch(batch, source, augment, keep_id=keep_id, with_depth=with_depth, rng_key=(seed, epoch, 0),
                           rng_ids=real_ids[part])
        take = order[part]
        batch = {"id": real_ids[part], "image": real["image"].take(take).to_numpy(zero_copy_only=False),
                 "path": real_paths[take]}
        out["target_image"] = decode_batch(batch, target, augment, keep_id=False, with_depth=False,
                                           rng_key=(seed, epoch, 1))["image"]
        if keep_id:
            out["target_id"] = real_ids[part]
        yield out


def _fetch(plan: PairPlan, partners: np.ndarray, columns: list[str], name: str) -> tuple[dict, np.ndarray]:
    """The synthetic rows `partners` (indices into plan.synthetic_ids), read from the row groups holding
    them; as columns of object arrays in `partners` order, and each row's shard path."""
    need, inverse = np.unique(partners, return_inverse=True)
    found = {c: np.empty(len(need), object) for c in columns}
    paths = np.empty(len(need), object)
    shard_of = plan.synthetic_shard[need]
    for shard in np.unique(shard_of):
        mine = np.flatnonzero(shard_of == shard)
        path = plan.synthetic_paths[shard]
        try:
            file = pq.ParquetFile(path)
            row_of = {v: i for i, v in enumerate(file.read(columns=["id"]).column("id").to_pylist())}
        except (OSError, pa.ArrowException) as e:
            raise DatasetError(f"dataset '{name}', shard {path}: unreadable Parquet ({e})") from None
        wanted = plan.synthetic_ids[need[mine]]
        missing = [i for i in wanted if i not in row_of]
        if missing:
            raise DatasetError(f"dataset '{name}', shard {path}: no row with id {missing[0]} "
                               "(the dataset changed after the run was planned)")
        rows = np.asarray([row_of[i] for i in wanted])
        sizes = np.asarray([file.metadata.row_group(g).num_rows for g in range(file.num_row_groups)])
        first = np.cumsum(sizes) - sizes
        groups = np.searchsorted(first, rows, side="right") - 1
        read = np.unique(groups)  # only the row groups holding wanted rows
        table = file.read_row_groups(read.tolist(), columns=columns)
        at = (np.cumsum(sizes[read]) - sizes[read])[np.searchsorted(read, groups)] + rows - first[groups]
        taken = table.take(at)
        for c in columns:
            found[c][mine] = taken[c].to_numpy(zero_copy_only=False)
        paths[mine] = path
    return {c: v[inverse] for c, v in found.items()}, paths[inverse]
