"""Faults on a real Ray: a training worker killed by PID from outside, and the driver killed and started
again. Each run ends bit for bit where an uninterrupted run of the same seed ends (CPU, 2-worker DDP), for
source-only and for every adversarial method: the data streams are functions of (seed, worker, position)
and the RNGs of (seed, rank, step)."""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

from rayda.config import validate
from rayda.train.run import train

CHECKPOINT_EVERY = 4


def _raw(simworld, storage: Path, name: str) -> dict:
    return {
        "name": name, "storage_path": str(storage),
        "data": {"source": str(simworld["synthetic"].path), "crop": [32, 64], "batch_size": 2},
        "model": {"arch": "deeplabv3plus_mobilenetv2", "size": "cpu"},
        "method": {"name": "source_only", "optimizer": "adam", "lr": 1e-3},
        "train": {"steps": 12, "report_every": 2, "checkpoint_every": CHECKPOINT_EVERY, "seed": 7},
        "scaling": {"num_workers": 2, "cpus_per_worker": 1, "max_failures": 1},
    }


def _final(run_dir: Path, step: int = 12) -> dict:
    return torch.load(run_dir / f"checkpoint_{step:08d}" / "state.pt", map_location="cpu", weights_only=True)


def _assert_same(a, b, where="state"):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def _assert_same_run(state: dict, reference: dict) -> None:
    """Same weights, optimizer and scheduler states, and the same losses at every report."""
    _assert_same(state["method_state"], reference["method_state"])
    def losses(s):
        return [{k: v for k, v in h.items() if k == "step" or k.startswith("loss/")} for h in s["history"]]
    assert losses(state) == losses(reference)


def _wait_for_checkpoint(run_dir: Path, step: int, timeout_s: float = 180) -> None:
    """Until Ray Train has registered the checkpoint of `step` (its snapshot names it)."""
    snapshot, deadline = run_dir / "checkpoint_manager_snapshot.json", time.monotonic() + timeout_s
    while not (snapshot.is_file() and f"checkpoint_{step:08d}" in snapshot.read_text()):
        assert time.monotonic() < deadline, f"no checkpoint of step {step} in {run_dir}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def reference(simworld, ray_session, tmp_path_factory):
    storage = tmp_path_factory.mktemp("faults")
    result = train(validate(_raw(simworld, storage, "uninterrupted")), evaluate_after=False)
    assert not any("resumed_from" in h for h in result.history)
    return _final(result.run_dir)


def _train_killing_a_worker(raw: dict, after_step: int):
    """Fit `raw`, SIGKILLing one training worker (by PID, from the state API) once the checkpoint of
    `after_step` is registered."""
    from ray.util.state import list_actors

    killed = []

    def kill_a_worker():
        _wait_for_checkpoint(Path(raw["storage_path"]) / raw["name"], after_step)
        alive = list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
        os.kill(alive[0].pid, signal.SIGKILL)
        killed.append(alive[0].pid)

    killer = threading.Thread(target=kill_a_worker, daemon=True)
    killer.start()
    result = train(validate(raw), evaluate_after=False)
    killer.join(timeout=10)
    assert killed, "the worker was not killed"
    # Restarted once (max_failures 1) from a checkpoint taken after the first one: at most one
    # checkpoint interval recomputed.
    (resumed,) = [h["resumed_from"] for h in result.history if "resumed_from" in h]
    assert resumed >= after_step
    return result


def test_a_killed_worker_restarts_from_the_latest_checkpoint_to_the_same_result(simworld, tmp_path, ray_clean,
                                                                                  reference):
    result = _train_killing_a_worker(_raw(simworld, tmp_path, "killed"), CHECKPOINT_EVERY)
    _assert_same_run(_final(result.run_dir), reference)


# Each adversarial method at CPU size on the paired stream (random pairs; UNIT on SP-Feat pairs).
ADVERSARIAL = {
    "cycleplus": {"model": {"arch": "deeplabv3plus_mobilenetv2", "size": "cpu"},
                  "method": {"name": "cycleplus", "pool_size": 4}},
    "unit_spfeat": {"model": {"size": "cpu"}, "method": {"name": "unit"}},
    "csa": {"model": {"size": "cpu"}, "method": {"name": "csa"}},  # stage 2 from step 3: resumed across it
    "lsd": {"model": {"arch": "fcn8s_vgg16", "size": "cpu"}, "method": {"name": "lsd", "fc_lr": 1e-3}},
    "gio_ada": {"model": {"arch": "deeplabv3plus_mobilenetv2", "size": "cpu"}, "method": {"name": "gio_ada"}},
}


@pytest.mark.parametrize("variant", sorted(ADVERSARIAL))
def test_an_adversarial_run_with_a_killed_worker_continues_identically(variant, simworld, simworld_pairs, tmp_path,
                                                                        ray_clean):
    data = {"source": str(simworld["synthetic"].path), "target": str(simworld["real_val"].path),
            "crop": [32, 64], "batch_size": 2, "shuffle_buffer": 0}
    if variant == "unit_spfeat":
        data.update(pairing="spfeat", pairs=str(simworld_pairs))
    raw = {"storage_path": str(tmp_path), "data": data, **ADVERSARIAL[variant],
           "train": {"steps": 6, "report_every": 2, "checkpoint_every": 2, "seed": 3},
           "scaling": {"num_workers": 2, "cpus_per_worker": 1, "max_failures": 1}}
    reference = train(validate({**raw, "name": "uninterrupted"}), evaluate_after=False)
    killed = _train_killing_a_worker({**raw, "name": "killed"}, after_step=2)
    _assert_same_run(_final(killed.run_dir, 6), _final(reference.run_dir, 6))


def test_a_killed_driver_resumes_when_run_again(simworld, tmp_path, ray_clean, reference):
    import ray

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(_raw(simworld, tmp_path, "driver")))
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    command = [sys.executable, "-m", "rayda.cli", "train", "--config", str(config)]
    driver = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_checkpoint(tmp_path / "driver", CHECKPOINT_EVERY)
    finally:
        driver.kill()  # SIGKILL: no clean-up; Ray ends the job's controller and workers
        driver.wait()
    assert not (tmp_path / "driver" / "checkpoint_00000012").exists(), "the driver finished before it was killed"
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    state = _final(tmp_path / "driver")
    (resumed,) = [h["resumed_from"] for h in state["history"] if "resumed_from" in h]
    assert resumed >= CHECKPOINT_EVERY
    _assert_same_run(state, reference)
