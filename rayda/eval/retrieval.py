"""Cross-domain retrieval (seed 001, section 5.4): how well a segmenter's embedding mixes the two domains.

A pool X of N_src source and N_tgt target images and two disjoint query sets Q_S, Q_T are described by the
average-pooled embedding of the segmenter (the encoder's last feature map). Each query retrieves its k
nearest pool items by cosine similarity. |A_k| is the mean number of target items among a source query's
k nearest, |B_k| the mean number of source items among a target query's. mAP treats the pool items of
the other domain as the relevant ones. Higher is better aligned.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

DEFAULT_KS = (1, 5, 10, 20, 50, 100)


def cross_domain_retrieval(pool: np.ndarray, pool_is_target: np.ndarray, queries: np.ndarray,
                           query_is_target: np.ndarray, ks=DEFAULT_KS) -> dict:
    """Features (rows) of the pool and queries, with their domains -> |A_k|, |B_k| and mAP per direction."""
    pool_is_target, query_is_target = np.asarray(pool_is_target, bool), np.asarray(query_is_target, bool)
    if pool_is_target.all() or not pool_is_target.any():
        raise ValueError("cross-domain retrieval needs pool items of both domains")
    ks = sorted(k for k in ks if k <= len(pool))
    p = torch.nn.functional.normalize(torch.as_tensor(pool, dtype=torch.float64), dim=1)
    q = torch.nn.functional.normalize(torch.as_tensor(queries, dtype=torch.float64), dim=1)
    order = torch.argsort(q @ p.T, dim=1, descending=True, stable=True).numpy()  # [Q, N] pool indices
    other = pool_is_target[order] != query_is_target[:, None]  # is the i-th retrieved item cross-domain
    hits = np.cumsum(other, axis=1)
    ranks = np.arange(1, other.shape[1] + 1)
    ap = (hits / ranks * other).sum(axis=1) / other.sum(axis=1)  # average precision per query
    out = {"k": ks, "num_pool": [int((~pool_is_target).sum()), int(pool_is_target.sum())],
           "num_queries": [int((~query_is_target).sum()), int(query_is_target.sum())]}
    for name, queries_of in (("A", ~query_is_target), ("B", query_is_target)):  # A: source queries
        if queries_of.any():
            out[f"{name}_k"] = [float(hits[queries_of, k - 1].mean()) for k in ks]
            out[f"map_{'source_to_target' if name == 'A' else 'target_to_source'}"] = float(ap[queries_of].mean())
    return out


class EmbeddingFeatures:
    """Actor: images -> the segmenter's average-pooled embedding."""

    def __init__(self, checkpoint: str, use_gpu: bool):
        from rayda.train.checkpoint import load_segmenter

        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.net, _ = load_segmenter(checkpoint, self.device)
        self.net.eval()

    @torch.inference_mode()
    def __call__(self, batch: dict) -> dict:
        from rayda.data import to_network_input

        feats = [self.net.encode(to_network_input(torch.as_tensor(np.array(x), device=self.device)[None]))
                 .mean(dim=(2, 3))[0].float().cpu().numpy() for x in batch["image"]]
        return {"set": batch["set"], "id": batch["id"], "feature": np.stack(feats)}


def embeddings(checkpoint: str, sets: list[tuple], use_gpu: bool) -> list[dict[str, np.ndarray]]:
    """{id: embedding} of each (DatasetInfo, ids) set, on one actor pool."""
    import ray

    from rayda.data import tagged_images

    ds = tagged_images(sets).map_batches(
        EmbeddingFeatures, fn_constructor_kwargs={"checkpoint": checkpoint, "use_gpu": use_gpu}, batch_size=8,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=2), num_gpus=1 if use_gpu else 0,
        batch_format="numpy")
    out = [{} for _ in sets]
    for b in ds.iter_batches(batch_format="numpy", batch_size=None):
        for k, i, f in zip(b["set"], b["id"], b["feature"]):
            out[int(k)][str(i)] = f
    return out


