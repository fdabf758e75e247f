"""The smart batch loader (seed 004): one Ray Data stream of (synthetic sample, real image) pairs.

Each real image is paired once per epoch: with one of its SP-Feat neighbours drawn in proportion to
the neighbour's weight (`pairs`), or with a uniformly drawn synthetic image (random pairing, the
paper's baseline). Draws are fixed by (seed, real id). The pair table is joined with both datasets'
rows (Ray Data hash joins), so a training worker streams one dataset; no two iterators in lockstep.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import ray

from rayda.data import Augment, DatasetError, DatasetInfo, read_dataset
from rayda.data.pipeline import _light, decode_batch
from rayda.pairing.pair import PAIRS_FILE, pair_seed, parallelism


def paired_dataset(source: DatasetInfo, target: DatasetInfo, augment: Augment, seed: int, rows: int, *,
                   pairs: str | Path | None = None, with_depth: bool = False) -> ray.data.Dataset:
    """At least `rows` samples (whole epochs over the real images): image, label[, depth] of the synthetic
    side and target_image of the real side, decoded and augmented (uint8)."""
    if not source.has_labels:
        raise DatasetError(f"dataset '{source.name}' has no labels; the synthetic side must be labeled")
    if target.num_rows == 0 or source.num_rows == 0:
        raise DatasetError(f"empty dataset: '{source.name}' has {source.num_rows} rows, '{target.name}' {target.num_rows}")
    epochs = max(1, math.ceil(rows / target.num_rows))
    draws = _neighbour_draws(pairs, source, target, seed, epochs) if pairs else _random_draws(source, target, seed, epochs)
    columns = ["id", "image", "label"] + (["depth"] if with_depth else [])
    syn = read_dataset(source, columns=columns).rename_columns({"id": "synthetic_id"})
    real = read_dataset(target, columns=["id", "image"]).rename_columns(
        {"id": "real_id", "image": "target_image", "path": "target_path"})
    p = parallelism()
    joined = draws.join(syn, "inner", p, on=("synthetic_id",)).join(real, "inner", p, on=("real_id",))
    return joined.map_batches(_decode_pairs, batch_size=32, batch_format="numpy", fn_kwargs=dict(
        source=_light(source), target=_light(target), augment=augment, with_depth=with_depth))


def _neighbour_draws(pairs: str | Path, source: DatasetInfo, target: DatasetInfo, seed: int, epochs: int):
    pairs = Path(pairs)
    if not (pairs / PAIRS_FILE).is_file():
        raise DatasetError(f"{pairs}: no {PAIRS_FILE}; make it with `rayda pair`")
    summary = json.loads((pairs / PAIRS_FILE).read_text())
    for side, info in (("synthetic", source), ("real", target)):
        if summary[f"{side}_name"] != info.name or summary[f"num_{side}"] != info.num_rows:
            raise DatasetError(f"{pairs} pairs {side} dataset '{summary[f'{side}_name']}' "
                               f"({summary[f'num_{side}']} rows), but this run's is '{info.name}' ({info.num_rows} rows)")
    return ray.data.read_parquet(str(pairs / "pairs")).select_columns(["real_id", "synthetic_id", "weight"]) \
        .groupby("real_id", num_partitions=parallelism()) \
        .map_groups(_draw_neighbours, fn_kwargs={"seed": seed, "epochs": epochs}, batch_format="numpy")


def _draw_neighbours(group: dict, seed: int, epochs: int) -> dict:
    real_id = str(group["real_id"][0])
    weight = group["weight"].astype(np.float64)
    order = np.argsort(group["synthetic_id"])  # draws must not depend on the order rows arrived in
    picks = pair_seed(seed, real_id).choice(len(order), size=epochs, p=weight[order] / weight.sum())
    return {"real_id": np.full(epochs, real_id, object), "synthetic_id": group["synthetic_id"][order][picks]}


def _random_draws(source: DatasetInfo, target: DatasetInfo, seed: int, epochs: int):
    ids = np.sort(np.concatenate([b["id"] for b in read_dataset(source, columns=["id"]).iter_batches(
        batch_size=None, batch_format="numpy")]).astype(object))
    return read_dataset(target, columns=["id"]).map_batches(
        _draw_random, batch_format="numpy", fn_kwargs={"ids": ids, "seed": seed, "epochs": epochs})


def _draw_random(batch: dict, ids: np.ndarray, seed: int, epochs: int) -> dict:
    picks = [ids[pair_seed(seed, str(r)).integers(0, len(ids), epochs)] for r in batch["id"]]
    return {"real_id": np.repeat(batch["id"], epochs), "synthetic_id": np.concatenate(picks)}


def _decode_pairs(batch: dict, source: dict, target: dict, augment: Augment, with_depth: bool) -> dict:
    syn = {"id": batch["synthetic_id"], "image": batch["image"], "label": batch["label"], "path": batch["path"]}
    if with_depth:
        syn["depth"] = batch["depth"]
    out = decode_batch(syn, source, augment, keep_id=False, with_depth=with_depth)
    real = {"id": batch["real_id"], "image": batch["target_image"], "path": batch["target_path"]}
    out["target_image"] = decode_batch(real, target, augment, keep_id=False, with_depth=False)["image"]
    return out
