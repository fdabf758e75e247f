"""A simulated 3-node Ray cluster on this machine (run as a script by tests/test_multinode.py).

`python tests/multinode_scenario.py OUT` starts a `ray.cluster_utils.Cluster`: a head with no CPUs and
two worker nodes, each with 2 CPUs, a bigger object store than Cluster's 150 MB default and one
`trainer_slot`. On it: simworld generation, SP-Feat pairing, a 2-worker training whose workers must
land on different nodes (STRICT_SPREAD, one trainer_slot each), and a training whose node is preempted.
Writes OUT/summary.json and shuts the cluster down whatever happens. Runs in its own process because pytest already holds an in-process Ray.
"""
from __future__ import annotations

import json
import sys
import threading
import time
import traceback
from pathlib import Path

MB = 2**20
WORKER_NODES = {"a": {"num_cpus": 2, "resources": {"trainer_slot": 1, "rayda_node_a": 1}},
                "b": {"num_cpus": 2, "resources": {"trainer_slot": 1, "rayda_node_b": 1}}}


def _actors_by_class() -> dict[str, list[str]]:
    """class name -> node ids of every actor the cluster has run (alive or dead), from the GCS."""
    import ray._private.state

    out: dict[str, list[str]] = {}
    for a in ray._private.state.actors().values():
        out.setdefault(a["ActorClassName"], []).append(a["Address"]["NodeID"])
    return out


