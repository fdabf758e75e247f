"""Pairing (seed 004): each real image's K nearest synthetic images by SP-Feat, balanced, as Ray Data stages.

The balancing rule. The seed gives every synthetic image a weight inversely proportional to the number of
real queries it is a neighbour of, and lets an over-used image give way to the next nearest neighbour.
rayda makes that exact and one-pass:
  1. Every query keeps a shortlist of its 2K nearest synthetic images (exact distances).
  2. use(s) = number of queries with s among their K nearest. The cap is `max_uses`, by default
     ceil(2 * K * R / N): twice the mean use if the R*K neighbour slots were spread evenly over N images.
  3. An image with use(s) > cap stays with the `cap` queries nearest to it (ties: lower real id) and gives
     way for the others: those queries drop it and take their next nearest shortlisted images that are
     not over-used, until they have K again (or the shortlist runs out, which pairs.json counts).
     Images at or under the cap take these replacements, so a few may end slightly above it
     (pairs.json reports the final maximum).
  4. weight(s) = 1 / (final number of lists holding s). The loader draws, for each real image, one of
     its neighbours with probability proportional to weight, so an image shared by many queries is not
     drawn more often overall than one that a single query holds.
Coverage = the fraction of synthetic images in at least one final list.
"""
from __future__ import annotations

import json
import math
import time
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
from ray.data.expressions import col

from rayda.data import DatasetError, prepare_output, read_info
from rayda.pairing.features import DEFAULT_LEVELS, feature_dataset, shared_classes
from rayda.pairing.knn import TopKActor

PAIRS_FILE = "pairs.json"
QUERY_BATCH = 1024


def pair(synthetic: str | Path, real: str | Path, out: str | Path, *, k: int = 15, levels=DEFAULT_LEVELS,
         real_labels_from: str | None = None, max_uses: int | None = None, max_rows_per_worker: int = 250_000,
         use_gpu: bool = False, num_grid: int = 4, overwrite: bool = False) -> dict:
    """SP-Feat of both datasets, then `pair_features`; writes pairs/, features/, pairs.json/.md/.png."""
    syn, rea = read_info(synthetic), read_info(real)
    _check_k(k, syn.num_rows, syn.name)
    shared = shared_classes(syn.classes, rea.classes)
    out = prepare_output(out, overwrite)
    t0 = time.perf_counter()
    for info, name, labels_from in ((syn, "synthetic", None), (rea, "real", real_labels_from)):
        print(f"SP-Feat of '{info.name}' ({info.num_rows} images{', predicted labels' if labels_from else ''})", flush=True)
        feature_dataset(info, shared, levels, labels_from=labels_from, use_gpu=use_gpu).write_parquet(
            str(out / "features" / name))
    t_feat = time.perf_counter() - t0
    summary = pair_features(out / "features" / "synthetic", out / "features" / "real", out, k=k,
                            max_uses=max_uses, max_rows_per_worker=max_rows_per_worker)
    summary.update(synthetic=str(syn.path), real=str(rea.path), synthetic_name=syn.name, real_name=rea.name, levels=list(levels), classes=shared,
                   real_labels="predicted by " + str(real_labels_from) if real_labels_from else "ground truth",
                   seconds={"features": round(t_feat, 2), **summary["seconds"]})
    (out / PAIRS_FILE).write_text(json.dumps(summary, indent=2))
    from rayda.pairing.report import write_pair_report

    write_pair_report(out, summary, syn, rea, num_grid)
    return summary


def _check_k(k: int, n: int, name: str) -> None:
    if k < 1:
        raise ValueError(f"--k must be at least 1, got {k}")
    if k > n:
        raise DatasetError(f"--k {k} is larger than the synthetic dataset '{name}' ({n} images)")