def split_ids(info, pool: int, queries: int, seed: int) -> tuple[list[str], list[str]]:
    """Disjoint pool and query ids drawn from one dataset."""
    from rayda.data.pipeline import dataset_ids

    if pool + queries > info.num_rows:
        raise ValueError(f"dataset '{info.name}' has {info.num_rows} images; retrieval needs {pool} pool + "
                         f"{queries} query images, disjoint: lower --pool/--queries")
    chosen = np.random.default_rng(seed).choice(dataset_ids(info), pool + queries, replace=False).tolist()
    return sorted(chosen[queries:]), sorted(chosen[:queries])


def retrieval(checkpoints: dict[str, str], source, target, out=None, *, pool: int = 200, queries: int = 100,
              ks=DEFAULT_KS, seed: int = 0, use_gpu: bool = False) -> dict:
    """Cross-domain retrieval of each named segmenter checkpoint on the same pool and queries; writes
    retrieval.json, retrieval.md and retrieval.png (|A_k| and |B_k| against k) to out."""
    from rayda.data import read_info
    from rayda.train.checkpoint import read_meta

    for path in checkpoints.values():
        read_meta(path)  # a bad path fails before any data is read
    infos = {"source": read_info(source), "target": read_info(target)}
    split = {d: split_ids(info, pool, queries, seed) for d, info in infos.items()}
    results = {}
    for name, path in checkpoints.items():
        feats = dict(zip(infos, embeddings(str(Path(path).resolve()),
                                          [(info, sum(split[d], [])) for d, info in infos.items()], use_gpu)))
        pool_f = np.stack([feats[d][i] for d in ("source", "target") for i in split[d][0]])
        query_f = np.stack([feats[d][i] for d in ("source", "target") for i in split[d][1]])
        is_target = lambda part: np.array([d == "target" for d in ("source", "target") for _ in split[d][part]])  # noqa: E731
        results[name] = cross_domain_retrieval(pool_f, is_target(0), query_f, is_target(1), ks)
    summary = {"source": infos["source"].name, "target": infos["target"].name, "pool_per_domain": pool,
               "queries_per_domain": queries, "seed": seed, "checkpoints": checkpoints, "results": results}
    if out is not None:
        write_retrieval_report(Path(out), summary)
    return summary


def write_retrieval_report(out: Path, summary: dict) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from rayda.report import write_markdown

    out.mkdir(parents=True, exist_ok=True)
    (out / "retrieval.json").write_text(json.dumps(summary, indent=1))
    results = summary["results"]
    ks = next(iter(results.values()))["k"]
    header = "| segmenter | mAP source→target | mAP target→source | " + " | ".join(
        f"\\|A_{k}\\| / \\|B_{k}\\|" for k in ks) + " |\n|---|---:|---:|" + "---:|" * len(ks) + "\n"
    rows = "\n".join(f"| {name} | {r['map_source_to_target']:.3f} | {r['map_target_to_source']:.3f} | " + " | ".join(
        f"{a:.2f} / {b:.2f}" for a, b in zip(r["A_k"], r["B_k"])) + " |" for name, r in results.items())
    write_markdown(out / "retrieval.md", f"Cross-domain retrieval, {summary['source']} ↔ {summary['target']}", [
        ("Setting", f"pool {summary['pool_per_domain']} + {summary['pool_per_domain']} images, "
                    f"{summary['queries_per_domain']} + {summary['queries_per_domain']} disjoint queries, "
                    f"seed {summary['seed']}; cosine kNN on the average-pooled embedding. |A_k|: target items among "
                    "a source query's k nearest; |B_k|: source items among a target query's."),
        ("Results", header + rows), ("Plot", "![retrieval](retrieval.png)")])
    fig = Figure(figsize=(9, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    for i, (key, title) in enumerate((("B_k", "target → source, |B_k|"), ("A_k", "source → target, |A_k|"))):
        ax = fig.add_subplot(1, 2, i + 1)
        for name, r in results.items():
            ax.plot(r["k"], r[key], marker="o", label=name)
        ax.set_xlabel("k")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "retrieval.png", format="png")
