"""A simulated multi-node cluster (`ray.cluster_utils.Cluster`): training spread over nodes, pairing on it,
and a spot preemption (a node drained with Ray's own drain API) survived with a just-in-time checkpoint.

The scenario lives in tests/multinode_scenario.py and runs in a subprocess: this pytest process may
already hold the session's in-process Ray, and a driver joins one cluster at a time.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import ray  # noqa: F401  (puts Ray's vendored psutil on sys.path)

import psutil  # noqa: E402  (from ray/thirdparty_files)

SCENARIO = Path(__file__).with_name("multinode_scenario.py")
TIMEOUT_S = 400


def _ours(temp_dir: str, seen: dict[int, psutil.Process]) -> list[psutil.Process]:
    """Live processes of the scenario: those seen as its descendants (psutil.Process checks that a PID
    was not reused since), and any whose command line names its Ray temp dir."""
    found = {}
    for pid, p in seen.items():
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                found[pid] = p
        except psutil.Error:  # gone meanwhile
            pass
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and temp_dir in " ".join(p.info["cmdline"] or ()):
                found[p.pid] = p
        except psutil.Error:
            pass
    found.pop(os.getpid(), None)
    return list(found.values())


def _end(procs: list[psutil.Process]) -> list[psutil.Process]:
    """Give `procs` a few seconds to exit on their own (workers follow their raylet), then SIGTERM and,
    after a grace period, SIGKILL them. Returns those that had to be ended."""
    _, procs = psutil.wait_procs(procs, timeout=5)
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=10)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=10)
    return procs


@pytest.mark.integration
def test_two_worker_training_spreads_over_nodes_and_pairing_runs_on_the_cluster(tmp_path):
    # Ray's temp dir (sessions, sockets, the ray_current_cluster file that Cluster writes) goes under a
    # short private directory: never /tmp/ray, where another local Ray could find this cluster.
    ray_tmp = tempfile.mkdtemp(prefix="rm", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_TMPDIR=ray_tmp, RAY_AUTH_MODE="disabled", RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.2",
               RAY_USAGE_STATS_ENABLED="0", RAY_TRAIN_PREEMPTION_POLL_INTERVAL_S="0.5")
    log = tmp_path / "scenario.log"
    t0 = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(SCENARIO), str(tmp_path)], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    seen = {proc.pid: psutil.Process(proc.pid)}
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while proc.poll() is None and time.monotonic() < deadline:
            try:  # remember what the scenario starts: workers retitle themselves `ray::...`
                seen.update((c.pid, c) for c in seen[proc.pid].children(recursive=True) if c.pid not in seen)
            except psutil.Error:
                pass
            time.sleep(1)
        timed_out = proc.poll() is None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # its own session: only what the scenario started
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        leftovers = _end(_ours(ray_tmp, seen))
        shutil.rmtree(ray_tmp, ignore_errors=True)
    seconds = time.monotonic() - t0
    tail = log.read_text()[-6000:]
    assert not timed_out, f"scenario still running after {TIMEOUT_S} s:\n{tail}"
    summary_file = tmp_path / "summary.json"
    assert summary_file.is_file(), f"exit {proc.returncode}, no summary:\n{tail}"
    s = json.loads(summary_file.read_text())
    assert s["ok"] and proc.returncode == 0, s.get("error") or tail
    assert not leftovers, f"processes left after Cluster.shutdown(): {[p.pid for p in leftovers]}"
    assert not s["placement_watch_errors"], s["placement_watch_errors"]
    print(f"multinode scenario: {seconds:.1f} s in all; phases {s['timings_s']}")

    head, workers = s["head_node"], s["worker_nodes"]
    assert s["cluster_resources"] == {"CPU": 4.0, "trainer_slot": 2.0, "rayda_node_a": 1.0, "rayda_node_b": 1.0}
    assert len(s["object_store_mb"]) == 3 and s["object_store_mb"][head] == 200
    assert all(s["object_store_mb"][n] == 250 for n in workers.values())

    # The training: both workers reported every time, and they ran on the two worker nodes, one each.
    t = s["train"]
    assert t["steps"] == [2, 4] and t["workers"] == [2, 2]
    assert "checkpoint_00000004" in t["checkpoints"]
    assert sorted(s["actors"]["RayTrainWorker"]) == sorted(workers.values())
    (pg,) = s["placement_groups"]  # seen from outside, while the run held it
    assert pg["strategy"] == "STRICT_SPREAD" and sorted(pg["nodes"]) == sorted(workers.values())
    assert all(b == {"CPU": 0.5, "trainer_slot": 1.0} for b in pg["bundles"])

    # Pairing: every real image has its K nearest (checked against a brute-force search of the
    # stored features), computed by actors on the worker nodes (the head has no CPU).
    p = s["pairing"]
    assert s["datasets"]["synthetic"][0] == 32 and s["datasets"]["real"][0] == 12
    assert p["num_real"] == p["real_ids"] == 12 and p["num_pairs"] == p["rows"] == 3 * 12
    assert p["mismatches"] == 0 and p["synthetic_ids_known"]
    knn_nodes = {n for name, nodes in s["actors"].items() if "TopKActor" in name for n in nodes}
    assert knn_nodes and knn_nodes <= set(workers.values())

    # Preemption: the node running the training was drained (reason PREEMPTION, 10 s deadline); the loop
    # wrote a checkpoint off its schedule (every 40 steps), Ray Train restarted the worker on the other
    # node at the deadline, and it resumed from that checkpoint and finished.
    pre = s["preemption"]
    assert pre["drain_exit"] == 0 and pre["node"] in workers.values()
    assert pre["restarted_on"] in workers.values() and pre["restarted_on"] != pre["node"]
    (resumed,) = pre["resumed_from"]
    assert 0 < resumed < 40 and f"checkpoint_{resumed:08d}" in pre["checkpoints"] and pre["last_step"] == 40