class PlacementWatch(threading.Thread):
    """Polls the GCS placement-group table while training runs: the bundles asking for a trainer_slot
    and the nodes they were placed on (the table forgets the nodes once the group is removed)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.seen: dict[str, dict] = {}
        self.errors: list[str] = []

    def run(self):
        from ray.util import placement_group_table

        while not self.stop.is_set():
            try:
                for pg_id, pg in placement_group_table().items():
                    bundles = pg.get("bundles") or {}
                    nodes = pg.get("bundles_to_node_id") or {}
                    if pg.get("state") == "CREATED" and any("trainer_slot" in b for b in bundles.values()) and nodes:
                        self.seen[pg_id] = {"strategy": pg.get("strategy"),
                                            "bundles": [bundles[i] for i in sorted(bundles)],
                                            "nodes": [nodes[i] for i in sorted(nodes)]}
            except Exception as e:  # noqa: BLE001 - a watcher must not end the scenario
                self.errors.append(repr(e))
            self.stop.wait(0.2)


def _import_rayda() -> None:
    import rayda.pairing  # noqa: F401
    import rayda.simworld  # noqa: F401
    import rayda.train.run  # noqa: F401  (torch, timm, Ray Train: ~7 s of CPU here)


def scenario(out: Path, summary: dict) -> None:
    import numpy as np
    import pyarrow.parquet as pq
    import ray
    from ray.cluster_utils import Cluster

    summary["timings_s"] = {}
    t = time.monotonic()
    # The driver's imports overlap the nodes' start-up, which mostly waits on their processes.
    importer = threading.Thread(target=_import_rayda, daemon=True)
    importer.start()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": 200 * MB,
                                                            "include_dashboard": False})
    try:
        nodes = {name: cluster.add_node(object_store_memory=250 * MB, **args) for name, args in WORKER_NODES.items()}
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        importer.join()
        summary["timings_s"]["cluster"] = round(time.monotonic() - t, 1)
        summary["head_node"] = cluster.head_node.node_id
        summary["worker_nodes"] = {name: n.node_id for name, n in nodes.items()}
        summary["cluster_resources"] = {k: v for k, v in ray.cluster_resources().items()
                                        if k in ("CPU", "trainer_slot") or k.startswith("rayda_node")}
        summary["object_store_mb"] = {n["NodeID"]: round(n["Resources"].get("object_store_memory", 0) / MB)
                                      for n in ray.nodes() if n["Alive"]}

        # Data: rendered by Ray Data tasks, which can only run on the worker nodes (the head has no CPU).
        from rayda.simworld import generate

        t = time.monotonic()
        syn = generate("synthetic", 32, (64, 128), 0, out / "synthetic", rows_per_shard=8)
        real = generate("real", 12, (64, 128), 1, out / "real", rows_per_shard=4)
        summary["datasets"] = {"synthetic": [syn.num_rows, len(syn.shards)], "real": [real.num_rows, len(real.shards)]}
        summary["timings_s"]["generate"] = round(time.monotonic() - t, 1)

        # Pairing: SP-Feat tasks and a pool of KNN actors over the cluster's 4 CPUs. Balancing off
        # (max_uses above R*K), so the pairs must be the exact K nearest of the stored features.
        from rayda.pairing import pair

        t = time.monotonic()
        k = 3
        s = pair(syn.path, real.path, out / "pairs", k=k, max_uses=10_000, num_grid=0)
        pairs = pq.read_table(out / "pairs" / "pairs").to_pylist()
        feats = {name: pq.read_table(out / "pairs" / "features" / name).to_pydict() for name in ("synthetic", "real")}
        syn_feat = np.asarray(feats["synthetic"]["feat"], np.float64)
        syn_index = {sid: i for i, sid in enumerate(feats["synthetic"]["id"])}
        mismatches = 0
        for rid, q in zip(feats["real"]["id"], np.asarray(feats["real"]["feat"], np.float64)):
            brute = np.sort(np.linalg.norm(syn_feat - q, axis=1))[:k]
            mine = sorted((p for p in pairs if p["real_id"] == rid), key=lambda p: p["rank"])
            got = np.array([p["distance"] for p in mine])
            exact = np.array([np.linalg.norm(syn_feat[syn_index[p["synthetic_id"]]] - q) for p in mine])
            if [p["rank"] for p in mine] != list(range(k)) or not (
                    np.allclose(got, brute, atol=1e-4) and np.allclose(exact, got, atol=1e-4)):
                mismatches += 1
        summary["pairing"] = {"num_pairs": s["num_pairs"], "num_real": s["num_real"], "rows": len(pairs),
                              "real_ids": len({p["real_id"] for p in pairs}), "mismatches": mismatches,
                              "synthetic_ids_known": all(p["synthetic_id"] in syn_index for p in pairs)}
        summary["timings_s"]["pair"] = round(time.monotonic() - t, 1)

        # Training: 2 DDP workers, one per worker node (no data.val: evaluation is tested elsewhere).
        from rayda.config import validate
        from rayda.train.run import train

        cfg = validate({
            "name": "spread", "storage_path": str(out / "runs"),
            "data": {"source": str(syn.path), "crop": [32, 64], "batch_size": 2, "shuffle_buffer": 0},
            "model": {"size": "cpu"},
            "method": {"name": "source_only"},
            "train": {"steps": 4, "report_every": 2, "checkpoint_every": 4},
            "scaling": {"num_workers": 2, "cpus_per_worker": 0.5, "resources_per_worker": {"trainer_slot": 1},
                        "placement_strategy": "STRICT_SPREAD"},
        })
        t = time.monotonic()
        watch = PlacementWatch()
        watch.start()
        try:
            result = train(cfg)
        finally:
            watch.stop.set()
            watch.join(timeout=5)
        summary["timings_s"]["train"] = round(time.monotonic() - t, 1)
        summary["train"] = {"steps": [h["step"] for h in result.history],
                            "workers": [h["workers"] for h in result.history],
                            "checkpoints": sorted(p.name for p in result.run_dir.glob("checkpoint_*"))}
        summary["placement_groups"] = list(watch.seen.values())
        summary["placement_watch_errors"] = watch.errors
        summary["actors"] = _actors_by_class()
        preemption(cluster, out, syn, summary)
    finally:
        t = time.monotonic()
        try:
            ray.shutdown()
        finally:
            cluster.shutdown()
        summary["timings_s"]["shutdown"] = round(time.monotonic() - t, 1)


def _train_worker_node() -> str | None:
    import ray._private.state

    alive = [a for a in ray._private.state.actors().values()
             if a["ActorClassName"] == "RayTrainWorker" and a["State"] == "ALIVE"]
    return alive[0]["Address"]["NodeID"] if alive else None


def preemption(cluster, out: Path, syn, summary: dict) -> None:
    """Spot reclaim, the way the autoscaler signals it: Ray's own drain (reason PREEMPTION, with a deadline)
    of the node that runs the 1-worker training. The loop checkpoints at its next report; when the deadline
    passes Ray Train restarts the worker on the other node, which resumes from that checkpoint."""
    import subprocess

    from rayda.config import validate
    from rayda.train.run import train

    cfg = validate({
        "name": "preempted", "storage_path": str(out / "runs"),
        "data": {"source": str(syn.path), "crop": [32, 64], "batch_size": 2, "shuffle_buffer": 0},
        "model": {"size": "cpu"}, "method": {"name": "source_only"},
        "train": {"steps": 40, "report_every": 2, "checkpoint_every": 40},
        "scaling": {"num_workers": 1, "cpus_per_worker": 0.5, "resources_per_worker": {"trainer_slot": 1}},
    })
    drained: dict = {}

    def drain_when_training():
        deadline = time.monotonic() + 120
        while (node := _train_worker_node()) is None and time.monotonic() < deadline:
            time.sleep(0.2)
        drained["node"] = node
        drained["drain_exit"] = subprocess.run(
            [sys.executable, "-m", "ray.scripts.scripts", "drain-node", "--address", cluster.address,
             "--node-id", node, "--reason", "DRAIN_NODE_REASON_PREEMPTION", "--reason-message", "rayda test",
             "--deadline-remaining-seconds", "10"], capture_output=True, text=True).returncode
        while time.monotonic() < deadline:  # the restarted worker, elsewhere
            if (now := _train_worker_node()) not in (None, node):
                drained["restarted_on"] = now
                return
            time.sleep(0.2)

    t = time.monotonic()
    drainer = threading.Thread(target=drain_when_training, daemon=True)
    drainer.start()
    result = train(cfg)
    drainer.join(timeout=5)
    summary["timings_s"]["preemption"] = round(time.monotonic() - t, 1)
    summary["preemption"] = {**drained, "checkpoints": sorted(p.name for p in result.run_dir.glob("checkpoint_*")),
                             "resumed_from": [h["resumed_from"] for h in result.history if "resumed_from" in h],
                             "last_step": result.history[-1]["step"]}


def main() -> int:
    out = Path(sys.argv[1])
    summary: dict = {}
    try:
        scenario(out, summary)
        summary["ok"] = True
    except BaseException:  # noqa: BLE001 - the summary carries the failure to the test
        summary.update(ok=False, error=traceback.format_exc())
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