def pair_features(synthetic: str | Path, real: str | Path, out: str | Path, *, k: int = 15,
                  max_uses: int | None = None, max_rows_per_worker: int = 250_000) -> dict:
    """K nearest synthetic neighbours of every real image from SP-Feat Parquet directories, balanced.

    The synthetic matrix is split into shards of at most `max_rows_per_worker` rows (one shard when it
    fits); each KNN actor holds one shard. The real features pass through one shard's actor pool after
    the other, each pass merging its top-K into the running best. Writes `out/pairs/*.parquet` and
    returns the summary.
    """
    out = Path(out)
    files = sorted(str(p) for p in Path(synthetic).glob("*.parquet"))
    sizes = [pq.read_metadata(f).num_rows for f in files]
    n = sum(sizes)
    if n == 0:
        raise DatasetError(f"{synthetic}: no synthetic features (empty dataset?)")
    _check_k(k, n, str(synthetic))
    pool = min(2 * k, n)
    queries = ray.data.read_parquet(str(real))
    r = queries.count()
    if r == 0:
        raise DatasetError(f"{real}: no real features (empty dataset?)")
    cap = max_uses if max_uses is not None else math.ceil(2 * k * r / n)
    if cap < 1:
        raise ValueError(f"--max-uses must be at least 1, got {cap}")
    seconds = {}

    t0 = time.perf_counter()
    shards = _shards(files, sizes, max_rows_per_worker)
    # One shard at a time, so a pass's actors never hold the CPUs the next stage needs; each pass merges
    # its shard's answers into the running best, carried along with the queries.
    actors = parallelism()
    for i, (paths, offset, _) in enumerate(shards):
        if len(shards) > 1:
            print(f"KNN shard {i + 1}/{len(shards)}", flush=True)
        queries = queries.map_batches(TopKActor, fn_constructor_kwargs=dict(paths=paths, offset=offset, k=pool),
                                      compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors),
                                      batch_size=QUERY_BATCH, batch_format="numpy").materialize()
    cands = queries.drop_columns(["feat"]).rename_columns({"id": "real_id"}).materialize()
    peak_mb = float(cands.max("peak_mb"))
    seconds["knn"] = round(time.perf_counter() - t0, 2)

    t0 = time.perf_counter()
    use = _usage(cands, n, k)
    over = use > cap
    thresholds = _thresholds(cands, over, k, cap) if over.any() else {}
    final = cands.map_batches(_balance, fn_kwargs={"over": over, "thresholds": thresholds, "k": k},
                              batch_format="numpy").materialize()
    count = _usage(final, n, k, column="synthetic_index")
    seconds["balance"] = round(time.perf_counter() - t0, 2)

    t0 = time.perf_counter()
    ids = _synthetic_ids(files)
    final.map_batches(_attach_ids, fn_kwargs={"ids": ids, "count": count}, batch_format="numpy") \
        .drop_columns(["synthetic_index"]).write_parquet(str(out / "pairs"))
    seconds["write"] = round(time.perf_counter() - t0, 2)

    full_lists = final.filter(expr=col("rank") == k - 1).count()
    return {
        "k": k, "max_uses": cap, "num_real": r, "num_synthetic": n, "num_pairs": int(count.sum()),
        "coverage": float((count > 0).mean()),
        "coverage_before_balancing": float((use > 0).mean()),
        "overused_before": int(over.sum()), "max_use_before": int(use.max()), "max_use_after": int(count.max()),
        "replaced": int(final.sum("replaced") or 0), "short_lists": r - full_lists,
        "shards": len(shards), "rows_per_shard": max(rows for _, _, rows in shards),
        "feature_dim": int(pq.read_schema(files[0]).field("feat").type.list_size),
        "peak_worker_rss_mb": round(peak_mb, 1), "seconds": seconds,
    }


def parallelism() -> int:
    """Actors or shuffle partitions worth running at once: one per CPU of the cluster, at most 32."""
    return max(1, min(32, int(ray.cluster_resources().get("CPU", 1))))


def _shards(files: list[str], sizes: list[int], max_rows: int) -> list[tuple[list[str], int, int]]:
    """(paths, first global index, rows): consecutive feature files, at most max_rows per shard
    (a bigger file is a shard alone)."""
    shards, paths, rows, offset = [], [], 0, 0
    for f, s in zip(files, sizes):
        if paths and rows + s > max_rows:
            shards.append((paths, offset, rows))
            offset += rows
            paths, rows = [], 0
        paths.append(f)
        rows += s
    shards.append((paths, offset, rows))
    return shards


