"""Exact K nearest neighbours by Euclidean distance: a GEMM shortlist, re-ranked exactly."""
from __future__ import annotations

import resource

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

CHUNK = 16384  # base rows per GEMM: bounds the [queries x chunk] distance block (64 MiB at 1024 queries)


def topk(queries: np.ndarray, base: np.ndarray, k: int, slack: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(indices int64 [Q,k], distances float32 [Q,k]) of each query's k nearest base rows, nearest first.

    float32 GEMM (|q|^2 + |b|^2 - 2 q.b) shortlists k + slack rows per query; those are re-ranked by
    their exact float64 distance, ties broken by the lower index, so the result equals a brute-force
    float64 search unless float32 rounding moves a true neighbour past `slack` others.
    """
    if not 1 <= k <= len(base):
        raise ValueError(f"k = {k} must lie in 1..{len(base)} (the number of base rows)")
    q = torch.from_numpy(np.ascontiguousarray(queries, np.float32))
    b_all = torch.from_numpy(np.ascontiguousarray(base, np.float32))
    keep = min(k + slack, len(base))
    best_d = torch.empty((len(q), 0))
    best_i = torch.empty((len(q), 0), dtype=torch.int64)
    qn = (q * q).sum(1, keepdim=True)
    for start in range(0, len(base), CHUNK):
        b = b_all[start:start + CHUNK]
        d2 = torch.addmm(qn + (b * b).sum(1)[None], q, b.T, alpha=-2.0)
        vals, idx = torch.topk(d2, min(keep, len(b)), dim=1, largest=False, sorted=False)
        best_d, order = torch.topk(torch.cat([best_d, vals], 1), min(keep, best_d.shape[1] + vals.shape[1]),
                                   dim=1, largest=False, sorted=False)
        best_i = torch.gather(torch.cat([best_i, idx + start], 1), 1, order)
    # Exact re-rank of the shortlist, in query blocks that stay in cache.
    exact = torch.empty(best_i.shape, dtype=torch.float64)
    for s in range(0, len(q), 256):
        shortlist = b_all[best_i[s:s + 256]].double()
        exact[s:s + 256] = (shortlist - q[s:s + 256, None].double()).square_().sum(-1).sqrt_()
    cand, exact = best_i.numpy(), exact.numpy()
    order = np.lexsort((cand, exact), axis=-1)[:, :k]
    return np.take_along_axis(cand, order, 1), np.take_along_axis(exact, order, 1).astype(np.float32)


def read_features(paths: list[str]) -> tuple[list[str], np.ndarray]:
    """(ids, float32 [N, D]) from SP-Feat Parquet files, in the order given."""
    table = pa.concat_tables(pq.read_table(p, columns=["id", "feat"]) for p in paths)
    return table.column("id").to_pylist(), feature_matrix(table).copy()  # writable, for torch


def feature_matrix(table: pa.Table) -> np.ndarray:
    """The fixed-size-list `feat` column as float32 [N, D], without a per-row copy."""
    feat = table.column("feat").combine_chunks()
    return np.asarray(feat.flatten(), np.float32).reshape(len(table), feat.type.list_size)


def as_matrix(column) -> np.ndarray:
    """A batch's feature column as float32 [N, D]: Ray hands fixed-size lists over as an object array of rows."""
    column = np.asarray(column)
    return np.stack(column).astype(np.float32) if column.dtype == object else column.astype(np.float32)


class TopKActor:
    """Holds one shard of the synthetic features; query batches -> their top-K within the shard, merged with
    the best found in earlier shards (`cand`/`dist` columns, when present). Indices are global."""

    def __init__(self, paths: list[str], offset: int, k: int):
        _, self.base = read_features(paths)
        self.offset, self.k = offset, min(k, len(self.base))

    def __call__(self, batch: dict) -> dict:
        idx, dist = topk(as_matrix(batch["feat"]), self.base, self.k)
        idx += self.offset
        if "cand" in batch:
            idx, dist = np.concatenate([batch["cand"], idx], 1), np.concatenate([batch["dist"], dist], 1)
            order = np.lexsort((idx, dist), axis=-1)[:, :batch["cand"].shape[1]]
            idx, dist = np.take_along_axis(idx, order, 1), np.take_along_axis(dist, order, 1)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
        if "peak_mb" in batch:
            peak_mb = np.maximum(batch["peak_mb"], peak_mb)
        return {"id": batch["id"], "feat": batch["feat"], "cand": idx, "dist": dist,
                "peak_mb": np.broadcast_to(np.float32(peak_mb), (len(idx),)).copy()}