def _usage(ds: ray.data.Dataset, n: int, k: int, column: str = "cand") -> np.ndarray:
    """How many neighbour lists hold each synthetic image: per-block bincounts, summed."""
    def block_counts(batch: dict) -> dict:
        idx = batch[column][:, :k] if column == "cand" else batch[column]
        return {"counts": np.bincount(np.asarray(idx).ravel(), minlength=n)[None]}

    total = np.zeros(n, np.int64)
    for batch in ds.map_batches(block_counts, batch_size=None, batch_format="numpy").iter_batches(batch_size=None):
        total += batch["counts"].sum(0)
    return total


def _thresholds(cands: ray.data.Dataset, over: np.ndarray, k: int, cap: int) -> dict[int, tuple[float, str]]:
    """For each over-used synthetic image, the (distance, real id) of the last of the `cap` queries nearest
    to it. Each block keeps only its own `cap` nearest queries per over-used image (a map-side combine),
    so the driver merges at most blocks x over-used x cap entries."""
    parts = [b for b in cands.map_batches(_nearest_per_block, fn_kwargs={"over": over, "k": k, "cap": cap},
                                          batch_size=None, batch_format="numpy").iter_batches(batch_size=None)]
    merged = _nearest_per_block_entries({key: np.concatenate([p[key] for p in parts]) for key in parts[0]}, cap)
    return {int(c): (float(d), str(r)) for c, d, r, last in zip(merged["cand"], merged["dist"], merged["real_id"],
                                                               merged["last"]) if last}


def _nearest_per_block(batch: dict, over: np.ndarray, k: int, cap: int) -> dict:
    top = batch["cand"][:, :k]
    hit = over[top]
    entries = {"cand": top[hit], "dist": batch["dist"][:, :k][hit].astype(np.float64),
               "real_id": batch["real_id"][np.nonzero(hit)[0]].astype(str)}
    kept = _nearest_per_block_entries(entries, cap)
    kept.pop("last")
    return kept


def _nearest_per_block_entries(e: dict, cap: int) -> dict:
    """Keep each synthetic image's `cap` nearest (distance, real id) entries; `last` marks the cap-th."""
    order = np.lexsort((e["real_id"], e["dist"], e["cand"]))
    e = {key: v[order] for key, v in e.items()}
    first = np.r_[True, e["cand"][1:] != e["cand"][:-1]]
    start = np.maximum.accumulate(np.where(first, np.arange(len(first)), 0))
    rank = np.arange(len(first)) - start
    keep = rank < cap
    e = {key: v[keep] for key, v in e.items()}
    e["last"] = rank[keep] == cap - 1
    return e


def _balance(batch: dict, over: np.ndarray, thresholds: dict, k: int) -> dict:
    real_ids, syn, rank, dist, replaced = [], [], [], [], []
    for real_id, cand, d in zip(batch["real_id"], batch["cand"], batch["dist"]):
        chosen = []
        for j in range(k):  # the K nearest, minus over-used images this query is not among the nearest of
            c = int(cand[j])
            if not over[c] or (float(d[j]), str(real_id)) <= thresholds[c]:
                chosen.append(j)
        for j in range(k, len(cand)):  # refill from the shortlist, skipping over-used images
            if len(chosen) == k:
                break
            if not over[int(cand[j])]:
                chosen.append(j)
        for r, j in enumerate(chosen):
            real_ids.append(real_id)
            syn.append(cand[j])
            rank.append(r)
            dist.append(d[j])
            replaced.append(j >= k)
    return {"real_id": np.asarray(real_ids, object), "synthetic_index": np.asarray(syn, np.int64),
            "rank": np.asarray(rank, np.int32), "distance": np.asarray(dist, np.float32),
            "replaced": np.asarray(replaced, bool)}


def _synthetic_ids(files: list[str]) -> np.ndarray:
    return np.asarray(pa.concat_tables(pq.read_table(f, columns=["id"]) for f in files).column("id").to_pylist(), object)


def _attach_ids(batch: dict, ids: np.ndarray, count: np.ndarray) -> dict:
    s = batch["synthetic_index"]
    batch["synthetic_id"] = ids[s]
    batch["weight"] = (1.0 / count[s]).astype(np.float32)
    return batch


def pair_seed(seed: int, key: str) -> np.random.Generator:
    """A generator fixed by (seed, key): the same draws for a real image whatever block it lands in."""
    return np.random.default_rng([seed, zlib.crc32(key.encode())])
